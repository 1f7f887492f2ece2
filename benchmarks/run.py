"""Run every benchmark (rows 1-8) and print one summary table: target, measured value, PASS/MISS.

    python -m benchmarks.run              # everything: 749-828 s on a shared 2-core CPU (2026-12-07)
    python -m benchmarks.run --quick      # tiny sizes, seconds per row (what tests/test_benchmarks.py runs)
    python -m benchmarks.run --only 4,6   # some rows

Rows (each is also a module with its own `python -m benchmarks.<module>`):

    1  MARD step vs TRL DPOTrainer step, tokens/s         benchmarks.mard_vs_trl
    2  reference passes and reference weight memory       benchmarks.reference_cost
    3  filter training + scoring time / round time,      benchmarks.filter_overhead
       at a Qwen3-0.6B client's size (demo world: info)
    4  select_prototypes (FAISS, 1 and 2 threads) vs the  benchmarks.prototypes_vs_sklearn
       torch path vs scikit-learn KMeans
    5  round wall time vs K clients and vs |D_p|          benchmarks.scaling_k
    6  batched vs one-by-one generation, tokens/s         benchmarks.generation
    7  MB per round per client: LaDa, FedKD, FedMKT       benchmarks.communication
    8  FSDP2 sharded loading: RSS over 2 processes        benchmarks.sharded_loading

Every comparison is a ratio of two measurements taken side by side in one process
(repetitions interleaved, medians reported). Everything runs on one thread (row 4 adds
FAISS on 2), and the ratios use process CPU time (`time.process_time`), which on a machine shared with
other jobs does not count the time the process waits for a core; wall times are
reported next to them.
Results: benchmarks/results/<module>.json and benchmarks/results/summary.json
(`--quick`: benchmarks/results/quick/ unless `--out` is given).

This file also holds the helpers the benchmark modules share: threads, configs with
K clients, and running a method in-process with per-round wall times.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

import ladalit.components  # noqa: F401  registers data sets, model sources, class-path checks
from benchmarks import common

QUICK_RESULTS = Path(__file__).resolve().parent / "results" / "quick"
# Row 1 belongs to benchmarks/mard_vs_trl.py, which has no target of its own: this is the one used here.
ROW1_TARGET = 1.2  # issue "Performance", row 1: ladalit MARD tokens/s >= 1.2 x TRL DPOTrainer tokens/s


# ----------------------------------------------------------------------------- shared helpers
def quiet_libraries() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def setup(threads: int, out: str | None, quick: bool) -> None:
    """Threads for torch (1 by default: on a shared 2-core machine more threads measure contention),
    where JSON results go, and quieter libraries."""
    if threads:
        torch.set_num_threads(threads)
    if out:
        common.RESULTS = Path(out)
    elif quick:
        common.RESULTS = QUICK_RESULTS
    quiet_libraries()


def add_common_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--quick", action="store_true", help="tiny sizes (for tests)")
    ap.add_argument("--out", default=None, help="results directory (default benchmarks/results[/quick])")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")


def median(xs) -> float:
    return float(statistics.median(xs))


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n}"


def demo_world(quick: bool = False) -> tuple[str | None, str]:
    """("demo.yaml", note) if conf/demo.yaml exists and every zoo member it names is cached; else (None, why).
    `quick` (tiny sizes, seconds per row): always smoke, whatever this machine has cached."""
    if quick:
        return None, "--quick: measured on conf/smoke.yaml"
    from ladalit.core.config import CONF_DIR, load_config
    path = CONF_DIR / "demo.yaml"
    if not path.is_file():
        return None, "conf/demo.yaml does not exist: measured on conf/smoke.yaml"
    try:
        cfg = load_config(["conf=demo.yaml"])
    except Exception as err:  # noqa: BLE001 - a broken demo config falls back to smoke
        return None, f"conf/demo.yaml does not load ({err}): measured on conf/smoke.yaml"
    from ladalit.demo import zoo
    missing = []
    for pcfg in [cfg.server, *cfg.clients.values()]:
        if pcfg.model.source == "zoo":
            member = zoo.ZOO.get(pcfg.model.name_or_path)
            shipped = member is not None and zoo.shipped_member(member) is not None
            if not shipped and (member is None or not (zoo.member_dir(member) / "zoo.json").exists()):
                missing.append(pcfg.model.name_or_path)
    if missing:
        return None, f"zoo members not cached ({', '.join(missing)}): measured on conf/smoke.yaml"
    return "demo.yaml", "demo world (conf/demo.yaml, cached zoo)"


def k_client_conf(k: int, path: Path, base: str = "smoke.yaml") -> Path:
    """A copy of conf/<base> whose clients are `k` copies of its first client (client1 ... clientK)."""
    from omegaconf import OmegaConf

    from ladalit.core.config import CONF_DIR
    cfg = OmegaConf.load(CONF_DIR / base)
    first = OmegaConf.to_container(next(iter(cfg.clients.values())))
    cfg.clients = {f"client{i + 1}": first for i in range(k)}
    OmegaConf.save(cfg, path)
    return path


def load(conf: str | Path, overrides: list[str] = ()):
    from ladalit.core.config import load_config
    return load_config([f"conf={conf}", "quiet=true", "tracking.wandb.mode=disabled", *overrides])


@dataclass
class MethodRun:
    cfg: object
    exp: object
    channel: object
    results: object
    extra: dict
    out: dict  # what Results.save writes to results.json
    round_s: list[float] = field(default_factory=list)  # wall time of each round (LaDa)
    eval_s: list[float] = field(default_factory=list)  # evaluation wall time inside each round (LaDa)
    round_cpu_s: list[float] = field(default_factory=list)  # process CPU time of each round (LaDa)
    eval_cpu_s: list[float] = field(default_factory=list)  # evaluation CPU time inside each round (LaDa)
    build_s: float = 0.0
    total_s: float = 0.0


def run_method(cfg, keep_payloads: bool = False, data=None, on_round=None) -> MethodRun:
    """Run `cfg.method` in-process, as `ladalit.run.execute` does, minus tracking and plots.

    `data` (a FederatedData) replaces the split `build_experiment` would draw (a fixed
    public set across configurations). LaDa: the wall time of each round (from the
    loop's `on_round_end`) and the evaluation time inside it; `on_round(t)` is called
    at each round end, after the time is taken.
    """
    from ladalit import registry
    from ladalit.core import experiment, rounds
    from ladalit.core.channel import Channel
    from ladalit.core.results import Results

    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if data is not None:
            orig_load = experiment.load_data
            experiment.load_data = lambda _cfg: data
            stack.callback(setattr, experiment, "load_data", orig_load)
        exp = experiment.build_experiment(cfg)
    build_s = time.perf_counter() - t0
    channel, results = Channel(keep_payloads=keep_payloads), Results()
    rec = MethodRun(cfg, exp, channel, results, {}, {}, build_s=build_s)
    roles = registry.roles(cfg.method)
    eval_acc = [0.0, 0.0]
    orig_eval = rounds.evaluate_all

    def timed_eval(*a, **k):
        s, c = time.perf_counter(), time.process_time()
        try:
            return orig_eval(*a, **k)
        finally:
            eval_acc[0] += time.perf_counter() - s
            eval_acc[1] += time.process_time() - c

    marks = [(time.perf_counter(), time.process_time())]

    def on_round_end(t, _snapshot):
        now, cpu = time.perf_counter(), time.process_time()
        rec.round_s.append(now - marks[-1][0])
        rec.round_cpu_s.append(cpu - marks[-1][1])
        rec.eval_s.append(eval_acc[0])
        rec.eval_cpu_s.append(eval_acc[1])
        eval_acc[:] = [0.0, 0.0]
        if on_round is not None:
            on_round(t)
        marks.append((time.perf_counter(), time.process_time()))  # the callback's own time is not in the next round

    rounds.evaluate_all = timed_eval  # the round loop's evaluation (ladalit.core.rounds)
    try:
        rec.extra = rounds.run_in_process(roles, exp, channel, results,
                                          on_round_end=on_round_end if cfg.method == "lada" else None)
    finally:
        rounds.evaluate_all = orig_eval
    rec.total_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        rec.out = results.save(Path(d), cfg, channel, extra=rec.extra)
    return rec


def summary_row(row: int, name: str, target: str, measured: str, passed: bool | None, note: str = "") -> dict:
    """One line of the summary table (passed None: no target could be checked)."""
    return {"row": row, "name": name, "target": target, "measured": measured,
            "status": "PASS" if passed else ("MISS" if passed is False else "n/a"), "note": note}


# ----------------------------------------------------------------------------- the rows
def _row1(quick: bool, threads: int) -> dict:
    try:
        mod = importlib.import_module("benchmarks.mard_vs_trl")
    except ImportError as err:
        return summary_row(1, "MARD vs TRL DPO step", f"tokens/s ratio >= {ROW1_TARGET}", "module missing", None,
                           str(err))
    argv = ["--threads", str(threads or 0)]
    if quick:
        argv += ["--steps", "1", "--warmup", "0", "--pairs", "2", "--hidden", "32", "--layers", "1", "--vocab", "128",
                 "--r", "2", "--prompt-min", "4", "--prompt-max", "8", "--resp-min", "4", "--resp-max", "8",
                 "--no-ablation"]
    res = mod.main(argv)
    ratio = res["ratio_tokens_per_s"]
    steps = len(res["ladalit"]["time"]) - res["config"]["warmup"]
    mem = {s: res[s]["peak_saved_bytes"] / 2**20 for s in ("ladalit", "trl")}
    mem_note = f"; peak saved for backward {mem['ladalit']:.1f} vs {mem['trl']:.1f} MiB"
    if res["ladalit"].get("peak_cuda_bytes") is not None:
        mem_note += (f", CUDA peak {res['ladalit']['peak_cuda_bytes'] / 2**20:.0f} vs "
                     f"{res['trl']['peak_cuda_bytes'] / 2**20:.0f} MiB")
    return summary_row(1, "MARD vs TRL DPO step", f"ladalit/TRL tokens/s >= {ROW1_TARGET:g}",
                       f"{ratio:.2f}x ({res['ladalit']['tokens_per_s']:.0f} vs {res['trl']['tokens_per_s']:.0f} tok/s)"
                       + mem_note, ratio >= ROW1_TARGET,
                       f"{steps} timed steps, interleaved; target from the issue (1.2); memory: what autograd keeps "
                       "for backward per step (activations, logits), the weights and optimizer are the same")


ROWS = {
    1: ("benchmarks.mard_vs_trl", None),
    2: ("benchmarks.reference_cost", "main"),
    3: ("benchmarks.filter_overhead", "main"),
    4: ("benchmarks.prototypes_vs_sklearn", "main"),
    5: ("benchmarks.scaling_k", "main"),
    6: ("benchmarks.generation", "main"),
    7: ("benchmarks.communication", "main"),
    8: ("benchmarks.sharded_loading", "main"),
}


def run_row(row: int, quick: bool, threads: int) -> tuple[dict, float]:
    t0 = time.perf_counter()
    try:
        if row == 1:
            s = _row1(quick, threads)
        else:
            mod = importlib.import_module(ROWS[row][0])
            argv = ["--threads", str(threads), "--out", str(common.RESULTS)] + (["--quick"] if quick else [])
            s = mod.main(argv)["summary"]
    except Exception as err:  # noqa: BLE001 - a crashing row stays in the table, marked
        traceback.print_exc()
        s = summary_row(row, ROWS[row][0].split(".")[-1], "-", f"error: {type(err).__name__}: {err}"[:120], False)
    return s, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(ap)
    ap.add_argument("--only", default="", help="comma-separated row numbers (default: all)")
    args = ap.parse_args(argv)
    setup(args.threads, args.out, args.quick)
    rows = [int(r) for r in args.only.split(",") if r.strip()] or sorted(ROWS)
    t0 = time.perf_counter()
    summary = []
    for row in rows:
        print(f"\n==================== row {row}: {ROWS[row][0]} ====================", flush=True)
        s, secs = run_row(row, args.quick, args.threads)
        s["seconds"] = round(secs, 1)
        summary.append(s)
        setup(args.threads, args.out, args.quick)  # a row may have changed torch threads
    total = time.perf_counter() - t0
    info = common.machine_info()
    print("\n==================== summary ====================")
    print(f"machine: {info['cpu']}, {info['cpu_count']} CPUs ({info['affinity']} usable), torch "
          f"{info['versions']['torch']}, torch threads {args.threads or torch.get_num_threads()}, "
          f"python {info['python']}{' (quick mode: tiny sizes)' if args.quick else ''}")
    print(common.table([[s["row"], s["name"], s["target"], s["measured"], s["status"], s["seconds"]]
                        for s in summary], ["row", "benchmark", "target", "measured", "status", "s"]))
    notes = [f"  {s['row']}: {s['note']}" for s in summary if s.get("note")]
    if notes:
        print("notes:\n" + "\n".join(notes))
    print(f"total {total:.0f} s")
    payload = {"quick": args.quick, "threads": args.threads, "total_s": total, "rows": summary}
    path = common.write_result("summary", payload)
    print(f"wrote {path}")
    return json.loads(path.read_text())


if __name__ == "__main__":
    main()
    sys.exit(0)
