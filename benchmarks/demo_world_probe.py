"""Probe a candidate demo world: the preconditions with some zoo members' specs changed.

    python -m benchmarks.demo_world_probe --variants JSON --cache DIR [--then preconditions|server_probe]
        [the arguments of benchmarks.demo_preconditions, or of benchmarks.demo_server_probe ...]

JSON maps a zoo member to the changes of its spec (`ladalit.demo.zoo.ZooMember`):
`{"client-llama": {"steps": 3000, "partial": [[3, 0.2], [4, 0.1]]}}` pre-trains client-llama for 3000 steps
with a fifth of the shared 3-step and a tenth of the shared 4-step records taught with their rationale
(`partial_steps`); an entry `[domain, steps, share]` names another domain, and `"max_steps": 1` shortens
the curriculum (`rationale_max_steps`), so that `{"max_steps": 1, "partial": [["market", 2, 1.0], [2, 0.3]]}`
teaches every 2-step market record and a third of the shared 2-step ones; `hidden_size`, `num_layers`,
`num_heads`, `num_kv_heads` and `intermediate_size` resize the member (`{"server": {"hidden_size": 256, ...}}`).
A changed member is pre-trained once into DIR (the shipped weights are never touched), then
`benchmarks.demo_preconditions` measures a-e with every other argument (seeds, `--out`, `--name`, config
overrides such as `clients.client1.train.lr=3e-4`), or with `--then server_probe` `benchmarks.demo_server_probe`
trains the server on precondition e's samples under the recipes and loss it is given. A candidate becomes the
demo world only by changing `ladalit/demo/zoo.py` and shipping it (`python -m ladalit.demo.zoo --ship`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys

import torch


SIZES = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size")


def variant(member, change: dict):
    """`member` with the changes of one JSON entry: "steps" (pre-training steps), "max_steps" (the curriculum's
    longest fully taught chain), "partial" ([[steps, share], ...] of the shared domain, or [domain, steps,
    share] of another) and the model's sizes (SIZES)."""
    from ladalit.demo.synthetic import SHARED
    unknown = set(change) - {"steps", "max_steps", "partial", *SIZES}
    if unknown:
        raise SystemExit(f"--variants {member.name}: unknown change {sorted(unknown)} "
                         f"(steps, max_steps, partial, {', '.join(SIZES)})")
    member = dataclasses.replace(member, **{k: int(v) for k, v in change.items() if k in SIZES})
    if "partial" in change:
        entries = [e if len(e) == 3 else [SHARED, *e] for e in change["partial"]]
        member = dataclasses.replace(member, partial_steps=tuple((str(d), int(n), float(f)) for d, n, f in entries))
    if "max_steps" in change:
        member = dataclasses.replace(member, rationale_max_steps=int(change["max_steps"]))
    if "steps" in change:
        member = dataclasses.replace(member, train=dataclasses.replace(member.train, steps=int(change["steps"])))
    return member


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", required=True, help="JSON: member -> {steps, max_steps, partial, hidden_size, ...}")
    ap.add_argument("--cache", required=True, help="where the changed members are pre-trained (LADALIT_CACHE)")
    ap.add_argument("--then", choices=("preconditions", "server_probe"), default="preconditions")
    args, rest = ap.parse_known_args(argv)
    os.environ["LADALIT_CACHE"] = args.cache
    from ladalit.demo import zoo
    for name, change in json.loads(args.variants).items():
        if name not in zoo.ZOO:
            raise SystemExit(f"--variants: no zoo member {name!r} ({', '.join(zoo.ZOO)})")
        zoo.ZOO[name] = variant(zoo.ZOO[name], change)
    quoted = shlex.join(argv if argv is not None else sys.argv[1:])
    command = f"python -m benchmarks.demo_world_probe {quoted}"
    if args.then == "server_probe":
        from benchmarks import demo_server_probe
        return demo_server_probe.main(rest, command=command)
    from benchmarks import demo_preconditions
    return demo_preconditions.main(rest, command=command)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1:])
