"""What the private-train SFT's prompt does to a zoo client's step-by-step accuracy (docs/method.md, choices:
`sft_prompt`). The client fine-tunes on short answer statements of its own domain's records, after the
direct-answer prompt or after the step-by-step one, as every method's private SFT does
(`prompts.private_sft_pairs`), and is evaluated step-by-step (greedy, zero-shot) after every epoch.

    python -m benchmarks.sft_prompt_probe --member client-llama --domain calendar

Needs the zoo member (pre-trained on first use, ladalit.demo.zoo). The records come from seed 11, which no
split uses; lr and batch size as conf/demo.yaml's clients (lr 1e-4, batch 8), 3 epochs by default.
"""
from __future__ import annotations

import argparse
import json

import torch

from ladalit.core.prompts import private_sft_pairs
from ladalit.demo import zoo
from ladalit.demo.synthetic import SyntheticConfig, generate


def probe(load, train, test, styles=("direct", "cot"), epochs: int = 3, lr: float = 1e-4, batch_size: int = 8,
          max_new_tokens: int = 128) -> list[dict]:
    """Rows {style, epoch, accuracy}: epoch 0 is the model as loaded (`load()` returns a fresh (model,
    tokenizer) for every style)."""
    rows = []
    for style in styles:
        model, tok = load()
        rows.append({"style": style, "epoch": 0, "accuracy": zoo.quick_eval(model, tok, test, max_new_tokens)})
        data = zoo.encode_pairs(tok, list(zip(*private_sft_pairs(train, style))))
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        g = torch.Generator().manual_seed(0)
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(len(data), generator=g).tolist()
            for i in range(0, len(order), batch_size):
                loss = zoo.weighted_lm_loss(model, *zoo._collate([data[j] for j in order[i: i + batch_size]],
                                                                 tok.pad_token_id))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
            rows.append({"style": style, "epoch": epoch, "accuracy": zoo.quick_eval(model, tok, test, max_new_tokens)})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--member", default="client-llama")
    ap.add_argument("--domain", default="calendar")
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    recs = [r for r in generate(SyntheticConfig(num_records=20 * (args.train + args.test), seed=11))
            if r.domain == args.domain]
    train, test = recs[: args.train], recs[args.train: args.train + args.test]
    rows = probe(lambda: zoo.load_member(args.member, progress=False), train, test, epochs=args.epochs)
    for r in rows:
        print(f"{args.member} sft_prompt={r['style']:<6} epoch {r['epoch']}: step-by-step accuracy {r['accuracy']:.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"member": args.member, "domain": args.domain, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
