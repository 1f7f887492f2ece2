"""Run methods × scenarios × seeds from a matrix config and write the paper's tables.

    python -m launch.matrix conf/matrix.yaml [key=value ...] [--tables-only] [--dry-run]
    python launch/matrix.py conf/matrix.yaml [key=value ...]          (the same, as a plain script)

`key=value` arguments override the matrix config (OmegaConf dotlist, e.g. `seeds=[0]`,
`overrides=[rounds=1]`). Every cell is one `ladalit.run.execute(load_config([...]))`:

    conf=<scenario> method=<method> seed=<seed> eval.shots=<shots> <overrides...>
    <method_overrides[method]...> [<ablation>] output_dir=<out>/runs/<scenario> run_name=<variant>-seed<seed>

Prompt settings (shots) are not separate runs: one run evaluates every setting in `shots`.
Ablations run `ours` (LaDa) with one extra override each (Table V). A cell whose results.json is
complete (it holds the evaluation of the configured last round) is not run again, so the command is
resumable; an interrupted LaDa cell continues from its checkpoint (`resume=true`). A complete cell whose
recorded settings (fingerprint.json) differ from the cell's config is "stale": left as it is, not
reported, and named with the differing keys (not compared: the ladalit code version, and config sections
that the cell's method does not read, `SECTION_READERS`).

Methods the run config does not know (not registered in `ladalit.core.config.METHODS`), scenarios that do
not exist and cells that fail are reported as "n/a" in the tables and listed with their reason in
cells.csv; the exit status is 1 if a cell failed or is stale, 2 for a bad matrix config, else 0.

Written to `output_dir`:
- table2.md / table2.csv: paper Table II layout, one table per prompt setting; rows scenario ×
  participant (Client 1..K, LLM), columns the methods, then Imp.(%) = ours − best other method, in
  points; cells "mean ± std" of the accuracy in % over seeds (sample std, 0 for one seed).
- table5.md / table5.csv: paper Table V layout; rows prompt setting × (Ours, each ablation), columns
  scenario × participant; cells the mean, and for ablations the delta to Ours in parentheses.
- communication.md / communication.csv: MB up / down / total per scenario and method (the data of
  paper Fig. 5), mean ± std over seeds (1 MB = 1e6 bytes of the serialised messages).
- cells.csv: every cell with its status (done, cached, n/a, failed, stale: finished with other settings than
  the cell's, so neither reported nor replaced), run dir and reason.
- tables.md: the three tables together.
"""
from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import re
import statistics
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

DEFAULTS = {
    # where runs (runs/<scenario>/<variant>-seed<seed>) and tables go
    "output_dir": "runs/matrix",
    # run configs (conf=NAME: a file in conf/ or a path), one per scenario
    "scenarios": ["demo"],
    # methods (Table II columns, in this order); `ours` is compared with the others in Imp.(%)
    "methods": ["standalone", "fedkd", "fedmkt", "wasp", "lada"],
    "ours": "lada",
    # Table V: overrides of `ours`, one ablation each
    "ablations": ["lada.loss=ce", "lada.filter=none", "lada.server_weights=uniform"],
    "seeds": [0, 1, 2],
    # prompt settings evaluated in every run (eval.shots)
    "shots": [0, 1],
    # extra key=value overrides for every cell, and per method
    "overrides": [],
    "method_overrides": {},
    # which round's accuracy the tables report: "last" or a round number
    "round": "last",
}

METHOD_NAMES = {"standalone": "Standalone", "fedkd": "FedKD", "fedmkt": "FedMKT", "wasp": "WASP", "lada": "LaDa",
                "sft_cot": "SFT", "socratic_cot": "Socratic CoT", "rstar": "rStar"}
# Table V's names of the paper's ablations, keyed as a variant names them (`variant_of`)
ABLATION_NAMES = {"loss=ce": "w/o reasoning distillation", "filter=none": "w/o filter",
                  "server_weights=uniform": "w/o sample weights"}
SETTING_NAMES = {0: "Zero-shot", 1: "One-shot"}


