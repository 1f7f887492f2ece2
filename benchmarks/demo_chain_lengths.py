"""How long the chains are that the demo world's clients write, against the chains their questions need.

    python -m benchmarks.demo_chain_lengths RUN_DIR [RUN_DIR ...] [--round N] [--out FILE.md]

For each run directory of the demo world (its config.yaml and predictions.jsonl) and each client, per chain length
L of the test items (the number of operations the question states, `ladalit.demo.synthetic.num_steps`): the share
of zero-shot answers whose chain of equations (before the option check "(A) ...") is longer than L, the share
shorter than L, and the strict accuracy. `--round` picks the evaluation (default: the run's last; 0: the
pre-trained models). Answers are read from the run's predictions; the records are rebuilt from its config.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from benchmarks.common import report

import ladalit.components  # noqa: F401  registers the synthetic data set
from ladalit.core.config import load_config
from ladalit.core.experiment import prepared_records
from ladalit.demo.synthetic import num_steps


def chain_length(text: str) -> int:
    """The number of equations an answer writes before it sets the options against its result."""
    return text.split("(A)", 1)[0].count("=")


def length_rows(preds: list[dict], steps_of: dict[str, int], round: int) -> list[dict]:
    """Rows {participant, steps, n, longer, shorter, strict} of the clients' zero-shot answers of one round."""
    cells: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for p in preds:
        if p["round"] != round or p["shots"] != 0 or p["participant"] == "server" or p["id"] not in steps_of:
            continue
        n, got = steps_of[p["id"]], chain_length(p["text"])
        c = cells[(p["participant"], n)]
        c[0] += 1
        c[1] += got > n
        c[2] += got < n
        c[3] += p["stated"] == p["gold"]
    return [{"participant": k, "steps": n, "n": c[0], "longer": c[1] / c[0], "shorter": c[2] / c[0],
             "strict": c[3] / c[0]} for (k, n), c in sorted(cells.items())]


def run_rows(run_dir: Path, round: int | None = None) -> tuple[int, list[dict]]:
    cfg = load_config([f"conf={run_dir / 'config.yaml'}"])
    steps_of = {r.id: num_steps(r) for r in prepared_records(cfg)}
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    t = max(p["round"] for p in preds) if round is None else round
    return t, length_rows(preds, steps_of, t)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--round", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    lines = ["| run | round | client | steps | n | longer | shorter | strict |", "|---|---|---|---|---|---|---|---|"]
    for run in args.runs:
        t, rows = run_rows(Path(run), args.round)
        lines += [f"| {Path(run).name} | {t} | {r['participant']} | {r['steps']} | {r['n']} | {100 * r['longer']:.0f} | "
                  f"{100 * r['shorter']:.0f} | {100 * r['strict']:.0f} |" for r in rows]
    return report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
