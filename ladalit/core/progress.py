"""Terminal progress: rich bars with ETA for rounds / clients / candidate batches / generation,
a compact per-round summary table, the one-screen run header, and the switch that silences
transformers' per-load progress bars.

Three modes, picked at construction:
- a terminal: live rich bars, summaries as rich Tables printed above them;
- not a terminal (CI, a pipe, nohup, SLURM): no bars, no control codes; every `interval` seconds
  (30) one plain line per running task, `name: done/total, elapsed, eta`, and summaries as plain text;
- quiet: nothing at all.

    with Progress(quiet=cfg.quiet) as prog:
        rounds = prog.task("rounds", cfg.rounds)
        for t in ...:
            with prog.task("client1 batches", len(batches)) as bar:   # removed when done
                for b in batches: ...; bar.advance()
            prog.summary(results, t, channel)
            rounds.advance()
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.progress import Progress as RichProgress
from rich.table import Table

UP, DOWN = "client->server", "server->client"


def quiet_transformers(verbose: bool = False) -> None:
    """Silence transformers' per-load "Loading weights" / "Writing model shards" bars (about 20 per run)
    and peft's use of a deprecated transformers property (a FutureWarning per LoRA model), and
    huggingface_hub's "Retrying in 1s [Retry 1/5]" warnings before an unreachable hub's error (which the
    run reports as one line), unless `verbose`.
    The one place that decides it: `ladalit.run` calls it with the config's `verbose`."""
    import warnings

    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging
    if verbose:
        hf_logging.enable_progress_bar()
        hub_logging.set_verbosity_warning()
    else:
        hf_logging.disable_progress_bar()
        hub_logging.set_verbosity_error()
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def duration(seconds: float) -> str:
    """"42 s", "3 min 05 s", "1 h 02 min"."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def count(n: int) -> str:
    """A parameter count: 842.5K, 1.20M, 32.76B."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}" if unit != "K" else f"{n / size:.1f}{unit}"
    return str(n)


class Task:
    """One bar (a terminal) or one line every interval (elsewhere). A no-op when the display is off;
    as a context manager it is removed on exit."""

    def __init__(self, bars: RichProgress | None, name: str, total: int | None, lines: "Progress | None" = None):
        self.bars, self.lines = bars, lines
        self.id = bars.add_task(name, total=total) if bars is not None else None
        self.name, self.total, self.completed = name, total, 0.0
        self.started = lines.clock() if lines is not None else 0.0
        self.first: tuple[float, float] | None = None  # (time, completed) at the first step: the ETA's rate
        self.last: tuple[float, float] | None = None  # ... and at the latest one
        if lines is not None:
            lines.active.append(self)

    def advance(self, n: float = 1) -> None:
        self.completed += n
        if self.lines is not None:
            self.last = (self.lines.clock(), self.completed)
            self.first = self.first or self.last
        if self.bars is not None:
            self.bars.advance(self.id, n)

    def update(self, **fields) -> None:
        """rich's update: total=, completed=, description=."""
        self.total = fields.get("total", self.total)
        self.completed = fields.get("completed", self.completed)
        self.name = fields.get("description", self.name)
        if self.bars is not None:
            self.bars.update(self.id, **fields)

    def line(self, now: float) -> str:
        """`name: done/total, elapsed, eta`: the eta from the rate between the first step and the latest
        (set-up before the first does not count), or from the first step alone while there is only one,
        counted down from the latest step (so it does not grow while a long step runs). "?" before the
        first step, and once a running step has outlasted the estimate: the eta never reads 0 while work
        remains (a task with every step done reads 0)."""
        elapsed = now - self.started
        done = f"{self.completed:g}/{self.total}" if self.total else f"{self.completed:g}"
        eta = "?"
        if self.total and self.first is not None:
            (t1, c1), (t2, c2) = self.first, self.last
            rate = (c2 - c1) / (t2 - t1) if c2 > c1 and t2 > t1 else c1 / max(t1 - self.started, 1e-9)
            left = max(self.total - c2, 0) / rate - (now - t2) if rate > 0 else None
            if c2 >= self.total:
                eta = duration(0)
            elif left is not None and round(left) >= 1:
                eta = duration(left)
        return f"{self.name}: {done}, {duration(elapsed)}, eta {eta}"

    def done(self) -> None:
        if self.bars is not None and self.id in self.bars.task_ids:
            self.bars.remove_task(self.id)
        if self.lines is not None and self in self.lines.active:
            self.lines.active.remove(self)

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, *exc) -> None:
        self.done()