class MatrixError(ValueError):
    """A bad matrix config; the message is one line."""


# ----------------------------------------------------------------------------- config and cells
def load_matrix(path: str | None, overrides: list[str] = ()) -> dict:
    cfg = OmegaConf.create(DEFAULTS)
    try:
        if path:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except Exception as err:
        raise MatrixError(f"{path}: {str(err).splitlines()[0]}") from None
    out = OmegaConf.to_container(cfg, resolve=True)
    unknown = set(out) - set(DEFAULTS)
    if unknown:
        raise MatrixError(f"unknown matrix key(s) {sorted(unknown)} (known: {sorted(DEFAULTS)})")
    for key in ("scenarios", "methods", "ablations", "seeds", "shots", "overrides"):
        if not isinstance(out[key], list):
            raise MatrixError(f"matrix key '{key}' must be a list, got {out[key]!r}")
    if not isinstance(out["method_overrides"] or {}, dict):
        raise MatrixError("matrix key 'method_overrides' must map a method to a list of key=value")
    if not out["scenarios"] or not out["seeds"] or not out["shots"]:
        raise MatrixError("matrix keys 'scenarios', 'seeds' and 'shots' need at least one entry")
    if out["round"] != "last" and not isinstance(out["round"], int):
        raise MatrixError(f"matrix key 'round' must be 'last' or a round number, got {out['round']!r}")
    return out


def scenario_name(scenario: str) -> str:
    """"conf/s1.yaml" -> "s1"."""
    name = Path(str(scenario)).name
    return name[:-5] if name.endswith(".yaml") else name


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text)


def variant_of(method: str, ablation: str | None = None) -> str:
    """A cell's name in the tables and its run_name: the method, or method+ablation, where an override of the
    method's own section is named without the section (lada.loss=ce: lada+loss=ce, run lada+loss_ce-seed0)."""
    return method if ablation is None else f"{method}+{ablation.removeprefix(method + '.')}"


@dataclass
class Cell:
    scenario: str           # as given (conf=...)
    method: str
    seed: int
    ablation: str | None = None
    status: str = "pending"  # done | cached | n/a | failed | stale
    reason: str = ""
    run_dir: Path | None = None
    results: dict | None = field(default=None, repr=False)

    @property
    def variant(self) -> str:
        return variant_of(self.method, self.ablation)

    @property
    def scenario_label(self) -> str:
        return scenario_name(self.scenario)


def plan(m: dict) -> list[Cell]:
    cells = []
    for scenario in m["scenarios"]:
        for seed in m["seeds"]:
            for method in m["methods"]:
                cells.append(Cell(scenario, method, int(seed)))
            for abl in m["ablations"]:
                cells.append(Cell(scenario, m["ours"], int(seed), abl))
    return cells


def cell_args(m: dict, cell: Cell) -> list[str]:
    out = Path(m["output_dir"]) / "runs" / _safe(cell.scenario_label)
    args = [f"conf={cell.scenario}", f"method={cell.method}", f"seed={cell.seed}",
            f"eval.shots=[{','.join(str(int(s)) for s in m['shots'])}]", "quiet=true",
            *m["overrides"], *(m["method_overrides"] or {}).get(cell.method, [])]
    if cell.ablation:
        args.append(cell.ablation)
    args += [f"output_dir={out}", f"run_name={_safe(cell.variant)}-seed{cell.seed}"]
    return args


def read_complete(run_dir: Path) -> dict | None:
    """results.json if it holds the evaluation of its configured last round (LaDa writes results.json
    after every round, so existence alone does not mean the run finished)."""
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    try:
        res = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    rounds = (res.get("config") or {}).get("rounds")
    if rounds is None or not any(r.get("round") == rounds for r in res.get("accuracy", [])):
        return None
    return res


# config sections that only these methods read (grep the sources before adding one): a difference in
# another method's section cannot change a cell's results
SECTION_READERS = {"wasp": {"wasp"}, "fedmkt": {"fedmkt"}, "reasoning": {"sft_cot", "socratic_cot", "rstar"},
                   "filter_net": {"lada", "wasp"}, "reward": {"lada"}, "lada": {"lada"}}


