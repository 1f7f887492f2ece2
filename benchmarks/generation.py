"""Generation: batched greedy generation with the KV cache vs one prompt at a time, tokens/s.

    python -m benchmarks.generation [--quick] [--prompts 16] [--batch 16] [--new-tokens 64] [--reps 5]

One participant built as a run builds it: a random qwen3 with the zoo server's shape
(hidden 160, 4 layers, 4 heads, 2 KV heads, MLP 480), byt5 tokenizer, fp32. Prompts:
the zero-shot prompts of `--prompts` synthetic public questions (cut to the
participant's max_length - new tokens, as `generate_text` does).

Both sides call `Participant.generate_text` (greedy, KV cache, left padding): once
with batch_size=16, once with batch_size=1 (one prompt at a time). A random model
would often stop at once, so the model's `generation_config.min_new_tokens` is set to
`--new-tokens` for the benchmark: EOS is suppressed until then, every prompt gets
exactly `--new-tokens` new tokens on both sides (checked by counting the rows of
every `model.generate` output). Repetitions interleaved (alternating which side goes
first); tokens/s ratio = median of per-rep ratios, in process CPU time (one thread:
the wall time minus the waits for a core on a shared machine; wall ratio reported too).
Target: >= 4x at batch 16.
"""
from __future__ import annotations

import argparse
import time

from benchmarks.common import table, write_result
from benchmarks.run import add_common_args, load, median, setup, summary_row

TARGET = 4.0
SHAPE = {"arch": "qwen3", "hidden_size": 160, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2,
         "intermediate_size": 480}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(ap)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    setup(args.threads, args.out, args.quick)
    shape = dict(SHAPE)
    if args.quick:
        args.prompts, args.batch, args.new_tokens, args.reps = 4, 4, 8, 1
        shape.update(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    from ladalit.core.experiment import build_participant, load_data
    from ladalit.core.prompts import zero_shot_prompt

    cfg = load("smoke.yaml", [f"server.model.{k}={v}" for k, v in shape.items()] +
               [f"data.public_size={max(args.prompts, 1)}"])
    p = build_participant(cfg, "server", "server", cfg.server)
    p.model.generation_config.min_new_tokens = args.new_tokens
    prompts = [zero_shot_prompt(x) for x in load_data(cfg).public[: args.prompts]]

    counted = []
    generate = p.model.generate

    def counting(*a, **k):
        out = generate(*a, **k)
        new = out.shape[1] - k["input_ids"].shape[1]
        counted.append((out.shape[0], new))
        return out
    p.model.generate = counting

    def run(batch_size: int) -> tuple[float, float, int]:
        counted.clear()
        t, c = time.perf_counter(), time.process_time()
        texts = p.generate_text(prompts, args.new_tokens, batch_size)
        cpu, wall = time.process_time() - c, time.perf_counter() - t
        assert len(texts) == len(prompts)
        assert all(new == args.new_tokens for _, new in counted), counted
        return cpu, wall, sum(rows * new for rows, new in counted)

    run(args.batch)  # warm-up (allocations, first-call overheads), not timed
    reps = []
    for r in range(args.reps):
        got = {}
        for side in (["batched", "one_by_one"] if r % 2 == 0 else ["one_by_one", "batched"]):
            cpu, wall, tokens = run(args.batch if side == "batched" else 1)
            got[side] = {"s": cpu, "wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / cpu}
        got["ratio"] = got["batched"]["tokens_per_s"] / got["one_by_one"]["tokens_per_s"]
        got["ratio_wall"] = got["one_by_one"]["wall_s"] / got["batched"]["wall_s"]
        reps.append(got)
        print(f"  rep {r + 1}: CPU s batched {got['batched']['s']:.2f}, one by one {got['one_by_one']['s']:.2f} "
              f"(ratio {got['ratio']:.2f}); wall ratio {got['ratio_wall']:.2f}", flush=True)
    ratio = median([r["ratio"] for r in reps])
    ratio_wall = median([r["ratio_wall"] for r in reps])
    tps = {side: median([r[side]["tokens_per_s"] for r in reps]) for side in ("batched", "one_by_one")}
    tokens = reps[0]["batched"]["tokens"]
    print(table([[f"batch {args.batch}", tokens, median([r['batched']['s'] for r in reps]), tps["batched"], ratio],
                 ["one by one", reps[0]["one_by_one"]["tokens"], median([r['one_by_one']['s'] for r in reps]),
                  tps["one_by_one"], 1.0]],
                ["side", "new tokens", "median CPU s", "median tokens/CPU s", "speed-up (median of ratios)"]))
    print(f"(wall-time speed-up, median of ratios: {ratio_wall:.2f}x)")
    n_params = sum(q.numel() for q in p.model.parameters())
    summary = summary_row(6, "batched generation", f"batch {args.batch} vs 1: >= {TARGET:g}x tokens/s",
                          f"{ratio:.2f}x ({tps['batched']:.0f} vs {tps['one_by_one']:.0f} tok/s)", ratio >= TARGET,
                          f"qwen3 {shape['hidden_size']}x{shape['num_layers']} ({n_params / 1e6:.2f}M params), "
                          f"{args.prompts} prompts x {args.new_tokens} new tokens forced by min_new_tokens; "
                          f"{args.reps} interleaved reps, CPU time (wall {ratio_wall:.2f}x)")
    result = {"config": vars(args), "shape": shape, "parameters": n_params, "reps": reps, "ratio": ratio,
              "ratio_wall": ratio_wall, "tokens_per_s": tps, "summary": summary}
    print(f"wrote {write_result('generation', result)}")
    return result


if __name__ == "__main__":
    main()
