"""Precondition e's probe: can the demo world's server learn the clients' domains from their answers at all?

    python -m benchmarks.demo_server_probe [--seed 0] [--recipes 2e-5:1 1e-4:3 ...] [--loss sft|mard]
        [--mard-nll X] [--max-steps L] [--conf demo.yaml] [--out FILE] [overrides ...]

For one seed, the clients answer D_p zero-shot; the server is trained (from its pre-trained weights each
time) on the clients' correct answers to public samples of their own domains (precondition e's data), once per
recipe lr:epochs, and its strict zero-shot accuracy on each client domain's test items and on the shared ones
(the run's union) is measured before and after. `--loss sft` (the default) is precondition e's fine-tuning;
`--loss mard` trains the same samples with the server's MARD loss (Eq. 4 at the config's `lada` settings:
the client's correct answer chosen over the server's own answer, the pre-trained server as the frozen
reference, uniform weights), which asks whether the server's loss can learn from the cleanest pairs LaDa's
server could select. `--max-steps 2` keeps the samples of at most two steps, the chains the clients were
taught (on longer ones a client's right letter is mostly a guess over a false chain). Config overrides (such as
`server.model.lora.enabled=true`) apply to the run's config. Writes benchmarks/results/demo_server_probe.json
(or --out).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from benchmarks.demo_arithmetic import answer_faults
from benchmarks.demo_preconditions import OUT, _own_domain, answers, mean, restored, right, sft, strict_eval
from ladalit.core.config import load_config
from ladalit.core.experiment import build_experiment, prepared_records
from ladalit.core.prompts import zero_shot_prompt
from ladalit.core.training import NonFiniteGuard
from ladalit.demo.synthetic import SHARED_DOMAIN, num_steps
from ladalit.method.distill import distill_step


def own_domain_pairs(public, y_k: dict[str, list[str]], y_s: list[str], own: dict[str, str],
                     max_steps: int | None = None):
    """Precondition e's samples with both answers: (record, the client's correct answer, the server's answer)
    for each client's correct answers to public samples of its own domain (of at most `max_steps` steps)."""
    return [(x, y, ys) for k, ys_k in y_k.items() for x, y, ys in zip(public, ys_k, y_s)
            if x.domain == own[k] and right(y, x) and (max_steps is None or num_steps(x) <= max_steps)]


def lesson_faults(pairs) -> dict[int, list[int]]:
    """Per chain length: [lessons, lessons whose chain has a false equation or comparison] (a right letter
    over a false chain is a guess)."""
    out: dict[int, list[int]] = {}
    for x, y, _ in pairs:
        n = out.setdefault(num_steps(x), [0, 0])
        n[0] += 1
        n[1] += any(answer_faults(y))
    return dict(sorted(out.items()))


def mard(exp, server, pairs, epochs: int, seed: int, lr: float, lada) -> None:
    """`epochs` passes of the server's MARD (Eq. 4, uniform weights) over `pairs`, minibatches of its
    train.batch_size in a seeded order, AdamW at `lr`, the current weights as the frozen reference."""
    server.freeze_reference()
    opt = server.configure_optimizers(lr=lr)
    optimizer = exp.fabric.setup_optimizers(opt)
    guard = NonFiniteGuard(exp.cfg.on_nonfinite)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    size = server.train_cfg.batch_size
    for e in range(epochs):
        for b in range(0, len(order), size):
            rows = [pairs[i] for i in order[b:b + size]]
            distill_step(lada, exp.fabric, server, optimizer, guard, e, b // size,
                         keys=[("probe", x.id) for x, _, _ in rows], prompts=[zero_shot_prompt(x) for x, _, _ in rows],
                         chosen=[y for _, y, _ in rows], rejected=[ys for _, _, ys in rows], measure_after=False)
    server.clear_reference_cache()
    server.ref_model, server.reference_frozen = None, False


def main(argv: list[str] | None = None, command: str | None = None) -> dict:
    """`command`: the command line the results file quotes (default: this script's, with `argv`)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipes", nargs="+", default=["2e-5:1", "1e-4:3", "3e-4:3", "1e-3:3", "1e-3:6"])
    ap.add_argument("--loss", choices=("sft", "mard"), default="sft")
    ap.add_argument("--mard-nll", type=float, default=None,
                    help="lada.mard_nll for --loss mard (default: the config's)")
    ap.add_argument("--max-steps", type=int, default=None, help="only the samples of at most this many steps")
    ap.add_argument("--conf", default="demo.yaml")
    ap.add_argument("--out", default=str(OUT / "demo_server_probe.json"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    cfg = load_config([f"conf={args.conf}", f"seed={args.seed}", "tracking.wandb.mode=disabled", *args.overrides]
                      + ([] if args.mard_nll is None else [f"lada.mard_nll={args.mard_nll}"]))
    lada = cfg.lada
    exp = build_experiment(cfg)
    truth = {r.id: r for r in prepared_records(cfg)}
    names = list(exp.clients)
    tests = {k: exp.data.clients[i].test for i, k in enumerate(names)}
    own = {k: _own_domain(tests[k], truth) for k in names}
    union = [x for k in names for x in tests[k]]
    items = {own[k]: [x for x in union if truth[x.id].domain == own[k]] for k in names}
    items[SHARED_DOMAIN] = [x for x in union if truth[x.id].domain == SHARED_DOMAIN]
    public = [truth[x.id] for x in exp.data.public]
    s = exp.server
    pairs = own_domain_pairs(public, {k: answers(exp, exp.clients[k], public) for k in names},
                             answers(exp, s, public), own, args.max_steps)
    prompts, lessons = [zero_shot_prompt(x) for x, _, _ in pairs], [y for _, y, _ in pairs]
    faulty = lesson_faults(pairs)
    before = {d: mean(strict_eval(exp, s, xs)[1]) for d, xs in items.items()}
    print(json.dumps({"before": before, "pairs": len(pairs), "faulty": faulty}), flush=True)
    rows = []
    for recipe in args.recipes:
        lr, epochs = recipe.split(":")
        t0 = time.perf_counter()
        with restored(s):
            if args.loss == "sft":
                sft(exp, s, prompts, lessons, int(epochs), args.seed + 9, lr=float(lr))
            else:
                mard(exp, s, pairs, int(epochs), args.seed + 9, float(lr), lada)
            after = {d: mean(strict_eval(exp, s, xs)[1]) for d, xs in items.items()}
        rows.append({"lr": float(lr), "epochs": int(epochs), "after": after, "seconds": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)
    out = {"seed": args.seed, "loss": args.loss, "max_steps": args.max_steps, "overrides": args.overrides,
           "lada": OmegaConf.to_container(lada), "pairs": len(pairs),
           "faulty": faulty, "before": before, "rows": rows,
           "date": time.strftime("%Y-%m-%d"),
           "command": command or "python -m benchmarks.demo_server_probe "
           + " ".join(sys.argv[1:] if argv is None else argv)}
    Path(args.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