def settings_changed(run_dir: Path, cfg) -> list[str]:
    """How the finished run's recorded settings (its fingerprint.json) differ from the cell's config. Not
    compared: the ladalit code version (a cell finished before a code change is reused) and the sections of
    SECTION_READERS that the cell's method does not read. A key recorded where it was before its section took it
    (`n_c`, now `lada.n_c`: ladalit.core.config.MOVED) is compared at its new place. A key the record lacks and the
    cell leaves at its default is no difference: a switch added after the run was written, whose default is what
    the code that wrote it did (`lada.mard_lr_scale: 1.0`, say)."""
    from omegaconf import OmegaConf

    from ladalit.core.config import MOVED, run_config
    from ladalit.core.run_identity import FINGERPRINT, differences, fingerprint, flat
    try:
        recorded = json.loads((run_dir / FINGERPRINT).read_text())
    except (OSError, ValueError):
        return [f"no readable {FINGERPRINT}"]
    unread = tuple(f"{sec}." for sec, readers in SECTION_READERS.items() if cfg.method not in readers)

    def read(fp: dict) -> dict:  # the fingerprint without the code version and the unread sections
        config = {MOVED.get(k, k): v for k, v in fp.get("config", {}).items()}
        return {**fp, "code": None, "config": {k: v for k, v in config.items() if not k.startswith(unread)}}
    old, new = read(recorded), read(fingerprint(cfg))
    defaults = flat(OmegaConf.to_container(OmegaConf.structured(run_config()), resolve=True))
    old["config"] |= {k: v for k, v in new["config"].items()
                      if k not in old["config"] and k in defaults and v == defaults[k]}
    return differences(old, new)


def _free_memory() -> None:
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover
        pass


def run_cell(m: dict, cell: Cell, execute=None, dry_run: bool = False, log=print) -> Cell:
    import ladalit.components  # noqa: F401  the config sections the baselines own (wasp.*, fedmkt.*, ...)
    from ladalit.core.config import ConfigError, load_config
    args = cell_args(m, cell)
    try:
        cfg = load_config(args)
    except ConfigError as err:
        cell.status, cell.reason = "n/a", str(err)
        if "'method'" in str(err):
            cell.reason = f"method {cell.method!r} is not registered ({err})"
        return cell
    from ladalit.run import run_dir_for
    cell.run_dir = run_dir_for(cfg)
    done = read_complete(cell.run_dir)
    if done is not None:
        diffs = settings_changed(cell.run_dir, cfg)
        if diffs:  # never reported as this cell, never replaced: the user moves it away to re-run
            cell.status, cell.reason = "stale", (f"{cell.run_dir} finished with other settings ({'; '.join(diffs)}); "
                                                 "move it away to run this cell again")
            return cell
        cell.status, cell.results = "cached", done
        return cell
    if dry_run:
        cell.status = "pending"
        return cell
    if (cell.run_dir / "checkpoint.pt").is_file():
        cfg = load_config(args + ["resume=true"])
    elif cell.run_dir.is_dir() and any(cell.run_dir.iterdir()):  # unfinished, no checkpoint: start afresh
        cfg = load_config(args + ["overwrite=true"])
    if execute is None:
        from ladalit.run import execute
    log(f"[matrix] run {cell.scenario_label} {cell.variant} seed {cell.seed} -> {cell.run_dir}")
    try:
        _, cell.results = execute(cfg, quiet=True)
        cell.status = "done"
    except Exception as err:  # one failed cell must not stop the matrix
        cell.status, cell.reason = "failed", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        log(f"[matrix] FAILED {cell.scenario_label} {cell.variant} seed {cell.seed}:\n{traceback.format_exc()}")
    finally:
        _free_memory()
    return cell


