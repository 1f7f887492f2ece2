"""Tables and plots rebuilt from saved runs: `python -m ladalit.reporting.report RUN_DIR [RUN_DIR ...] [--out DIR]`.

One run dir: report.md (accuracy, selections, communication) and accuracy.png,
selection.png, communication.png. Several: a side-by-side comparison (final-round
accuracy per participant and shots, total MB), a combined communication plot
(comparison-communication.png), and each run's tables and plots (NAME-accuracy.png,
NAME-selection.png). Runs whose configs differ only in the seed (and in the keys that do not
change results, `ladalit.core.run_identity.HARMLESS`) form one group:
the comparison gives its mean ± std over the seeds, and the group gets a mean ± std
table per round and a plot with ± std bands (GROUP-accuracy.png). A run that stopped
early is labelled "partial: N of M rounds". Everything goes to the first run dir unless
--out is given. Exit status 2, with a one-line message, when a dir holds no readable results.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from ladalit.reporting.plots import (DIRECTIONS, mean_std, partial_label, plot_accuracy, plot_accuracy_runs, plot_communication,
                           plot_selection, write_plots)
from ladalit.core.run_identity import HARMLESS

# config keys that do not change a run's results: runs differing only in these and the seed are seeds of one config
NOT_RESULTS = ("seed",) + HARMLESS


class ReportError(ValueError):
    """A run dir that cannot be reported on; the message is one line."""


def load_results(run_dir) -> dict:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise ReportError(f"{run_dir}: no results.json")
    try:
        results = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: cannot be read ({err})") from None
    check_shape(results, path)
    return results


_NUMBER = (int, float)
# the rows the tables and plots read: field -> accepted types
SHAPE = {
    "accuracy": {"round": int, "participant": str, "shots": int, "accuracy": _NUMBER, "invalid_rate": _NUMBER},
    "selection": {"round": int, "pair": str, "selected": int, "candidates": int},
    "selected_per_round": {"round": int, "pair": str, "selected": int},
    "communication": {"round": int, "client": str, "direction": str, "bytes": _NUMBER},
}


def check_shape(results, path) -> None:
    """ReportError naming the first field of results.json that the report cannot read."""
    if not isinstance(results, dict):
        raise ReportError(f"{path}: expected a JSON object (a ladalit results.json), got {type(results).__name__}")
    if "method" in results and not isinstance(results["method"], str):
        raise ReportError(f"{path}: field 'method': expected a string")
    if not isinstance(results.get("communication_mb_total", 0.0), _NUMBER):
        raise ReportError(f"{path}: field 'communication_mb_total': expected a number")
    for key, fields in SHAPE.items():
        rows = results.get(key, [])
        if not isinstance(rows, list):
            raise ReportError(f"{path}: field '{key}': expected a list of rows, got {type(rows).__name__}")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ReportError(f"{path}: field '{key}[{i}]': expected an object, got {type(row).__name__}")
            for name, kind in fields.items():
                value = row.get(name)
                if not isinstance(value, kind) or isinstance(value, bool):
                    raise ReportError(f"{path}: field '{key}[{i}].{name}': expected "
                                      f"{'a number' if kind is _NUMBER else kind.__name__}, got {value!r}")


def _table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.4f}"


def accuracy_table(results: dict) -> str:
    rows = results.get("accuracy", [])
    if not rows:
        return "(no evaluation)"
    shots = sorted({r["shots"] for r in rows})
    names = list(dict.fromkeys(r["participant"] for r in rows))
    cell = {(r["round"], r["participant"], r["shots"]): r for r in rows}
    head = ["round", "participant"] + [h for s in shots for h in (f"{s}-shot acc", f"{s}-shot strict",
                                                                   f"{s}-shot invalid")]
    body = []
    for t in sorted({r["round"] for r in rows}):
        for n in names:
            line = [t, n]
            for s in shots:
                m = cell.get((t, n, s))
                line += [f"{m['accuracy']:.3f}", _strict(m), f"{m['invalid_rate']:.3f}"] if m else ["-", "-", "-"]
            body.append(line)
    return _table(head, body)


def _strict(row: dict) -> str:
    """A row's strict accuracy (SPEC §7: only an answer statement counts); "-" where a run predates it."""
    v = row.get("accuracy_strict")
    return "-" if v is None else f"{v:.3f}"


