"""Precondition e's probe: can the demo world's server learn the clients' domains from their answers at all?

    python -m benchmarks.demo_server_probe [--seed 0] [--recipes 2e-5:1 1e-4:3 ...]

For one seed, the clients answer D_p zero-shot; the server is fine-tuned (from its pre-trained weights each
time) on the clients' correct answers to public samples of their own domains (precondition e's data), once per
recipe lr:epochs, and its strict zero-shot accuracy on each client domain's test items (the run's union) is
measured before and after. Writes benchmarks/results/demo_server_probe.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.demo_preconditions import (OUT, _own_domain, answers, mean, own_domain_lessons, restored, sft,
                                           strict_eval)
from ladalit.core.config import load_config
from ladalit.core.experiment import build_experiment, prepared_records


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipes", nargs="+", default=["2e-5:1", "1e-4:3", "3e-4:3", "1e-3:3", "1e-3:6"])
    ap.add_argument("--out", default=str(OUT / "demo_server_probe.json"))
    args = ap.parse_args(argv)
    cfg = load_config(["conf=demo.yaml", f"seed={args.seed}", "tracking.wandb.mode=disabled"])
    exp = build_experiment(cfg)
    truth = {r.id: r for r in prepared_records(cfg)}
    names = list(exp.clients)
    tests = {k: exp.data.clients[i].test for i, k in enumerate(names)}
    own = {k: _own_domain(tests[k], truth) for k in names}
    union = [x for k in names for x in tests[k]]
    items = {k: [x for x in union if truth[x.id].domain == own[k]] for k in names}
    public = [truth[x.id] for x in exp.data.public]
    prompts, lessons = own_domain_lessons(public, {k: answers(exp, exp.clients[k], public) for k in names}, own)
    s = exp.server
    before = {own[k]: mean(strict_eval(exp, s, items[k])[1]) for k in names}
    rows = []
    for recipe in args.recipes:
        lr, epochs = recipe.split(":")
        t0 = time.perf_counter()
        with restored(s):
            sft(exp, s, prompts, lessons, int(epochs), args.seed + 9, lr=float(lr))
            after = {own[k]: mean(strict_eval(exp, s, items[k])[1]) for k in names}
        rows.append({"lr": float(lr), "epochs": int(epochs), "after": after, "seconds": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)
    out = {"seed": args.seed, "pairs": len(prompts), "before": before, "rows": rows,
           "date": time.strftime("%Y-%m-%d"),
           "command": "python -m benchmarks.demo_server_probe " + " ".join(sys.argv[1:] if argv is None else argv)}
    Path(args.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
