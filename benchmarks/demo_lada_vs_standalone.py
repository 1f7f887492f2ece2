"""Issue "proving ground": Standalone vs LaDa on the demo world, 3 seeds.

    python -m benchmarks.demo_lada_vs_standalone [--seeds 0 1 2] [key=value ...]

Runs `conf/demo.yaml` with method=standalone and method=lada per seed (runs are
reused when their results.json is complete), then writes a table per client and
server: mean ± std zero-shot accuracy after the last round, and LaDa − Standalone;
plus LaDa's selected-set sizes per model pair and round (the learnability gap).
Output: benchmarks/results/demo_lada_vs_standalone.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from ladalit.core.config import load_config
from ladalit.run import execute

OUT = Path(__file__).resolve().parent / "results"


def run_cell(method: str, seed: int, overrides: list[str], runs_dir: Path) -> dict:
    name = f"{method}-seed{seed}"
    cfg = load_config(["conf=demo.yaml", f"method={method}", f"seed={seed}", f"output_dir={runs_dir}",
                       f"run_name={name}", "tracking.wandb.mode=disabled", "overwrite=true", *overrides])
    done = runs_dir / name / "results.json"
    if done.exists():
        saved = json.loads(done.read_text())
        if any(r["round"] == cfg.rounds for r in saved["accuracy"]):
            return saved
    return execute(cfg, quiet=True)[1]  # overwrite=true: an unfinished run of that name starts afresh


def final_accuracy(results: dict, shots: int = 0) -> dict[str, float]:
    last = max(r["round"] for r in results["accuracy"])
    return {r["participant"]: r["accuracy"] for r in results["accuracy"] if r["round"] == last and r["shots"] == shots}


def mean_std(xs: list[float]) -> str:
    return f"{100 * statistics.mean(xs):.1f} ± {100 * (statistics.stdev(xs) if len(xs) > 1 else 0.0):.1f}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs-dir", default=str(OUT / "demo_runs"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    runs_dir = Path(args.runs_dir)
    acc = {m: [] for m in ("standalone", "lada")}
    selected = {}
    for seed in args.seeds:
        for method in acc:
            res = run_cell(method, seed, args.overrides, runs_dir)
            acc[method].append(final_accuracy(res))
            if method == "lada":
                selected[seed] = {f"{s['pair']} r{s['round']}": s["selected"] for s in res["selected_per_round"]}
    names = list(acc["lada"][0])
    lines = ["| participant | Standalone (0-shot %) | LaDa (0-shot %) | LaDa − Standalone (points) |", "|---|---|---|---|"]
    rows = {}
    for n in names:
        s = [a[n] for a in acc["standalone"]]
        l_ = [a[n] for a in acc["lada"]]
        diff = 100 * (statistics.mean(l_) - statistics.mean(s))
        rows[n] = {"standalone": s, "lada": l_, "diff_points": diff}
        lines.append(f"| {n} | {mean_std(s)} | {mean_std(l_)} | {diff:+.1f} |")
    pairs = sorted({p for v in selected.values() for p in v})
    lines += ["", "LaDa selected samples per model pair and round (per seed):", "",
              "| pair, round | " + " | ".join(f"seed {s}" for s in selected) + " |",
              "|---|" + "---|" * len(selected)]
    lines += [f"| {p} | " + " | ".join(str(selected[s].get(p, 0)) for s in selected) + " |" for p in pairs]
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "demo_lada_vs_standalone.md").write_text(text + "\n")
    out = {"seeds": args.seeds, "overrides": args.overrides, "accuracy": rows, "selected": selected}
    (OUT / "demo_lada_vs_standalone.json").write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