def run_matrix(m: dict, execute=None, dry_run: bool = False, tables_only: bool = False, log=print) -> list[Cell]:
    cells = plan(m)
    for cell in cells:
        run_cell(m, cell, execute, dry_run=dry_run or tables_only, log=log)
        if cell.status in ("n/a", "failed", "stale"):
            log(f"[matrix] {cell.status}: {cell.scenario_label} {cell.variant} seed {cell.seed}: {cell.reason}")
    return cells


# ----------------------------------------------------------------------------- numbers from results
def participants(results: dict) -> list[str]:
    """Clients in config order, then the server."""
    clients = list(((results.get("config") or {}).get("clients") or {}))
    seen = list(dict.fromkeys(r["participant"] for r in results.get("accuracy", [])))
    clients += sorted(p for p in seen if p != "server" and p not in clients)
    return clients + ["server"]


def participant_label(name: str, clients: list[str]) -> str:
    return "LLM" if name == "server" else f"Client {clients.index(name) + 1}"


def accuracy_pct(results: dict, participant: str, shots: int, at_round="last", metric: str = "accuracy"
                 ) -> float | None:
    """`metric`: "accuracy" (lenient) or "accuracy_strict" (SPEC §7; None for a run from before it)."""
    rows = [r for r in results.get("accuracy", []) if r["participant"] == participant and r["shots"] == shots]
    if not rows:
        return None
    t = max(r["round"] for r in rows) if at_round == "last" else at_round
    row = next((r for r in rows if r["round"] == t), None)
    return None if row is None or row.get(metric) is None else 100.0 * row[metric]


def mb(results: dict, direction: str | None = None) -> float:
    return sum(c["bytes"] for c in results.get("communication", [])
               if direction is None or c["direction"] == direction) / 1e6


