"""The demo world's verdict: Standalone, FedKD and LaDa over seeds, judged on the paper's claims.

    python -m benchmarks.demo_methods [--seeds 0 1 2] [--methods standalone fedkd lada]
                                      [--controls [CONTROL ...] | --no-controls] [--control-seeds 0] [--jobs N]
                                      [key=value ...]

Runs `conf/demo.yaml` once per (method, seed), every round evaluated (`eval.every_round=true`), then the controls
on the first seed, and writes benchmarks/results/demo_methods.{json,md}. The runs go to benchmarks/results/demo_runs/
(`--runs-dir`); a finished run there is reused only where its recorded fingerprint equals the one this command would
record (the same config, data file and ladalit sources, the same rounds: `reusable`), so a run of another world,
recipe or code version is run again, never mixed in. It prints, in this order:

- the preconditions table at the top, where `benchmarks/demo_preconditions.py` exists (`preconditions_lines`;
  `--no-preconditions` leaves it out);

- accuracy per participant, 0- and 1-shot, lenient and strict (SPEC §7: only an answer statement counts),
  mean ± std over the seeds: round 0 (the pre-trained models) and each method's last round;
- LaDa − baseline per participant, lenient and strict, with a paired 95% interval that resamples the seeds,
  then the test items within each (`ladalit.core.stats.paired_bootstrap`; a seed fixes the split, so
  both methods saw the same items; with one seed the interval covers the items only, and says so);
- the oracle's selection precision of LaDa's filters per pair and round against a random selection of
  the same size, how often the chosen answers were right, and the share of the selection labelled
  correctable against a random selection's (`ladalit.demo.oracle`);
- the server's accuracy per domain at round 0 and after the last round, with each method;
- learning curves: every participant's accuracy per round (0-shot, lenient and strict), mean over each run's seeds;
- the paper's claims, each marked met or not: LaDa ahead of Standalone on every client, at least level
  with FedKD on average over the clients, the server no lower than its round 0, and the filter's
  precision above random for every pair after round 1, and its correctable share above random for every
  pair after round 1.

The controls (where lada is among the methods; `--no-controls` leaves them out) run on the first seed (issue 34:
at least one; `--control-seeds`, some of --seeds, for more): the harness's controls
(`analysis:`, `ladalit.demo.controls`, docs/demo.md): LaDa and FedKD with the gold teacher, and LaDa with
each matched selector (random, disagreement, correctable) at the sizes of that seed's LaDa run, which runs
with `analysis.all_answers=true` (the oracle's random baseline over all of D_p). It prints the controls'
accuracies with the same paired intervals (against Standalone and LaDa), the matched selectors' oracle
shares beside LaDa's filter's, the reward AUCs (correctable against harmful, and against every other label)
with the real and with the gold teacher, and whether LaDa with the gold teacher is above Standalone.
`--controls lada-gold fedkd-gold` runs only the controls named (LaDa then answers every candidate only where a
matched selector is among them).
Extra arguments are config overrides for every run (e.g. `rounds=2`).

`--jobs N` runs N of the seeds' preconditions, then N of the (method, seed) runs, then N of the controls at once,
each in a process of its own with one torch thread. The default is the CPUs this process may use; `--jobs 1` runs
everything in this process with its threads. The runs are the same whatever N > 1; the thread count moves a run's
trained bits (docs/demo.md, Determinism), so `--jobs 1` on a machine of several threads gives other bits. The wall
time of the whole command is in the JSON (`wall_seconds`).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ladalit.core.config import load_config
from ladalit.core.run_identity import FINGERPRINT, differences, fingerprint, finished
from ladalit.core.stats import interval_kind, paired_bootstrap
from ladalit.run import execute

OUT = Path(__file__).resolve().parent / "results"
NAMES = {"standalone": "Standalone", "fedkd": "FedKD", "lada": "LaDa"}
METHODS = list(NAMES)  # the methods compared (the controls below are runs of them)
# the controls: name -> (method, its analysis switches); "{lada}" is that seed's LaDa run directory
CONTROLS = {
    "lada-gold": ("lada", ["analysis.gold_teacher=true"]),
    "fedkd-gold": ("fedkd", ["analysis.gold_teacher=true"]),
    "lada-random": ("lada", ["analysis.selector=random", "analysis.sizes_from={lada}"]),
    "lada-disagreement": ("lada", ["analysis.selector=disagreement", "analysis.sizes_from={lada}"]),
    "lada-correctable": ("lada", ["analysis.selector=correctable", "analysis.sizes_from={lada}"]),
}
NAMES |= {"lada-gold": "LaDa, gold teacher", "fedkd-gold": "FedKD, gold teacher", "lada-random": "random selector",
          "lada-disagreement": "disagreement selector", "lada-correctable": "correctable selector"}
SELECTORS = ["lada-random", "lada-disagreement", "lada-correctable"]


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity outside Linux
        return max(1, os.cpu_count() or 1)


def in_parallel(jobs: int, calls: list[tuple]) -> list:
    """[fn(*args) for fn, *args in calls], `jobs` at a time in processes of their own (spawned, one torch thread
    each), in order; in this process where jobs <= 1."""
    if jobs <= 1:
        return [fn(*a) for fn, *a in calls]
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread,
                             initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(fn, *a) for fn, *a in calls]
        return [f.result() for f in futures]


def _one_thread(parent: int | None = None) -> None:
    """A worker's start: one torch thread, and an end with its parent (`orphan_watch`)."""
    import torch
    torch.set_num_threads(1)
    orphan_watch(parent)


