"""Two finished LaDa runs on the demo world side by side, per (round, pair): what the filter learned from its
rewards and what it selected; per participant: zero-shot accuracy, lenient and strict. Written for the
fidelity fix of Eq. 6 and Eq. 9 (a run before it against one after it, same config and seed).

    python -m benchmarks.fidelity_compare BEFORE_RUN_DIR AFTER_RUN_DIR [--out FILE.md]

Per (round, pair): the selected fraction of the candidates; r_total's AUC for the oracle's "useful" and for
"the two answers' letters differ" (`benchmarks.demo_rewards`, which also writes each run's rewards.json);
the oracle precision of the selection against a random one of the same size (results.json
`selection_quality`); the mean exploration term λ·U^q over the scored candidates; on the server side, the
spread of w_k on shared samples (min, max, mean H(w)/log n; "-" where the run predates it). Accuracy from
predictions.jsonl: lenient = the parser's letter, strict = an answer statement ("stated").
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import demo_rewards


def _rows(run: Path) -> dict:
    res = json.loads((run / "results.json").read_text())
    rewards = {(r["round"], r["pair"]): r for r in demo_rewards.main([str(run)])["rows"]}
    quality = {(r["round"], r["pair"]): r for r in res.get("selection_quality", [])}
    scale = {(r["round"], r["pair"]): r for r in res.get("reward_scale", [])}
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    acc: dict = {}
    for p in preds:
        if p["shots"] == 0:
            a = acc.setdefault((p["round"], p["participant"]), [0, 0, 0])
            a[0] += p["parsed"] == p["gold"]
            a[1] += p["stated"] == p["gold"]
            a[2] += 1
    return {"rewards": rewards, "quality": quality, "scale": scale, "acc": acc}


def _f(v, fmt=".2f") -> str:
    return "-" if v is None or v != v else format(v, fmt)


def table(before: dict, after: dict) -> str:
    keys = sorted(set(before["scale"]) | set(after["scale"]))
    head = ["round", "pair", "run", "selected", "AUC useful", "AUC differ", "precision", "random", "λ·U^q",
            "w_min", "w_max", "H(w)/log n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in keys:
        for name, run in (("before", before), ("after", after)):
            s, r, q = run["scale"].get(k, {}), run["rewards"].get(k, {}), run["quality"].get(k, {})
            lines.append("| " + " | ".join([str(k[0]), k[1], name, _f(s.get("selected_fraction")),
                                            _f(r.get("auc_useful")), _f(r.get("auc_differ")), _f(q.get("precision")),
                                            _f(q.get("random_precision")), _f(s.get("explore_mean"), ".4f"),
                                            _f(s.get("w_min"), ".3f"), _f(s.get("w_max"), ".3f"),
                                            _f(s.get("w_entropy_ratio"), ".3f")]) + " |")
    lines += ["", "| round | participant | before lenient | before strict | after lenient | after strict |",
              "|---|---|---|---|---|---|"]
    for k in sorted(set(before["acc"]) | set(after["acc"])):
        cells = []
        for run in (before, after):
            a = run["acc"].get(k)
            cells += [_f(a[0] / a[2], ".3f"), _f(a[1] / a[2], ".3f")] if a else ["-", "-"]
        lines.append(f"| {k[0]} | {k[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    text = table(_rows(Path(args.before)), _rows(Path(args.after)))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