def mean_std(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt_ms(ms: tuple[float, float] | None, digits: int = 1) -> str:
    return "n/a" if ms is None else f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def fmt_delta(d: float) -> str:
    d = round(d, 1)
    return "0.0" if d == 0 else f"{d:+.1f}"


def _index(cells) -> dict:
    """(scenario label, variant) -> list of results dicts (one per seed with results)."""
    out: dict = {}
    for c in cells:
        scen, var, res = _cell_fields(c)
        if res is not None:
            out.setdefault((scen, var), []).append(res)
    return out


def _cell_fields(c):
    if isinstance(c, Cell):
        return c.scenario_label, c.variant, c.results
    return scenario_name(c["scenario"]), c["variant"], c.get("results")


def _scenario_participants(by: dict, scenario: str, variants: list[str]) -> list[str]:
    names: list[str] = []
    for v in variants:
        for res in by.get((scenario, v), []):
            for p in participants(res):
                if p not in names:
                    names.append(p)
    clients = [p for p in names if p != "server"]
    return clients + (["server"] if "server" in names else [])


def _md(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


# ----------------------------------------------------------------------------- Table II
def main_table(cells, scenarios: list[str], methods: list[str], shots: list[int], ours: str = "lada",
               at_round="last", metric: str = "accuracy") -> tuple[str, list[dict]]:
    """Paper Table II: per prompt setting, rows scenario × participant, columns methods + Imp.(%)."""
    by = _index(cells)
    blocks, csv_rows = [], []
    others = [m for m in methods if m != ours]
    for s in shots:
        head = ["Scenario", "Participant"] + [METHOD_NAMES.get(m, m) for m in methods]
        if ours in methods:
            head.append("Imp.(%)")
        rows = []
        for scen in map(scenario_name, scenarios):
            names = _scenario_participants(by, scen, methods)
            clients = [p for p in names if p != "server"]
            if not names:  # no finished cell for this scenario
                rows.append([scen, "n/a"] + ["n/a"] * (len(head) - 2))
            for p in names:
                stats = {}
                for m in methods:
                    vals = [a for res in by.get((scen, m), [])
                            if (a := accuracy_pct(res, p, s, at_round, metric)) is not None]
                    stats[m] = (mean_std(vals), len(vals))
                line = [scen, participant_label(p, clients)] + [fmt_ms(stats[m][0]) for m in methods]
                row = {"shots": s, "setting": SETTING_NAMES.get(s, f"{s}-shot"), "scenario": scen, "participant": p,
                       "label": participant_label(p, clients)}
                for m in methods:
                    ms, n = stats[m]
                    row |= {f"{m}_mean": "" if ms is None else round(ms[0], 4),
                            f"{m}_std": "" if ms is None else round(ms[1], 4), f"{m}_n": n}
                if ours in methods:
                    base = [stats[m][0][0] for m in others if stats[m][0] is not None]
                    imp = None
                    if stats[ours][0] is not None and base:
                        imp = round(round(stats[ours][0][0], 1) - round(max(base), 1), 1) + 0.0  # no "-0.0"
                    line.append("n/a" if imp is None else f"{imp:.1f}")
                    row["imp"] = "" if imp is None else round(imp, 1)
                rows.append(line)
                csv_rows.append(row)
        kind = "strict accuracy" if metric == "accuracy_strict" else "accuracy"
        title = f"### {SETTING_NAMES.get(s, f'{s}-shot')} setting ({kind} %, mean ± std over seeds)"
        blocks.append(f"{title}\n\n{_md(head, rows)}")
    return "\n\n".join(blocks) + "\n", csv_rows


# ----------------------------------------------------------------------------- Table V
def ablation_table(cells, scenarios: list[str], ablations: list[str], shots: list[int], ours: str = "lada",
                   at_round="last") -> tuple[str, list[dict]]:
    """Paper Table V: rows prompt setting × (Ours, ablations), columns scenario × participant;
    cells the mean accuracy (%) and, for ablations, the delta to Ours."""
    by = _index(cells)
    variants = [ours] + [variant_of(ours, a) for a in ablations]
    cols = []
    for scen in map(scenario_name, scenarios):
        names = _scenario_participants(by, scen, variants)
        clients = [p for p in names if p != "server"]
        cols += [(scen, p, participant_label(p, clients)) for p in names]
    head = ["Setting", "Method"] + [f"{scen} {label}" for scen, _, label in cols]
    rows, csv_rows = [], []
    for s in shots:
        ours_mean = {}
        for v, abl in zip(variants, [None, *ablations]):
            name = "Ours" if abl is None else ABLATION_NAMES.get(v.partition("+")[2], f"{ours} + {abl}")
            line = [SETTING_NAMES.get(s, f"{s}-shot"), name]
            for scen, p, label in cols:
                vals = [a for res in by.get((scen, v), []) if (a := accuracy_pct(res, p, s, at_round)) is not None]
                ms = mean_std(vals)
                row = {"shots": s, "variant": v, "method": name, "scenario": scen, "participant": p,
                       "label": label, "mean": "" if ms is None else round(ms[0], 4),
                       "std": "" if ms is None else round(ms[1], 4), "n": len(vals), "delta": ""}
                if ms is None:
                    line.append("n/a")
                elif abl is None:
                    ours_mean[(scen, p)] = ms[0]
                    line.append(f"{ms[0]:.1f}")
                elif (scen, p) in ours_mean:
                    d = round(ms[0], 1) - round(ours_mean[(scen, p)], 1)
                    line.append(f"{ms[0]:.1f} ({fmt_delta(d)})")
                    row["delta"] = round(d, 1)
                else:
                    line.append(f"{ms[0]:.1f}")
                csv_rows.append(row)
            rows.append(line)
    md = "### Ablations (accuracy %, mean over seeds; in parentheses: difference to Ours)\n\n" + _md(head, rows)
    return md + "\n", csv_rows


# ----------------------------------------------------------------------------- Fig. 5 data
def communication_table(cells, scenarios: list[str], variants: list[str]) -> tuple[str, list[dict]]:
    """MB per scenario and method (client->server, server->client, total), mean ± std over seeds."""
    by = _index(cells)
    head = ["Scenario", "Method", "Up MB", "Down MB", "Total MB"]
    rows, csv_rows = [], []
    for scen in map(scenario_name, scenarios):
        for v in variants:
            res = by.get((scen, v), [])
            method, _, abl = v.partition("+")
            name = METHOD_NAMES.get(method, method) + (f" ({ABLATION_NAMES.get(abl, abl)})" if abl else "")
            up = mean_std([mb(r, "client->server") for r in res])
            down = mean_std([mb(r, "server->client") for r in res])
            total = mean_std([mb(r) for r in res])
            rows.append([scen, name, fmt_ms(up, 3), fmt_ms(down, 3), fmt_ms(total, 3)])
            row = {"scenario": scen, "variant": v, "method": name, "n": len(res)}
            for key, ms in (("up_mb", up), ("down_mb", down), ("total_mb", total)):
                row |= {f"{key}_mean": "" if ms is None else round(ms[0], 6),
                        f"{key}_std": "" if ms is None else round(ms[1], 6)}
            csv_rows.append(row)
    md = "### Communication (MB over all rounds and clients, mean ± std over seeds)\n\n" + _md(head, rows)
    return md + "\n", csv_rows


# ----------------------------------------------------------------------------- writing
def write_tables(m: dict, cells, out_dir: Path | None = None) -> dict[str, Path]:
    out = Path(out_dir or m["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    shots = [int(s) for s in m["shots"]]
    t2, t2_rows = main_table(cells, m["scenarios"], m["methods"], shots, m["ours"], m["round"])
    t2s, t2s_rows = main_table(cells, m["scenarios"], m["methods"], shots, m["ours"], m["round"], "accuracy_strict")
    t5, t5_rows = ablation_table(cells, m["scenarios"], m["ablations"], shots, m["ours"], m["round"])
    variants = list(dict.fromkeys(m["methods"] + [variant_of(m["ours"], a) for a in m["ablations"]]))
    comm, comm_rows = communication_table(cells, m["scenarios"], variants)
    status = [{"scenario": c.scenario_label, "variant": c.variant, "seed": c.seed, "status": c.status,
               "run_dir": str(c.run_dir or ""), "reason": c.reason} for c in cells if isinstance(c, Cell)]
    files = {
        "table2.md": "## Main results (paper Table II layout)\n\n" + t2, "table2.csv": _csv(t2_rows),
        "table2_strict.md": "## Main results, strict accuracy (an answer statement required; SPEC §7)\n\n" + t2s,
        "table2_strict.csv": _csv(t2s_rows),
        "table5.md": "## Ablations (paper Table V layout)\n\n" + t5, "table5.csv": _csv(t5_rows),
        "communication.md": "## Communication cost (data of paper Fig. 5)\n\n" + comm,
        "communication.csv": _csv(comm_rows), "cells.csv": _csv(status),
    }
    files["tables.md"] = "\n".join([files["table2.md"], files["table2_strict.md"], files["table5.md"],
                                    files["communication.md"]])
    paths = {}
    for name, text in files.items():
        (out / name).write_text(text)
        paths[name] = out / name
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m launch.matrix", description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="matrix config (YAML), e.g. conf/matrix.yaml")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the matrix config")
    ap.add_argument("--tables-only", action="store_true", help="run nothing; tables from the finished cells")
    ap.add_argument("--dry-run", action="store_true", help="list the cells and their status; run nothing")
    args = ap.parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    try:
        m = load_matrix(args.config, args.overrides)
    except MatrixError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cells = run_matrix(m, dry_run=args.dry_run, tables_only=args.tables_only)
    if args.dry_run:
        for c in cells:
            print(f"{c.status:8} {c.scenario_label:10} {c.variant:32} seed {c.seed}  {c.reason}")
        return 0
    paths = write_tables(m, cells)
    print(paths["tables.md"].read_text())
    counts = {s: sum(c.status == s for c in cells) for s in ("done", "cached", "n/a", "failed", "stale")}
    print(f"[matrix] cells: {counts}; tables in {Path(m['output_dir'])}")
    return 1 if counts["failed"] or counts["stale"] else 0


if __name__ == "__main__":
    if __package__ in (None, ""):  # run as a plain script: make the repository importable
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