def orphan_watch(parent: int | None, every_s: float = 1.0) -> None:
    """Exit this process once `parent` is gone. A pool's workers outlive a benchmark killed by a signal, go on with
    the runs queued to them and write into the run directories of the next benchmark (seen 2026-12-07: two such
    workers ran 85 minutes beside the next command)."""
    if parent is None:
        return
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def run_cell(method: str, seed: int, overrides: list[str], runs_dir: Path, conf: str = "demo.yaml",
             name: str | None = None, analysis: list[str] = ()) -> tuple[dict, list[dict]]:
    """(results.json, predictions) of one run, every round evaluated, reusing a finished one where `reusable`.
    `name`: the run's (default method-seedS); `analysis`: the control's overrides (`analysis.*=...`)."""
    name = name or f"{method}-seed{seed}"
    cfg = load_config([f"conf={conf}", f"method={method}", f"seed={seed}", f"output_dir={runs_dir}",
                       f"run_name={name}", "tracking.wandb.mode=disabled", "overwrite=true", "eval.every_round=true",
                       *overrides, *analysis])
    run_dir = runs_dir / name
    done = run_dir / "results.json"
    if not reusable(cfg, run_dir):
        execute(cfg, quiet=True)  # overwrite=true: an unfinished or different run of that name starts afresh
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    return json.loads(done.read_text()), preds


def reusable(cfg, run_dir: Path) -> bool:
    """Whether RUN_DIR holds a finished run of exactly this config: its recorded fingerprint (the resolved config
    but for where files go and what is shown, the data file's sha256 and the ladalit sources' hash,
    `ladalit.core.run_identity`) equals this one's, with the same number of rounds, and every round was evaluated.
    A run of another world, recipe or code version is run again, never mixed into the tables."""
    try:
        recorded = json.loads((run_dir / FINGERPRINT).read_text())
        saved = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return False
    return (finished(run_dir) and recorded.get("rounds") == cfg.rounds and not differences(recorded, fingerprint(cfg))
            and {r["round"] for r in saved.get("accuracy", [])} >= set(range(cfg.rounds + 1)))


KINDS = {"lenient": ("accuracy", "parsed"), "strict": ("accuracy_strict", "stated")}


def accuracy_at(results: dict, round: int, shots: int, kind: str = "lenient") -> dict[str, float]:
    key = KINDS[kind][0]
    return {r["participant"]: r[key] for r in results["accuracy"] if r["round"] == round and r["shots"] == shots}


def last_round(results: dict) -> int:
    return max(r["round"] for r in results["accuracy"])


def correct_by_item(preds: list[dict], round: int, shots: int, kind: str = "lenient") -> dict[str, dict[str, float]]:
    key = KINDS[kind][1]
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for p in preds:
        if p["round"] == round and p["shots"] == shots:
            out[p["participant"]][p["id"]] = float(p[key] == p["gold"])
    return out


def pct(xs: list[float]) -> str:
    return f"{100 * statistics.mean(xs):.1f} ± {100 * (statistics.stdev(xs) if len(xs) > 1 else 0.0):.1f}"


