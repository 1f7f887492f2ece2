"""Why a direction of distillation helps or hurts, from one finished LaDa run on the demo world.

    python -m benchmarks.demo_diagnose RUN_DIR [--participant server]

For the samples the participant trained on (selections.jsonl, every round), the log-likelihood of the
chosen answer (the other side's: y^k for the server, y^s for a client) and of the rejected one (its own),
under the pre-trained zoo member and under the run's final model (RUN_DIR/models/). DPO-shaped losses can
lower both; this shows whether the chosen answer's likelihood fell, split by whether the chosen answer
was right (the oracle's gold) and by the sample's domain. Prints a table, writes RUN_DIR/diagnosis.json.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

import ladalit.components  # noqa: F401  registers data sets, model sources, class-path checks
from ladalit.core.prompts import parse_answer, zero_shot_prompt


@torch.no_grad()
def response_logprob(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 32) -> list[float]:
    """log p(response + EOS | prompt), summed over the response's tokens."""
    from ladalit.demo.zoo import _collate, encode_pairs
    out = []
    for i in range(0, len(prompts), batch_size):
        items = encode_pairs(tokenizer, list(zip(prompts[i:i + batch_size], responses[i:i + batch_size])))
        ids, mask, weights = _collate(items, tokenizer.pad_token_id)
        logp = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float().log_softmax(-1)
        tok = logp.gather(-1, ids[:, 1:, None])[..., 0]
        out += (tok * weights[:, 1:]).sum(-1).tolist()
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--participant", default="server")
    args = ap.parse_args(argv)
    from ladalit.core.experiment import prepared_records
    from ladalit.demo.oracle import world_oracle
    from ladalit.demo.zoo import load_member
    run = Path(args.run_dir)
    cfg = OmegaConf.load(run / "config.yaml")
    oracle = world_oracle(cfg)
    who = args.participant
    pcfg = cfg.server if who == "server" else cfg.clients[who]
    start, tok = load_member(pcfg.model.name_or_path, progress=False)
    final = AutoModelForCausalLM.from_pretrained(run / "models" / who).eval()
    records = {r.id: r.public() for r in prepared_records(cfg)}
    said = {(r["round"], r["participant"], r["id"]): r["text"]
            for r in map(json.loads, (run / "responses.jsonl").read_text().splitlines())}
    rows = []
    for sel in map(json.loads, (run / "selections.jsonl").read_text().splitlines()):
        learner, teacher = sel["pair"].split("<-")
        if learner != who:
            continue
        for i in sel["ids"]:
            chosen, rejected = said.get((sel["round"], teacher, i)), said.get((sel["round"], who, i))
            if chosen is not None and rejected is not None:
                rows.append((sel["round"], teacher, i, chosen, rejected))
    prompts = [zero_shot_prompt(records[i]) for _, _, i, _, _ in rows]
    chosen = [c for *_, c, _ in rows]
    rejected = [r for *_, r in rows]
    lp = {(m, side): response_logprob(model, tok, prompts, texts)
          for m, model in (("start", start), ("final", final)) for side, texts in (("chosen", chosen), ("rejected", rejected))}
    cells: dict[tuple, list] = defaultdict(list)
    for j, (_, _, i, c, _) in enumerate(rows):
        right = parse_answer(c) == oracle.truth[i].gold
        key = (oracle.truth[i].domain, "chosen right" if right else "chosen wrong")
        cells[key].append([lp[("final", "chosen")][j] - lp[("start", "chosen")][j],
                           lp[("final", "rejected")][j] - lp[("start", "rejected")][j]])
    table = []
    print(f"{who}: change of log p(answer | x), final model − pre-trained, over the samples it trained on")
    print(f"{'domain':<10}{'chosen answer':<15}{'n':>5}{'Δ log p(chosen)':>18}{'Δ log p(rejected)':>20}")
    for (d, right), v in sorted(cells.items()):
        dc = sum(x[0] for x in v) / len(v)
        dr = sum(x[1] for x in v) / len(v)
        table.append({"domain": d, "chosen": right, "n": len(v), "d_logp_chosen": dc, "d_logp_rejected": dr})
        print(f"{d:<10}{right:<15}{len(v):>5}{dc:>18.2f}{dr:>20.2f}")
    out = {"participant": who, "rows": table}
    (run / f"diagnosis-{who}.json").write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
