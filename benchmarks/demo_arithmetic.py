"""Whether the demo world's clients still do the arithmetic they were pre-trained to do, round by round.

    python -m benchmarks.demo_arithmetic RUN_DIR [RUN_DIR ...] [--pairs] [--out FILE.md]

A client's answer writes a chain of equations ("16-6=10. 10*2=20.") and then sets the options against its result
("(A) 5 vs 20 no."). Whether each equation and each comparison is true does not depend on the question: it is
a skill the pre-trained clients have, which no method should take away. For each run directory (its config.yaml
and predictions.jsonl) and each client and evaluated round: the share of zero-shot test answers with a false
equation, the share with a false comparison, and the strict accuracy.

`--pairs` (LaDa runs): what the client's MARD loss pushed down. Over the client's selected samples (selections.jsonl,
its answers y^k in responses.jsonl) where y^k differs from y^s, the share of y^k's equations after the first
character where the two differ that are arithmetically true. y^s is read back only for the gold teacher
(`analysis.gold_teacher`: the records' gold rationales, rebuilt from the config); a run with the server as teacher
keeps no copy of the server's answers on the client's side.
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

from benchmarks.common import report

EQUATION = re.compile(r"(-?\d+)([-+*/])(-?\d+)=(-?\d+)")
COMPARISON = re.compile(r"\(\w\) (-?\d+) vs (-?\d+) (yes|no)")


def equation_true(a: str, op: str, b: str, c: str) -> bool:
    """`a op b = c` in the demo world's integer arithmetic (division exact or floored, as its chains use it)."""
    x, y, z = int(a), int(b), int(c)
    value = {"+": x + y, "-": x - y, "*": x * y, "/": x // y if y else None}[op]
    return value == z


def answer_faults(text: str) -> tuple[bool, bool]:
    """(a false equation, a false comparison) in one answer."""
    eq = any(not equation_true(*m.groups()) for m in EQUATION.finditer(text))
    cmp = any((x == y) != (w == "yes") for x, y, w in COMPARISON.findall(text))
    return eq, cmp


def fault_rows(preds: list[dict]) -> list[dict]:
    """Rows {participant, round, n, false_equation, false_comparison, strict} of the clients' zero-shot answers."""
    cells: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for p in preds:
        if p["shots"] != 0 or p["participant"] == "server":
            continue
        eq, cmp = answer_faults(p["text"])
        c = cells[(p["participant"], p["round"])]
        c[0] += 1
        c[1] += eq
        c[2] += cmp
        c[3] += p["stated"] == p["gold"]
    return [{"participant": k, "round": t, "n": c[0], "false_equation": c[1] / c[0], "false_comparison": c[2] / c[0],
             "strict": c[3] / c[0]} for (k, t), c in sorted(cells.items())]


def true_after_difference(chosen: str, rejected: str) -> tuple[int, int]:
    """(true, all) equations of `rejected` from the one holding the first character where it parts from `chosen`."""
    d = next((j for j, (a, b) in enumerate(zip(chosen, rejected)) if a != b), min(len(chosen), len(rejected)))
    if d >= len(rejected):  # the same answer, or the rejected one stops where the chosen one goes on
        return 0, 0
    start = rejected.rfind(" ", 0, d) + 1
    found = [equation_true(*m.groups()) for m in EQUATION.finditer(rejected, start)]
    return sum(found), len(found)


def pair_rows(run_dir: Path) -> list[dict]:
    """Per (round, client) of a gold-teacher LaDa run: selected samples, those whose y^k differs from the gold y^s,
    and the true share of y^k's equations after the first difference."""
    import ladalit.components  # noqa: F401  registers the synthetic data set
    from ladalit.core.config import load_config
    from ladalit.core.experiment import prepared_records
    from ladalit.demo.controls import gold_response

    cfg = load_config([f"conf={run_dir / 'config.yaml'}"])
    if not cfg.analysis.gold_teacher:
        raise SystemExit(f"{run_dir}: --pairs reads y^s back only under analysis.gold_teacher")
    records = {r.id: r for r in prepared_records(cfg)}
    answers = {}
    for line in (run_dir / "responses.jsonl").read_text().splitlines():
        r = json.loads(line)
        answers[(r["round"], r["participant"], r["id"])] = r["text"]
    cells: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for line in (run_dir / "selections.jsonl").read_text().splitlines():
        s = json.loads(line)
        learner, teacher = s["pair"].split("<-")
        if teacher != "server":
            continue
        for i in s["ids"]:
            chosen, rejected = gold_response(records[i]).strip(), answers[(s["round"], learner, i)].strip()
            c = cells[(s["round"], learner)]
            c[0] += 1
            if chosen != rejected:
                true, n = true_after_difference(chosen, rejected)
                c[1], c[2], c[3] = c[1] + 1, c[2] + true, c[3] + n
    return [{"round": t, "participant": k, "selected": c[0], "differing": c[1], "equations_after": c[3],
             "true_after": c[2] / c[3] if c[3] else float("nan")} for (t, k), c in sorted(cells.items())]


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--pairs", action="store_true", help="also what the client's MARD loss pushed down (gold teacher)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    lines = ["| run | client | round | n | false equation | false comparison | strict |", "|---|---|---|---|---|---|---|"]
    for run in args.runs:
        preds = [json.loads(line) for line in (Path(run) / "predictions.jsonl").read_text().splitlines()]
        lines += [f"| {Path(run).name} | {r['participant']} | {r['round']} | {r['n']} | {100 * r['false_equation']:.0f} | "
                  f"{100 * r['false_comparison']:.0f} | {100 * r['strict']:.1f} |" for r in fault_rows(preds)]
    if args.pairs:
        lines += ["", "| run | round | client | selected | y^k differs | its equations after the difference | true |",
                  "|---|---|---|---|---|---|---|"]
        for run in args.runs:
            lines += [f"| {Path(run).name} | {r['round']} | {r['participant']} | {r['selected']} | {r['differing']} | "
                      f"{r['equations_after']} | {100 * r['true_after']:.0f} |" for r in pair_rows(Path(run))]
    return report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