def gain_intervals(runs: dict, base: str, shots: int, kind: str = "lenient", of: str = "lada"
                   ) -> dict[str, tuple[float, float, float]]:
    """participant -> (mean, low, high) of `of` − base in points (`of`: LaDa, or a control), paired over the
    same items per seed, on the seeds of `of` (some of the base's)."""
    out = {}
    seeds = sorted(runs[of])
    names = sorted({p for s in seeds for p in correct_by_item(runs[of][s][1], last_round(runs[of][s][0]), shots)})
    for n in names:
        diffs = []
        for s in seeds:
            lada = correct_by_item(runs[of][s][1], last_round(runs[of][s][0]), shots, kind)[n]
            other = correct_by_item(runs[base][s][1], last_round(runs[base][s][0]), shots, kind)[n]
            diffs.append([lada[i] - other[i] for i in sorted(lada) if i in other])
        m, lo, hi = paired_bootstrap(diffs)
        out[n] = (100 * m, 100 * lo, 100 * hi)
    return out


def options(argv: list[str] | None) -> tuple[argparse.Namespace, list[str], list[int]]:
    """The parsed command line, the controls to run and their seeds (argparse's exit 2 on a wrong combination)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--runs-dir", default=str(OUT / "demo_runs"))
    ap.add_argument("--conf", default="demo.yaml", help="the world (smoke.yaml: a check of this script)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--controls", nargs="*", default=None, choices=list(CONTROLS), metavar="CONTROL",
                    help="the controls (gold teacher, matched selectors) to run and print with the reward AUCs: "
                         f"those named, of {', '.join(CONTROLS)} (default, or none named: every one, where lada is "
                         "among --methods)")
    ap.add_argument("--no-controls", action="store_true", help="run no control")
    ap.add_argument("--control-seeds", type=int, nargs="+", default=None,
                    help="the seeds of the controls, some of --seeds (default: the first of them)")
    ap.add_argument("--no-preconditions", action="store_true", help="leave out the preconditions table")
    ap.add_argument("--preconditions", default=None,
                    help="read the preconditions from this benchmarks.demo_preconditions JSON instead of measuring them")
    ap.add_argument("--jobs", type=int, default=usable_cpus(),
                    help="runs at once, each in its own one-thread process (default: the CPUs this process may use, "
                         f"{usable_cpus()} here; 1 runs everything in this process with its threads)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    if args.no_controls and args.controls is not None:
        ap.error("--controls and --no-controls exclude each other")
    if args.no_controls or (args.controls is None and "lada" not in args.methods):
        controls = []
    else:
        controls = [c for c in CONTROLS if c in (args.controls or CONTROLS)]
    if controls and "lada" not in args.methods:
        ap.error("--controls needs lada among --methods (the matched selectors replay its selection sizes)")
    control_seeds = args.control_seeds or args.seeds[:1]
    if not set(control_seeds) <= set(args.seeds):
        ap.error(f"--control-seeds {control_seeds} must be some of --seeds {args.seeds} (the paired intervals)")
    return args, controls, control_seeds


def main(argv: list[str] | None = None) -> dict:
    args, controls, control_seeds = options(argv)
    began = time.perf_counter()
    runs_dir = Path(args.runs_dir)
    lines, pre = ([], None) if args.no_preconditions else preconditions_lines(args)
    # with a matched selector, LaDa also answers every candidate for analysis on the controls' seeds (the oracle's
    # random baseline over all of D_p), and every run's oracle labels use the learnable steps its seed measured (c)
    def switches(m: str, s: int) -> list[str]:
        replayed = m == "lada" and s in control_seeds and any(c in SELECTORS for c in controls)
        return (["analysis.all_answers=true"] if replayed else []) + measured_steps(pre, s)
    cells = [(m, s) for m in args.methods for s in args.seeds]
    done = in_parallel(args.jobs, [(run_cell, m, s, args.overrides, runs_dir, args.conf, None, switches(m, s))
                                   for m, s in cells])
    runs: dict = defaultdict(dict)
    for (m, s), result in zip(cells, done):
        runs[m][s] = result
    if controls:
        cells = [(c, s) for c in controls for s in control_seeds]
        done = in_parallel(args.jobs, [
            (run_cell, CONTROLS[c][0], s, args.overrides, runs_dir, args.conf, f"{c}-seed{s}",
             [x.format(lada=runs_dir / f"lada-seed{s}") for x in CONTROLS[c][1]] + measured_steps(pre, s))
            for c, s in cells])
        for (c, s), result in zip(cells, done):
            runs[c][s] = result
    runs = dict(runs)
    first = runs[args.methods[0]]
    names = list(accuracy_at(first[args.seeds[0]][0], 0, 0))
    summary = {"seeds": args.seeds, "overrides": args.overrides, "accuracy": {}, "gain": {}}
    if pre is not None:
        summary["preconditions"] = pre
    evaluated = sorted({r["shots"] for r in first[args.seeds[0]][0]["accuracy"]})
    for shots in evaluated:
        for kind in KINDS:
            head = ["participant", "round 0"] + [f"{NAMES[m]} (round {last_round(runs[m][args.seeds[0]][0])})"
                                                 for m in args.methods]
            lines += [f"### {shots}-shot accuracy, {kind} (%), mean ± std over seeds {args.seeds}", "",
                      "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for n in names:
                r0 = [accuracy_at(first[s][0], 0, shots, kind)[n] for s in args.seeds]
                finals = {m: [accuracy_at(runs[m][s][0], last_round(runs[m][s][0]), shots, kind)[n] for s in args.seeds]
                          for m in args.methods}
                label = f"{n} {shots}-shot" + ("" if kind == "lenient" else " strict")
                summary["accuracy"][label] = {"round0": r0, **finals}
                lines.append(f"| {n} | {pct(r0)} | " + " | ".join(pct(finals[m]) for m in args.methods) + " |")
            lines.append("")
            if "lada" in runs:
                for base in [m for m in args.methods if m != "lada"]:
                    gains = gain_intervals(runs, base, shots, kind)
                    summary["gain"][f"lada-{base} {shots}-shot {kind}"] = gains
                    lines += [f"LaDa − {NAMES[base]}, {shots}-shot {kind} (points; {interval_kind(len(args.seeds))}): "
                              + "; ".join(f"{n} {m:+.1f} [{lo:+.1f}, {hi:+.1f}]" for n, (m, lo, hi) in gains.items()),
                              ""]
    if "lada" in runs:
        quality = defaultdict(list)
        for s in args.seeds:
            for row in runs["lada"][s][0].get("selection_quality", []):
                quality[(row["round"], row["pair"])].append(row)
        lines += ["### LaDa's selections against the oracle (mean over seeds)", "",
                  "| round | pair | selected | precision | random | chosen answer correct | correctable | random |",
                  "|---|---|---|---|---|---|---|---|"]
        for (t, pair), rows in sorted(quality.items()):
            mean = {k: statistics.mean(r[k] for r in rows) for k in ("selected", "precision", "random_precision",
                                                                      "chosen_correct")}
            lines.append(f"| {t} | {pair} | {mean['selected']:.0f} | {mean['precision']:.2f} | "
                         f"{mean['random_precision']:.2f} | {mean['chosen_correct']:.2f} | "
                         f"{correctable(rows, 'shares'):.2f} | {correctable(rows, 'random_shares'):.2f} |")
        summary["selection_quality"] = {f"{t} {p}": rows for (t, p), rows in quality.items()}
        lines += ["", "### Server accuracy per domain, 0-shot (%), mean over seeds", ""]
        domains = sorted({r["domain"] for s in args.seeds for r in first[s][0].get("accuracy_by_domain", [])})
        lines += ["| run | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]
        for label, m, at_last in [("round 0", args.methods[0], False)] + [(NAMES[m], m, True) for m in args.methods]:
            cells = []
            for d in domains:
                accs = []
                for s in args.seeds:
                    res = runs[m][s][0]
                    t = last_round(res) if at_last else 0
                    rows = [r for r in res.get("accuracy_by_domain", []) if (r["round"], r["participant"], r["shots"],
                                                                            r["domain"]) == (t, "server", 0, d)]
                    n = sum(r["n"] for r in rows)
                    accs.append(sum(r["accuracy"] * r["n"] for r in rows) / n if n else float("nan"))
                cells.append(f"{100 * statistics.mean(accs):.1f}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += curves(runs, names, summary)
    if controls:
        summary["control_seeds"] = control_seeds
        lines += controls_lines(runs, control_seeds, names, summary)
    if "lada" in runs:
        lines += ["", "### The paper's claims on this world", ""] + claims(summary, names, args.methods)
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_methods.md").write_text(text + "\n")
    summary["wall_seconds"], summary["jobs"] = time.perf_counter() - began, args.jobs
    (out / "demo_methods.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def preconditions_lines(args) -> tuple[list[str], list | None]:
    """The preconditions table at the top (issue 34, item 2): `benchmarks.demo_preconditions` measured on every
    seed (its `preconditions(cfg)`, `verdicts`, `markdown`), or read from `--preconditions FILE` (that script's
    JSON) where it holds every seed."""
    from benchmarks import demo_preconditions as pre
    if args.preconditions:
        saved = {m["seed"]: pre.revive(m) for m in json.loads(Path(args.preconditions).read_text())["per_seed"]}
        missing = sorted(set(args.seeds) - set(saved))
        if missing:
            raise SystemExit(f"--preconditions {args.preconditions}: no seeds {missing} in it")
        per_seed = [saved[s] for s in args.seeds]
    else:
        per_seed = in_parallel(args.jobs, [(measure_preconditions, args.conf, s, args.overrides) for s in args.seeds])
    text = pre.markdown(per_seed, pre.verdicts(per_seed), "python -m benchmarks.demo_preconditions")
    return ["## Preconditions", "", text.split("\n", 1)[1], ""], per_seed


def measure_preconditions(conf: str, seed: int, overrides: list[str]) -> dict:
    """One seed's preconditions (`benchmarks.demo_preconditions.preconditions`)."""
    from benchmarks import demo_preconditions as pre
    return pre.preconditions(load_config([f"conf={conf}", f"seed={seed}", *overrides]))


