"""Reference cost: forward passes of the frozen reference, and the memory its weights take.

    python -m benchmarks.reference_cost [--quick] [--rounds 2]

1. Passes. A LaDa run on conf/smoke.yaml with `Participant.reference_pair_logprobs`
   wrapped to record every key it is asked for. A key is (round, sample) on a client and
   (round, client k, sample) on the server (the server scores each client's answer).
   Target: `reference_passes` (the participant's own counter) = number of distinct keys,
   i.e. one reference forward per (round, participant, sample), although every key is
   requested twice per update (loss before and after the step).
2. Memory. Bytes of every distinct tensor (parameters and buffers) a participant holds,
   its reference model included, before and after `freeze_reference()`. LoRA: the
   reference is the base ("server") or base+"sft" adapter ("client"): 0 extra bytes.
   Without LoRA: a frozen deep copy, one model's worth of extra bytes.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import torch

from benchmarks.common import table, write_result
from benchmarks.run import add_common_args, fmt_bytes, load, run_method, setup, summary_row


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of the distinct storages behind the parameters and buffers of `module` (tied weights once)."""
    seen, total = set(), 0
    for t in [*module.parameters(), *module.buffers()]:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
    return total


def participant_bytes(p) -> int:
    return tensor_bytes(p.model) + (tensor_bytes(p.ref_model) if p.ref_model is not None else 0)


def measure_passes(cfg) -> list[dict]:
    from ladalit.core.participant import Participant
    requested: dict[str, list] = defaultdict(list)
    orig = Participant.reference_pair_logprobs

    def recording(self, keys, *a, **k):
        requested[self.name].extend(keys)
        return orig(self, keys, *a, **k)

    Participant.reference_pair_logprobs = recording
    try:
        rec = run_method(cfg)
    finally:
        Participant.reference_pair_logprobs = orig
    rows = []
    for name, p in [("server", rec.exp.server), *rec.exp.clients.items()]:
        keys = requested[name]
        distinct = len(set(keys))
        rows.append({"participant": name, "lora": bool(p.use_lora), "requests": len(keys), "distinct_keys": distinct,
                     "reference_passes": int(p.reference_passes),
                     "passes_per_key": p.reference_passes / distinct if distinct else float("nan"),
                     "rounds": sorted({k[0] for k in keys})})
    return rows


def measure_memory(cfg_plain, cfg_lora) -> list[dict]:
    """Participants built as the run builds them; `freeze_reference` as the loop calls it."""
    from ladalit.core.experiment import build_participant
    rows = []
    for cfg, tag in ((cfg_plain, "as in smoke.yaml"), (cfg_lora, "LoRA on every participant")):
        for name, role, pcfg in [("server", "server", cfg.server), *[(n, "client", c) for n, c in cfg.clients.items()]]:
            p = build_participant(cfg, name, role, pcfg)
            base = tensor_bytes(p.model.get_base_model() if p.use_lora else p.model)
            before = participant_bytes(p)
            p.freeze_reference()
            after = participant_bytes(p)
            rows.append({"participant": name, "config": tag, "lora": p.use_lora, "arch": pcfg.model.arch,
                         "base_model_bytes": base, "bytes_before": before, "bytes_after": after,
                         "extra_bytes": after - before, "extra_model_copies": (after - before) / base})
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(ap)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    setup(args.threads, args.out, args.quick)
    rounds = 1 if args.quick else args.rounds
    over = [f"rounds={rounds}"] + (["data.public_size=16", "eval.limit=2", "eval.shots=[0]"] if args.quick else [])
    cfg = load("smoke.yaml", over)
    passes = measure_passes(cfg)
    print(f"Reference forward passes, LaDa on conf/smoke.yaml, {rounds} round(s)")
    print(table([[r["participant"], r["lora"], r["requests"], r["distinct_keys"], r["reference_passes"],
                  r["passes_per_key"]] for r in passes],
                ["participant", "lora", "keys requested", "distinct keys", "reference_passes", "passes/key"]))

    lora_over = [f"{k}.model.lora.enabled=true" for k in ["server", *[f"clients.{n}" for n in cfg.clients]]]
    memory = measure_memory(load("smoke.yaml"), load("smoke.yaml", lora_over))
    print("\nReference weight memory: tensor bytes before -> after freeze_reference()")
    print(table([[r["participant"], r["config"], r["lora"], fmt_bytes(r["base_model_bytes"]), r["bytes_before"],
                  r["bytes_after"], r["extra_bytes"], r["extra_model_copies"]] for r in memory],
                ["participant", "config", "lora", "model", "bytes before", "bytes after", "extra bytes",
                 "extra / model"]))

    passes_ok = all(r["reference_passes"] == r["distinct_keys"] > 0 for r in passes)
    lora_extra = [r["extra_bytes"] for r in memory if r["lora"]]
    plain_copies = [r["extra_model_copies"] for r in memory if not r["lora"]]
    mem_ok = all(b == 0 for b in lora_extra) and all(abs(c - 1.0) < 1e-9 for c in plain_copies)
    n_pass, n_keys = sum(r["reference_passes"] for r in passes), sum(r["distinct_keys"] for r in passes)
    n_req = sum(r["requests"] for r in passes)
    measured = (f"{n_pass / n_keys:.3f} pass/key ({n_pass} passes, {n_keys} keys, {n_req} requests); "
                f"LoRA +{max(lora_extra)} B; no LoRA +{min(plain_copies):.2f}-{max(plain_copies):.2f} model copy")
    summary = summary_row(2, "reference cost", "1 pass per (round, participant, sample); LoRA +0 B",
                          measured, passes_ok and mem_ok,
                          "no LoRA keeps one frozen copy by design (reported, expected 1.00)")
    result = {"config": {"rounds": rounds, "quick": args.quick}, "passes": passes, "memory": memory,
              "summary": summary}
    print(f"wrote {write_result('reference_cost', result)}")
    return result


if __name__ == "__main__":
    main()