def selection_table(results: dict) -> str:
    """Selected / candidates per pair (rows) and round (columns)."""
    sel, cand = defaultdict(int), defaultdict(int)
    for s in results.get("selection", []):
        sel[(s["round"], s["pair"])] += s["selected"]
        cand[(s["round"], s["pair"])] += s["candidates"]
    if not sel:
        return "(no selections)"
    rounds = sorted({t for t, _ in sel})
    pairs = list(dict.fromkeys(p for _, p in sel))
    body = [[p] + [f"{sel[(t, p)]} / {cand[(t, p)]}" if (t, p) in sel else "-" for t in rounds] for p in pairs]
    return _table(["pair"] + [f"round {t}" for t in rounds], body)


def communication_table(results: dict) -> str:
    """MB per round and client, one column per direction, with a total row."""
    comm = results.get("communication", [])
    if not comm:
        return "(nothing sent)"
    by = defaultdict(int)
    for c in comm:
        by[(c["round"], c["client"], c["direction"])] += c["bytes"]
    keys = list(dict.fromkeys((c["round"], c["client"]) for c in sorted(comm, key=lambda c: (c["round"], c["client"]))))
    body = [[t, k] + [_mb(by[(t, k, d)]) for d in DIRECTIONS] + [_mb(sum(by[(t, k, d)] for d in DIRECTIONS))]
            for t, k in keys]
    totals = [sum(v for (_, _, d), v in by.items() if d == dd) for dd in DIRECTIONS]
    body.append(["**total**", ""] + [_mb(v) for v in totals] + [_mb(sum(totals))])
    return _table(["round", "client"] + [f"{d} MB" for d in DIRECTIONS] + ["MB"], body)


def run_label(results: dict, run_dir) -> str:
    partial = partial_label(results)
    return f"{results.get('method', '?')} ({Path(run_dir).resolve().name}{', ' + partial if partial else ''})"