def summary_rows(results, round: int, channel=None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) for one round: accuracy per shots, selected samples, MB up / down.

    `results` is a `Results` (with the `Channel` for bytes) or a saved results dict.
    """
    if isinstance(results, dict):
        acc = results.get("accuracy", [])
        selected = {(s["round"], s["pair"]): s["selected"] for s in results.get("selected_per_round", [])}
        sent = {(c["round"], c["direction"], c["client"]): c["bytes"] for c in results.get("communication", [])}
    else:
        acc, selected = results.accuracy, results.selected_per_round()
        sent = channel.bytes_by() if channel is not None else {}
    acc = [r for r in acc if r["round"] == round]
    shots = sorted({r["shots"] for r in acc})
    cell = {(r["participant"], r["shots"]): r for r in acc}
    sel = defaultdict(int)
    for (t, pair), n in selected.items():
        if t == round:  # "client1<-server": what client1 learns from; "server<-client1": the server side
            sel[pair.split("<-")[0]] += n
    mb = defaultdict(float)
    for (t, d, c), nbytes in sent.items():
        if t == round:
            mb[(c, d)] += nbytes / 1e6
            mb[("server", d)] += nbytes / 1e6
    names = list(dict.fromkeys([r["participant"] for r in acc] + [p for p in sel] + [c for c, _ in mb]))
    names = [n for n in names if n != "server"] + (["server"] if "server" in names else [])
    head = ["participant"] + [f"{s}-shot acc lenient/strict" for s in shots] + ["selected", "MB up", "MB down"]
    rows = []
    for n in names:
        accs = [_lenient_strict(cell[(n, s)]) if (n, s) in cell else "-" for s in shots]
        rows.append([n] + accs + [str(sel.get(n, "-")), f"{mb[(n, UP)]:.3f}", f"{mb[(n, DOWN)]:.3f}"])
    return head, rows


def _lenient_strict(row: dict) -> str:
    strict = row.get("accuracy_strict")
    return f"{row['accuracy']:.3f}/" + ("-" if strict is None else f"{strict:.3f}")


def plain_table(title: str, head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]

    def fmt(r):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([title, fmt(head), *map(fmt, rows)])


class Progress:
    def __init__(self, quiet: bool = False, console: Console | None = None, interval: float = 30.0,
                 clock=time.monotonic):
        self.quiet = quiet
        self.console = console or Console()
        self.live = not quiet and self.console.is_terminal
        self.bars = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 console=self.console) if self.live else None
        # not a terminal: plain lines from a timer thread while inside `with`
        self.plain = not quiet and not self.live
        self.interval, self.clock = interval, clock
        self.active: list[Task] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Progress":
        if self.bars is not None:
            self.bars.start()
        if self.plain:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="ladalit-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bars is not None:
            self.bars.stop()
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def tick(self) -> None:
        """One plain line per running task (the timer thread calls it every `interval` seconds)."""
        now = self.clock()
        for task in list(self.active):
            print(f"[{time.strftime('%H:%M:%S')}] {task.line(now)}", file=self.console.file, flush=True)

    def task(self, name: str, total: int | None) -> Task:
        return Task(self.bars, name, total, self if self.plain else None)

    def summary(self, results, round: int, channel=None) -> None:
        """The round's table: a rich Table on a terminal, plain text elsewhere, nothing when quiet."""
        if self.quiet:
            return
        head, rows = summary_rows(results, round, channel)
        if not self.live:
            print(plain_table(f"round {round}", head, rows), file=self.console.file, flush=True)
            return
        table = Table(title=f"round {round}", title_justify="left")
        for i, h in enumerate(head):
            table.add_column(h, justify="left" if i == 0 else "right")
        for r in rows:
            table.add_row(*r)
        self.console.print(table)


# ----------------------------------------------------------------------------- the run header
def _params(participant) -> tuple[int, int]:
    """(all parameters, trainable ones) of a participant's model; LoRA adapters count as trainable."""
    total = trainable = 0
    for name, p in participant.model.named_parameters():
        total += p.numel()
        trainable += p.numel() if (p.requires_grad or "lora_" in name) else 0
    return total, trainable


def header(exp, run_dir, conf: str = "") -> str:
    """One screen: method, config, participants with parameter counts, data sizes, run dir, full config."""
    cfg, data = exp.cfg, exp.data
    d = cfg.data
    lines = [f"ladalit: {cfg.method}, {conf or 'defaults'}, seed {cfg.seed}, {cfg.rounds} rounds"]
    sizes = [len(c.train) for c in data.clients], [len(c.test) for c in data.clients]
    per = (f"{sizes[0][0]} train + {sizes[1][0]} test each" if len(set(sizes[0])) <= 1 and len(set(sizes[1])) <= 1
           else f"train {sizes[0]}, test {sizes[1]}")
    lines.append(f"data: {d.name}{f' ({d.path})' if d.path else ''}, {len(data.clients)} clients ({per}), "
                 f"public {len(data.public)}, {d.num_options} options, "
                 f"{'domain mixture (data.mixture)' if d.mixture.train else f'domain skew {d.domain_skew:g}'}")
    parts = {"server": exp.server, **exp.clients}
    width = max(len(n) for n in parts)
    for name, p in parts.items():
        m = (cfg.server if name == "server" else cfg.clients[name]).model
        what = m.name_or_path if m.source in ("hub", "zoo") else f"random {m.arch}"
        total, train = _params(p)
        lora = f", LoRA r={m.lora.r}: {count(train)} trainable" if m.lora.enabled else ""
        lines.append(f"  {name:<{width}}  {m.source}:{what} ({type(p.model.config).model_type}), "
                     f"{count(total)} params{lora}, {m.dtype}")
    f = cfg.fabric
    lines.append(f"fabric: {exp.fabric.device}, strategy {f.strategy}, precision {f.precision}; "
                 f"eval shots {list(cfg.eval.shots)}, W&B {cfg.tracking.wandb.mode}")
    lines.append(f"run dir: {run_dir}")
    lines.append(f"full config: {run_dir}/config.yaml")
    return "\n".join(lines)