def measured_steps(pre: list | None, seed: int) -> list[str]:
    """The oracle's learnable steps of a seed as measured by precondition c (`analysis.learnable_steps.*`), for
    every run of that seed; none without the preconditions (the zoo's asserted values then)."""
    for m in pre or []:
        if m["seed"] == seed:
            return [f"analysis.learnable_steps.{k}={v['learnable_steps']}" for k, v in m["c"].items()]
    return []


def nanmean(xs) -> float:
    """The mean of the values that are not NaN; NaN where none is."""
    xs = [x for x in xs if x is not None and x == x]
    return statistics.mean(xs) if xs else float("nan")


def f2(x: float) -> str:
    return "–" if x != x else f"{x:.2f}"


def curves(runs: dict, names: list[str], summary: dict) -> list[str]:
    """Learning curves: each participant's 0-shot accuracy per evaluated round, lenient and strict, mean over
    each run's seeds, for every run (methods and controls); "–" where a round was not evaluated."""
    rounds = sorted({r["round"] for m in runs.values() for res, _ in m.values() for r in res["accuracy"]})
    lines, summary["curves"] = [], {}
    for kind in KINDS:
        head = ["participant", "run"] + [f"round {t}" for t in rounds]
        lines += ["", f"### Learning curves, 0-shot {kind} (%), mean over seeds", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for n in names:
            for m in runs:
                ys = [nanmean(accuracy_at(runs[m][s][0], t, 0, kind).get(n, float("nan")) for s in runs[m])
                      for t in rounds]
                summary["curves"].setdefault(f"{n} 0-shot {kind}", {})[m] = ys
                lines.append(f"| {n} | {NAMES[m]} (seeds {', '.join(map(str, runs[m]))}) | "
                             + " | ".join("–" if y != y else f"{100 * y:.1f}" for y in ys) + " |")
    return lines


def controls_lines(runs: dict, seeds: list[int], names: list[str], summary: dict) -> list[str]:
    """The controls (docs/demo.md, Controls): accuracies with paired intervals, the gold-teacher check, the
    matched selectors' oracle shares beside LaDa's filter's, and the reward AUCs with the real and the gold
    teacher."""
    ctl = [c for c in CONTROLS if c in runs]
    bases = [b for b in ("standalone", "lada") if b in runs]
    out, summary["controls"] = ["", "## Controls", ""], {"accuracy": {}, "gain": {}}
    for kind in KINDS:
        cols = bases + ctl
        out += [f"### Controls, 0-shot accuracy {kind} (%) after the last round, mean ± std over seeds {seeds}", "",
                "| participant | " + " | ".join(NAMES[c] for c in cols) + " |", "|---|" + "---|" * len(cols)]
        for n in names:
            accs = {c: [accuracy_at(runs[c][s][0], last_round(runs[c][s][0]), 0, kind)[n] for s in seeds] for c in cols}
            summary["controls"]["accuracy"][f"{n} 0-shot {kind}"] = accs
            out.append(f"| {n} | " + " | ".join(pct(accs[c]) for c in cols) + " |")
        out.append("")
        for c in ctl:
            for base in bases:
                gains = gain_intervals(runs, base, 0, kind, of=c)
                summary["controls"]["gain"][f"{c}-{base} 0-shot {kind}"] = gains
                out += [f"{NAMES[c]} − {NAMES[base]}, 0-shot {kind} (points; {interval_kind(len(seeds))}): "
                        + "; ".join(f"{n} {m:+.1f} [{lo:+.1f}, {hi:+.1f}]" for n, (m, lo, hi) in gains.items()), ""]
    if "standalone" in runs:
        acc = summary["controls"]["accuracy"]
        for c in [c for c in ("lada-gold", "fedkd-gold") if c in runs]:
            cell = {n: acc[f"{n} 0-shot lenient"] for n in names if n != "server"}
            ahead = {n: statistics.mean(a[c]) > statistics.mean(a["standalone"]) for n, a in cell.items()}
            mark = "met" if all(ahead.values()) else "NOT met"
            summary["controls"].setdefault("checks", {})[f"{c} ahead of standalone on every client"] = \
                all(ahead.values())
            out.append(f"- check: {NAMES[c]} ahead of Standalone on every client (0-shot lenient means): {mark} "
                       f"({', '.join(f'{n}: {v}' for n, v in ahead.items())})")
        out += ["  (where LaDa with the gold teacher is not above Standalone, suspect the loss, β, the learning rate "
                "or the reference before the filter)", ""]
    out += selector_lines(runs, seeds, summary) + auc_lines(runs, seeds, summary)
    return out


def by_cell(runs: dict, run: str, seeds: list[int], key: str) -> dict[tuple[int, str], list[dict]]:
    """A run's rows of results.json[key] (selection_quality, reward_auc) by (round, pair), over the seeds."""
    cells = defaultdict(list)
    for s in seeds:
        for row in runs[run][s][0].get(key, []):
            cells[(row["round"], row["pair"])].append(row)
    return cells


def selector_lines(runs: dict, seeds: list[int], summary: dict) -> list[str]:
    """The oracle's correctable and harmful shares of LaDa's filter's selection and of each matched selector's (the
    same sizes), and of a random draw from every sample of D_p with both answers that round (LaDa's run)."""
    sel = ["lada"] + [c for c in SELECTORS if c in runs]
    cells = {r: by_cell(runs, r, seeds, "selection_quality") for r in sel}

    def share(rows, key, label):
        return nanmean(r.get(key, {}).get(label, float("nan")) for r in rows)
    head = ["round", "pair", "selected"] + [f"{NAMES[r] if r != 'lada' else 'LaDa filter'}" for r in sel] + [
        "random over D_p", "labelled of D_p"]
    out = ["### Matched selectors: the oracle's correctable / harmful shares of each selection (mean over seeds)", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    summary["controls"]["selector_shares"] = {}
    for (t, pair), rows in sorted(cells["lada"].items()):
        row = {r: (share(cells[r].get((t, pair), []), "shares", "correctable"),
                   share(cells[r].get((t, pair), []), "shares", "harmful")) for r in sel}
        base = (share(rows, "random_shares", "correctable"), share(rows, "random_shares", "harmful"))
        summary["controls"]["selector_shares"][f"{t} {pair}"] = {**row, "random_over_dp": base}
        out.append(f"| {t} | {pair} | {nanmean(r['selected'] for r in rows):.0f} | "
                   + " | ".join(f"{f2(c)} / {f2(h)}" for c, h in row.values())
                   + f" | {f2(base[0])} / {f2(base[1])} | {nanmean(r['random_labelled'] for r in rows):.0f} |")
    return out + [""]


def auc_lines(runs: dict, seeds: list[int], summary: dict) -> list[str]:
    """Reward AUCs per (round, pair): LaDa's r_total and the filter's predicted reward U^p, correctable against
    harmful and against every other label, with the real teacher (LaDa) and with the gold one (its harmful set is
    empty: the chosen answer is never wrong)."""
    head = ["round", "pair", "correctable / harmful (n)", "r_total vs harmful", "U^p vs harmful", "r_total vs rest",
            "U^p vs rest", "gold: correctable (n)", "gold: r_total vs rest", "gold: U^p vs rest"]
    out = ["### Reward AUC: correctable samples against harmful ones, and against the rest (mean over seeds; "
           "0.5 = no separation)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    real = by_cell(runs, "lada", seeds, "reward_auc")
    gold = by_cell(runs, "lada-gold", seeds, "reward_auc") if "lada-gold" in runs else {}
    summary["controls"]["reward_auc"] = {}
    for (t, pair), rows in sorted(real.items()):
        g = gold.get((t, pair), [])
        m = {k: nanmean(r[k] for r in rows) for k in ("correctable", "harmful", "auc_r_total", "auc_predicted",
                                                      "auc_r_total_rest", "auc_predicted_rest")}
        mg = {k: nanmean(r[k] for r in g) for k in ("correctable", "auc_r_total_rest", "auc_predicted_rest")}
        summary["controls"]["reward_auc"][f"{t} {pair}"] = {"real": m, "gold": mg}
        out.append(f"| {t} | {pair} | {m['correctable']:.0f} / {m['harmful']:.0f} | {f2(m['auc_r_total'])} | "
                   f"{f2(m['auc_predicted'])} | {f2(m['auc_r_total_rest'])} | {f2(m['auc_predicted_rest'])} | "
                   + ("–" if mg["correctable"] != mg["correctable"] else f"{mg['correctable']:.0f}")
                   + f" | {f2(mg['auc_r_total_rest'])} | {f2(mg['auc_predicted_rest'])} |")
    return out + [""]


def correctable(rows: list[dict], key: str) -> float:
    """Mean over seeds of the oracle's correctable share (`shares` of the selection, `random_shares` of a
    random one); NaN where a run has none (no labelled sample, or results from before the labels)."""
    return statistics.mean(r.get(key, {}).get("correctable", float("nan")) for r in rows)


def claims(summary: dict, names: list[str], methods: list[str]) -> list[str]:
    acc = summary["accuracy"]
    clients = [n for n in names if n != "server"]
    out = []

    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    if "standalone" in methods:
        ahead = {n: statistics.mean(acc[f"{n} 0-shot"]["lada"]) > statistics.mean(acc[f"{n} 0-shot"]["standalone"])
                 for n in clients}
        out.append(f"- LaDa ahead of Standalone on every client (0-shot means): {mark(all(ahead.values()))} "
                   f"({', '.join(f'{n}: {mark(v)}' for n, v in ahead.items())})")
    if "fedkd" in methods:
        lada = statistics.mean(statistics.mean(acc[f"{n} 0-shot"]["lada"]) for n in clients)
        fedkd = statistics.mean(statistics.mean(acc[f"{n} 0-shot"]["fedkd"]) for n in clients)
        out.append(f"- LaDa at least level with FedKD on the clients' average: {mark(lada >= fedkd)} "
                   f"({100 * lada:.1f} vs {100 * fedkd:.1f})")
    s_final = statistics.mean(acc["server 0-shot"]["lada"])
    s_0 = statistics.mean(acc["server 0-shot"]["round0"])
    out.append(f"- the server ends no lower than its round 0: {mark(s_final >= s_0)} ({100 * s_final:.1f} vs {100 * s_0:.1f})")
    later = [rows for key, rows in summary.get("selection_quality", {}).items() if int(key.split()[0]) > 1]
    above = [statistics.mean(r["precision"] for r in rows) > statistics.mean(r["random_precision"] for r in rows)
             for rows in later]
    out.append(f"- the filter's precision above random for every pair after round 1: {mark(bool(above) and all(above))} "
               f"({sum(above)} of {len(above)} (round, pair))")
    more = [correctable(rows, "shares") > correctable(rows, "random_shares") for rows in later]
    out.append(f"- the filter's correctable share above random for every pair after round 1: "
               f"{mark(bool(more) and all(more))} ({sum(more)} of {len(more)} (round, pair))")
    return out


if __name__ == "__main__":
    main()
