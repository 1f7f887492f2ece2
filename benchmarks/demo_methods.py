"""The demo world's verdict: Standalone, FedKD and LaDa over seeds, judged on the paper's claims.

    python -m benchmarks.demo_methods [--seeds 0 1 2] [--methods standalone fedkd lada] [key=value ...]

Runs `conf/demo.yaml` once per (method, seed) (a run whose results.json has its last round is reused;
the runs go to benchmarks/results/demo_runs/), then writes benchmarks/results/demo_methods.{json,md}:

- accuracy per participant, 0- and 1-shot, lenient and strict (SPEC §7: only an answer statement counts),
  mean ± std over the seeds: round 0 (the pre-trained models) and each method's last round;
- LaDa − baseline per participant, lenient and strict, with a paired 95% interval that resamples the seeds,
  then the test items within each (`ladalit.reporting.stats.paired_bootstrap`; a seed fixes the split, so
  both methods saw the same items; with one seed the interval covers the items only, and says so);
- the oracle's selection precision of LaDa's filters per pair and round against a random selection of
  the same size, how often the chosen answers were right, and the share of the selection labelled
  correctable against a random selection's (`ladalit.demo.oracle`);
- the server's accuracy per domain at round 0 and after the last round, with each method;
- the paper's claims, each marked met or not: LaDa ahead of Standalone on every client, at least level
  with FedKD on average over the clients, the server no lower than its round 0, and the filter's
  precision above random for every pair after round 1, and its correctable share above random for every
  pair after round 1.
Extra arguments are config overrides for every run (e.g. `rounds=2`).
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from ladalit.core.config import load_config
from ladalit.reporting.stats import interval_kind, paired_bootstrap
from ladalit.run import execute

OUT = Path(__file__).resolve().parent / "results"
NAMES = {"standalone": "Standalone", "fedkd": "FedKD", "lada": "LaDa"}


def run_cell(method: str, seed: int, overrides: list[str], runs_dir: Path, conf: str = "demo.yaml"
             ) -> tuple[dict, list[dict]]:
    """(results.json, predictions) of one run, reusing a finished one."""
    name = f"{method}-seed{seed}"
    cfg = load_config([f"conf={conf}", f"method={method}", f"seed={seed}", f"output_dir={runs_dir}",
                       f"run_name={name}", "tracking.wandb.mode=disabled", "overwrite=true", *overrides])
    run_dir = runs_dir / name
    done = run_dir / "results.json"
    finished = done.exists() and any(r["round"] == cfg.rounds for r in json.loads(done.read_text())["accuracy"])
    if not finished:
        execute(cfg, quiet=True)  # overwrite=true: an unfinished run of that name starts afresh
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    return json.loads(done.read_text()), preds


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


def gain_intervals(runs: dict, base: str, shots: int, kind: str = "lenient") -> dict[str, tuple[float, float, float]]:
    """participant -> (mean, low, high) of LaDa − base in points, paired over the same items per seed."""
    out = {}
    seeds = sorted(runs["lada"])
    names = sorted({p for s in seeds for p in correct_by_item(runs["lada"][s][1], last_round(runs["lada"][s][0]), shots)})
    for n in names:
        diffs = []
        for s in seeds:
            lada = correct_by_item(runs["lada"][s][1], last_round(runs["lada"][s][0]), shots, kind)[n]
            other = correct_by_item(runs[base][s][1], last_round(runs[base][s][0]), shots, kind)[n]
            diffs.append([lada[i] - other[i] for i in sorted(lada) if i in other])
        m, lo, hi = paired_bootstrap(diffs)
        out[n] = (100 * m, 100 * lo, 100 * hi)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(NAMES), choices=list(NAMES))
    ap.add_argument("--runs-dir", default=str(OUT / "demo_runs"))
    ap.add_argument("--conf", default="demo.yaml", help="the world (smoke.yaml: a check of this script)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    runs_dir = Path(args.runs_dir)
    runs = {m: {s: run_cell(m, s, args.overrides, runs_dir, args.conf) for s in args.seeds} for m in args.methods}
    first = runs[args.methods[0]]
    names = list(accuracy_at(first[args.seeds[0]][0], 0, 0))
    lines, summary = [], {"seeds": args.seeds, "overrides": args.overrides, "accuracy": {}, "gain": {}}
    for shots in (0, 1):
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
        lines += ["", "### The paper's claims on this world", ""] + claims(summary, names, args.methods)
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_methods.md").write_text(text + "\n")
    (out / "demo_methods.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


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