def seed_groups(runs: list[dict]) -> list[list[int]]:
    """Indices of runs grouped by config minus the seed (and NOT_RESULTS), in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(runs):
        cfg = {k: v for k, v in r.get("config", {}).items() if k not in NOT_RESULTS}
        groups.setdefault(json.dumps([r.get("method"), cfg], sort_keys=True), []).append(i)
    return list(groups.values())


def _final(results: dict) -> dict:
    """(participant, shots label) -> final-round accuracy; "S-shot" lenient, "S-shot strict" strict."""
    acc = results.get("accuracy", [])
    t = max((a["round"] for a in acc), default=None)
    out = {}
    for a in acc:
        if a["round"] == t:
            out[(a["participant"], f"{a['shots']}-shot")] = a["accuracy"]
            if a.get("accuracy_strict") is not None:
                out[(a["participant"], f"{a['shots']}-shot strict")] = a["accuracy_strict"]
    return out


def _mean_std(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    m, sd = mean_std(values)
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def comparison_table(runs: list[tuple[str, dict]], groups: list[list[int]] | None = None) -> str:
    """Final-round accuracy per participant and shots, and total MB; one column per run, or per group
    of seeds (mean ± std over them)."""
    groups = groups or [[i] for i in range(len(runs))]
    final = [[_final(runs[i][1]) for i in g] for g in groups]
    keys = list(dict.fromkeys(k for fs in final for f in fs for k in f))
    shots = sorted({s for _, s in keys})
    names = list(dict.fromkeys(n for n, _ in keys))
    body = []
    for s in shots:
        for n in names:
            cells = []
            for fs in final:
                vals = [f[(n, s)] for f in fs if (n, s) in f]
                cells.append(_mean_std(vals) if vals else "-")
            body.append([f"{n}, {s}"] + cells)
    body.append(["total MB"] + [_mean_std([runs[i][1].get("communication_mb_total", 0.0) for i in g], 4) for g in groups])
    return _table(["final-round accuracy"] + [group_label(runs, g) for g in groups], body)


def group_label(runs: list[tuple[str, dict]], group: list[int]) -> str:
    if len(group) == 1:
        return runs[group[0]][0]
    seeds = ", ".join(str(runs[i][1].get("config", {}).get("seed", "?")) for i in group)
    partial = sum(bool(partial_label(runs[i][1])) for i in group)
    return (f"{runs[group[0]][1].get('method', '?')}, mean ± std over {len(group)} seeds ({seeds})"
            + (f", {partial} partial" if partial else ""))


def seed_table(runs: list[dict]) -> str:
    """Accuracy per round, participant and shots: mean ± std over the runs (seeds), with how many runs
    reached that round."""
    rows = [r for res in runs for r in res.get("accuracy", [])]
    if not rows:
        return "(no evaluation)"
    shots = sorted({r["shots"] for r in rows})
    names = list(dict.fromkeys(r["participant"] for r in rows))
    vals, strict = defaultdict(list), defaultdict(list)
    for r in rows:
        vals[(r["round"], r["participant"], r["shots"])].append(r["accuracy"])
        if r.get("accuracy_strict") is not None:
            strict[(r["round"], r["participant"], r["shots"])].append(r["accuracy_strict"])
    body = []
    for t in sorted({r["round"] for r in rows}):
        for n in names:
            cells = [c for s in shots for c in (_mean_std(vals[(t, n, s)]) if vals[(t, n, s)] else "-",
                                                _mean_std(strict[(t, n, s)]) if strict[(t, n, s)] else "-")]
            body.append([t, n, *cells, max(len(vals[(t, n, s)]) for s in shots)])
    return _table(["round", "participant"] + [h for s in shots for h in (f"{s}-shot acc", f"{s}-shot strict")]
                  + ["runs"], body)


def run_section(results: dict, label: str, level: str = "##") -> str:
    return "\n\n".join([
        f"{level} {label}",
        f"{level}# Accuracy per round", accuracy_table(results),
        f"{level}# Selected / candidates per model pair", selection_table(results),
        f"{level}# Communication (MB)", communication_table(results),
    ])


def _slugs(dirs: list[Path]) -> list[str]:
    names = [d.resolve().name for d in dirs]
    return [n if names.count(n) == 1 else f"{n}-{i + 1}" for i, n in enumerate(names)]


def build_report(run_dirs: list, out_dir=None) -> Path:
    """Write report.md and the plots; returns the path of report.md."""
    dirs = [Path(d) for d in run_dirs]
    loaded = [load_results(d) for d in dirs]
    out = Path(out_dir) if out_dir is not None else dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    labels = [run_label(r, d) for r, d in zip(loaded, dirs)]
    if len(dirs) == 1:
        write_plots(loaded[0], out)
        parts = [f"# Report: {labels[0]}", f"Run dir: `{dirs[0]}`",
                 run_section(loaded[0], "Tables"),
                 "## Plots", "![accuracy](accuracy.png)\n\n![selection](selection.png)\n\n"
                 "![communication](communication.png)"]
    else:
        plot_communication(dict(zip(labels, loaded)), out / "comparison-communication.png")
        groups = seed_groups(loaded)
        parts = ["# Comparison", comparison_table(list(zip(labels, loaded)), groups),
                 "![communication](comparison-communication.png)"]
        for g, group in enumerate(gr for gr in groups if len(gr) > 1):
            runs = [loaded[i] for i in group]
            label = group_label(list(zip(labels, loaded)), group)
            slug = f"group{g + 1}-{runs[0].get('method', 'run')}"
            seeds = ", ".join(str(r.get("config", {}).get("seed", "?")) for r in runs)
            plot_accuracy_runs(runs, out / f"{slug}-accuracy.png",
                               title=f"{runs[0].get('method', '')} accuracy per round, seeds {seeds}")
            parts += [f"## {label}", "Runs: " + ", ".join(f"`{dirs[i]}`" for i in group),
                      "### Accuracy per round, mean ± std", seed_table(runs), f"![accuracy]({slug}-accuracy.png)"]
        for results, label, d, slug in zip(loaded, labels, dirs, _slugs(dirs)):
            plot_accuracy(results, out / f"{slug}-accuracy.png")
            plot_selection(results, out / f"{slug}-selection.png")
            parts += [run_section(results, label), f"Run dir: `{d}`",
                      f"![accuracy]({slug}-accuracy.png)\n\n![selection]({slug}-selection.png)"]
    path = out / "report.md"
    path.write_text("\n\n".join(parts) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ladalit.reporting.report", description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    ap.add_argument("--out", metavar="DIR", help="where report.md and the plots go (default: the first run dir)")
    args = ap.parse_args(argv)
    try:
        path = build_report(args.run_dirs, args.out)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
