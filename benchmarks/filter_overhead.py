"""Filter overhead: time in the learnability filter (training + scoring) / a round's time, at a real
client's size (the target) and in the demo world (information).

    python -m benchmarks.filter_overhead [--quick] [--rounds 3] [--no-world]

1. At a real client's size (what the target is checked on). One candidate batch of a client
   of the Qwen3-0.6B shape (`ladalit.scale.shapes`, random bf16 weights, LoRA r=16, on this CPU,
   bf16 autocast, one thread): n_c = 50 candidates trained in minibatches of 8 pairs, each
   pair's chosen and rejected rows 256 tokens (128 prompt + 127 response + eos), one MARD
   update per minibatch (`distill_step`: reference log-probs, policy forward/backward, step,
   loss after). `--steps` minibatches are measured (median) and the batch's model time is
   ceil(50 / 8) of them. Against it, the filter's work for that batch (`filter_net`
   defaults, MiniLM's 384-d embeddings): scoring the 50 candidates (`select` and `predict`, as
   `pair.select` does), observing their rewards, and one fit (`fit_every: batch`) on a replay
   buffer holding what a round leaves: `--buffer` observations, 1000 by default = |D_p| of
   the paper's scenarios (conf/s1-s4 `data.public_size`), the most one round can select.
   The round's other model work (generation of both answers, evaluation) is not counted, so
   the fraction filter / (model + filter) is an upper bound on that count. The client runs
   with activation checkpointing (what `fabric.activation_checkpointing` turns on under
   FSDP2): without it one step of 8 x 2 rows of 256 tokens did not fit in 12 GiB here. It
   recomputes the decoder layers' forward in backward, at most +50% of a step of a frozen
   base with LoRA (forward F, backward ~F, recompute <= F), so without it the fraction would
   be at most 1.5x the one measured (the note says both). The step runs under an address-
   space limit (`--mem-gb` above what the process holds), so a machine short of memory gets
   an error in the row, not the kernel's OOM killer.
2. The demo world (information): a LaDa run in conf/demo.yaml when it exists and its zoo is
   cached, else conf/smoke.yaml (demo: 2 rounds, evaluation cut to 20 test records per
   client; the filter/(round - evaluation) column is the fraction without any evaluation).
   The library is not edited: `LearnabilityFilter.fit`, `.observe`, `.select` and `.predict`
   are wrapped with timers for the run (only the outermost call counts: `select` calls
   `predict`). Training = fit + observe (Eq. 8, 9 and the replay buffer), scoring = select +
   predict (Eq. 10, and the server's reward weights). The round time comes from the loop's
   `on_round_end`. There the models (0.1-0.85M parameters) are as small as the filter's two
   networks (182k parameters each), so the fraction describes the world, not the filter: the
   note says what one fit costs in training tokens of the world's models.
Times are process CPU time (one thread; not counting waits for a core on a shared machine);
wall-time fractions are printed too. Target: filter time / round time <= 5 %.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import resource
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

from benchmarks.common import table, write_result
from benchmarks.run import add_common_args, demo_world, load, run_method, setup, summary_row

TARGET = 0.05
CLIENT = "Qwen/Qwen3-0.6B"  # a real client's shape (the paper's smallest client)
N_C, MINIBATCH, LENGTH = 50, 8, 256  # one candidate batch, its training minibatch (pairs), tokens per row
KINDS = {"fit": "train", "observe": "train", "select": "score", "predict": "score"}


@contextlib.contextmanager
def timed_filters(acc: dict):
    """Accumulate seconds and calls per method of LearnabilityFilter into `acc` (outermost calls only)."""
    from ladalit.method.filter import LearnabilityFilter
    depth = [0]
    originals = {name: getattr(LearnabilityFilter, name) for name in KINDS}

    def wrap(name, fn):
        def timed(self, *a, **k):
            if depth[0]:
                return fn(self, *a, **k)
            depth[0] += 1
            t, c = time.perf_counter(), time.process_time()
            try:
                out = fn(self, *a, **k)
                if name == "fit":  # the work of a fit: both networks, `epochs` epochs over its n observations
                    acc["filter_params"] = sum(q.numel() for q in self.parameters())
                    acc["fit_n"] = acc.get("fit_n", 0) + out.get("n", 0)
                    acc["fit_flops"] = (acc.get("fit_flops", 0)
                                        + 6 * self.epochs * out.get("n", 0) * acc["filter_params"])
                return out
            finally:
                acc[name] = acc.get(name, 0.0) + time.process_time() - c
                acc[name + "_wall"] = acc.get(name + "_wall", 0.0) + time.perf_counter() - t
                acc[name + "_calls"] = acc.get(name + "_calls", 0) + 1
                depth[0] -= 1
        return timed

    for name, fn in originals.items():
        setattr(LearnabilityFilter, name, wrap(name, fn))
    try:
        yield acc
    finally:
        for name, fn in originals.items():
            setattr(LearnabilityFilter, name, fn)


def world_run(args) -> dict:
    """Part 2 (information): the filter's share of a LaDa run's rounds in the demo world (or smoke)."""
    conf, world = demo_world(args.quick)
    conf = conf or "smoke.yaml"
    rounds = 2 if args.quick else (args.rounds if conf == "smoke.yaml" else min(args.rounds, 2))
    over = [f"rounds={rounds}"]
    if conf != "smoke.yaml":  # bound the time: 2 rounds, evaluation on 20 test records per client
        over += ["eval.limit=20"]
        world += " (2 rounds, eval.limit=20)"
    if args.quick:
        over += ["data.public_size=16", "eval.limit=2", "eval.shots=[0]"]
    cfg = load(conf, over)

    per_round, acc = [], {}
    with timed_filters(acc):
        def on_round(t):
            per_round.append(dict(acc))
            acc.clear()
        rec = run_method(cfg, on_round=on_round)

    rows = []
    for t, (cpu, ev, wall, a) in enumerate(zip(rec.round_cpu_s, rec.eval_cpu_s, rec.round_s, per_round), start=1):
        train = a.get("fit", 0.0) + a.get("observe", 0.0)
        score = a.get("select", 0.0) + a.get("predict", 0.0)
        filter_wall = sum(a.get(f"{n}_wall", 0.0) for n in KINDS)
        rows.append({"round": t, "round_s": cpu, "eval_s": ev, "train_s": train, "score_s": score,
                     "filter_s": train + score, "fraction": (train + score) / cpu,
                     "fraction_without_eval": (train + score) / (cpu - ev),
                     "round_wall_s": wall, "filter_wall_s": filter_wall, "fraction_wall": filter_wall / wall,
                     "fits": a.get("fit_calls", 0), "scorings": a.get("select_calls", 0) + a.get("predict_calls", 0)})
    fits = [(a.get("fit_calls", 0), a.get("fit_n", 0), a.get("fit_flops", 0)) for a in per_round]
    for r, (calls, n, flops) in zip(rows, fits):
        r["mean_fit_n"], r["fit_gflop"] = n / max(calls, 1), flops / 1e9
    total_filter = sum(r["filter_s"] for r in rows)
    total_wall = sum(r["round_s"] for r in rows)
    total_eval = sum(r["eval_s"] for r in rows)
    fraction = total_filter / total_wall
    fraction_wall = sum(r["filter_wall_s"] for r in rows) / sum(r["round_wall_s"] for r in rows)
    print(f"Filter time per round, LaDa, {world}, {rounds} rounds")
    print(table([[r["round"], r["round_s"], r["eval_s"], r["train_s"], r["score_s"], r["fits"], r["scorings"],
                  f"{100 * r['fraction']:.2f}%", f"{100 * r['fraction_without_eval']:.2f}%"] for r in rows]
                + [["all", total_wall, total_eval, sum(r["train_s"] for r in rows), sum(r["score_s"] for r in rows),
                    sum(r["fits"] for r in rows), sum(r["scorings"] for r in rows), f"{100 * fraction:.2f}%",
                    f"{100 * total_filter / (total_wall - total_eval):.2f}%"]],
                ["round", "round cpu s", "eval cpu s", "filter train s", "filter score s", "fits", "scorings",
                 "filter/round", "filter/(round-eval)"]))
    print(f"(CPU times; in wall time: filter/round = {100 * fraction_wall:.2f}%)")
    fn = cfg.filter_net
    note = (f"{world}; filter hidden {fn.hidden}, depth {fn.depth}, epochs {fn.epochs}, "
            f"encoder {fn.encoder}; {len(cfg.clients)} clients x 2 filters")
    # Why a miss is structural to a world of tiny models: one fit (Eq. 8 + 9, SPEC: `epochs` epochs over the whole
    # replay buffer, after every minibatch) costs ~6 * P * epochs * n FLOPs (P: both networks), the training
    # FLOPs (~6 N per token) of P * epochs * n / N tokens through a model of N parameters.
    p_filter = max(a.get("filter_params", 0) for a in per_round)
    n_model = {m.name: sum(q.numel() for q in m.model.parameters())
               for m in [rec.exp.server, *rec.exp.clients.values()]}
    calls, n_fit = sum(c for c, _, _ in fits), sum(n for _, n, _ in fits)
    mean_n, fit_s = n_fit / max(calls, 1), sum(a.get("fit", 0.0) for a in per_round) / max(calls, 1)
    n_min, n_max = min(n_model.values()), max(n_model.values())
    tokens = p_filter * fn.epochs * mean_n / n_min  # a fit's FLOPs, in training tokens of the smallest model
    cost = (f"{calls} fits of {1e3 * fit_s:.0f} ms, each training 2 filter networks ({p_filter / 2e3:.0f}k "
            f"parameters each) {fn.epochs} epochs over the whole buffer (mean n {mean_n:.0f}): "
            f"{6 * p_filter * fn.epochs * mean_n / 1e9:.2f} GFLOP, what training "
            f"{p_filter * fn.epochs * mean_n / n_max:,.0f} to {tokens:,.0f} tokens costs these models "
            f"({n_min / 1e6:.2f}-{n_max / 1e6:.2f}M parameters)")
    if fraction > TARGET:
        why = ("the filter does about as much arithmetic as these tiny models: structural to this world (next to "
               f"a 0.5B model a fit is ~{p_filter * fn.epochs * mean_n / 5e8:.1f} training tokens)" if tokens > 1000
               else "the fits are tiny, their time is the per-op cost of small torch ops next to tiny models' rounds")
        note = f"over 5% here: {cost}; {why}. {note}"
    result = {"world": world, "config": {"conf": conf, "rounds": rounds, "quick": args.quick}, "rounds": rows,
              "filter_s": total_filter, "round_s": total_wall, "eval_s": total_eval, "fraction": fraction,
              "fraction_wall": fraction_wall, "filter_params": p_filter, "model_params": n_model,
              "mean_fit_n": mean_n, "cost": cost, "note": note}
    print(f"filter cost: {cost}")
    return result


@contextlib.contextmanager
def address_space_limit(extra_gb: float):
    """At most `extra_gb` GiB more address space than the process holds now (a failed allocation raises,
    instead of the machine's OOM killer picking a process); the previous limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    held = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmSize:"))
    limit = held + int(extra_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def at_client_size(args) -> dict:
    """Part 1: the filter's work for one candidate batch against a Qwen3-0.6B client's MARD updates on it."""
    from types import SimpleNamespace

    import lightning as L
    import torch

    from benchmarks.gpu_round import make, word_tokenizer
    from ladalit.method.filter import Config as FilterNetConfig
    from ladalit.core.training import NonFiniteGuard
    from ladalit.method.distill import distill_step
    from ladalit.method.lada import Config as LadaConfig
    from ladalit.method.filter import LearnabilityFilter
    from ladalit.scale.offload import Residency
    from ladalit.scale.shapes import SHAPES, param_count
    from ladalit.scale.strategy import enable_activation_checkpointing

    shape, embed_dim, buffer_n, steps = SHAPES[CLIENT], 384, args.buffer, args.steps
    if args.quick:  # the same code path on a tiny shape
        shape = replace(shape, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                        intermediate_size=128, vocab_size=512)
        buffer_n, steps = 100, 1
    torch.manual_seed(0)
    prompt_len = LENGTH // 2
    margs = SimpleNamespace(batch_size=MINIBATCH, prompt_len=prompt_len, new_tokens=LENGTH - prompt_len - 1,
                            dtype=torch.float32 if args.quick else torch.bfloat16)
    fabric = L.Fabric(accelerator="cpu", devices=1, precision="32-true" if args.quick else "bf16-mixed")
    tok = word_tokenizer(shape.vocab_size)
    g = torch.Generator().manual_seed(1)

    def words(n, length):
        return [" ".join(f"w{int(i)}" for i in torch.randint(3, tok.vocab_size, (length,), generator=g))
                for _ in range(n)]

    cfg, guard = LadaConfig(beta=0.1), NonFiniteGuard("skip")
    step_cpu, step_wall = [], []
    with address_space_limit(args.mem_gb):
        client, opt = make("client1", "client", shape, tok, fabric, margs, Residency("cpu", enabled=False))
        checkpointing = enable_activation_checkpointing(client)  # to fit this machine's memory: see the doc
        n_params = param_count(shape)
        for s in range(steps):
            prompts, chosen, rejected = words(MINIBATCH, prompt_len), words(MINIBATCH, margs.new_tokens), \
                words(MINIBATCH, margs.new_tokens)
            keys = [("client1", s * MINIBATCH + i) for i in range(MINIBATCH)]  # fresh keys: the reference pass runs
            t, c = time.perf_counter(), time.process_time()
            distill_step(cfg, fabric, client, opt, guard, 2, s, keys, prompts, chosen, rejected)
            step_cpu.append(time.process_time() - c)
            step_wall.append(time.perf_counter() - t)
            print(f"  {CLIENT}-shaped client, MARD step {s}: {step_cpu[-1]:.1f} CPU s, {step_wall[-1]:.1f} wall s",
                  flush=True)
        del client, opt
    minibatches = math.ceil(N_C / MINIBATCH)
    model_s = minibatches * statistics.median(step_cpu)
    model_wall = minibatches * statistics.median(step_wall)

    fn = FilterNetConfig()
    filt = LearnabilityFilter(embed_dim=embed_dim, hidden=fn.hidden, depth=fn.depth, lr=fn.lr, epochs=fn.epochs,
                              batch_size=fn.batch_size, lam=fn.lam, tau=fn.tau, min_select=fn.min_select,
                              max_select=fn.max_select, buffer_size=fn.buffer_size, seed=0)
    emb = torch.nn.functional.normalize(torch.randn(buffer_n + N_C, embed_dim, generator=g), dim=1)
    filt.observe(emb[:buffer_n - N_C], torch.rand(buffer_n - N_C, generator=g))  # what the round left before
    filt.fit()
    cand = emb[buffer_n - N_C:buffer_n]
    t, c = time.perf_counter(), time.process_time()
    filt.select(cand)  # pair.select: the selection (Eq. 10) and the logged U^p, U^q terms
    _, u_p, _ = filt.predict(cand)
    score_s, score_wall = time.process_time() - c, time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    filt.observe(cand, torch.rand(N_C, generator=g), u_p)  # the batch's rewards (every candidate trained), U^p
    fit = filt.fit()  # fit_every: batch, on the buffer a round leaves
    fit_s, fit_wall = time.process_time() - c, time.perf_counter() - t
    filter_s, filter_wall = score_s + fit_s, score_wall + fit_wall
    fraction = filter_s / (model_s + filter_s)
    per_sample = statistics.median(step_cpu) / MINIBATCH
    break_even = math.ceil((1 - TARGET) / TARGET * filter_s / per_sample)  # trained samples for filter <= 5%
    return {"client": CLIENT, "shape": asdict(shape), "params": n_params,
            "precision": "bf16 weights, bf16-mixed autocast" if not args.quick else "float32 (quick: tiny shape)",
            "n_c": N_C, "minibatch": MINIBATCH, "length": LENGTH, "steps_measured": steps,
            "activation_checkpointing": checkpointing,
            "step_cpu_s": step_cpu, "step_wall_s": step_wall, "minibatches": minibatches,
            "model_s": model_s, "model_wall_s": model_wall, "buffer": fit["n"], "score_s": score_s, "fit_s": fit_s,
            "filter_s": filter_s, "filter_wall_s": filter_wall, "fraction": fraction,
            "fraction_wall": filter_wall / (model_wall + filter_wall), "break_even_samples": break_even,
            "filter": {"hidden": fn.hidden, "depth": fn.depth, "epochs": fn.epochs, "batch_size": fn.batch_size,
                       "params": sum(q.numel() for q in filt.parameters())}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(ap)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the world run (demo: at most 2)")
    ap.add_argument("--steps", type=int, default=2, help="MARD minibatch steps measured at the client's size")
    ap.add_argument("--buffer", type=int, default=1000, help="replay buffer the fit trains on (what a round leaves)")
    ap.add_argument("--mem-gb", type=float, default=12.0, help="address space the client-size step may add")
    ap.add_argument("--no-world", action="store_true", help="skip part 2 (the demo/smoke world run)")
    args = ap.parse_args(argv)
    setup(args.threads, args.out, args.quick)
    world = None if args.no_world else world_run(args)
    real = at_client_size(args)
    print(f"At a real client's size ({CLIENT} shape, {real['params'] / 1e6:.0f}M parameters, {real['precision']}, "
          f"1 thread), one candidate batch of {N_C}, minibatch {MINIBATCH}, length {LENGTH}:")
    print(table([["MARD updates (model)", f"{real['minibatches']} x {statistics.median(real['step_cpu_s']):.2f}",
                  real["model_s"], real["model_wall_s"]],
                 ["filter: score 50 candidates", "", real["score_s"], ""],
                 [f"filter: observe + fit on {real['buffer']}", "", real["fit_s"], ""],
                 ["filter / (model + filter)", "", f"{100 * real['fraction']:.3f}%",
                  f"{100 * real['fraction_wall']:.3f}%"]],
                ["part", "minibatches x CPU s", "CPU s", "wall s"]))
    ok = real["fraction"] <= TARGET
    measured = (f"{100 * real['fraction']:.2f}% at {CLIENT} size ({real['filter_s']:.2f} s filter vs "
                f"{real['model_s']:.0f} s MARD per batch of {N_C})")
    note = (f"{CLIENT} shape, random bf16 weights, LoRA, this CPU, 1 thread: {real['steps_measured']} MARD steps "
            f"of {MINIBATCH} pairs x {LENGTH} tokens measured (median {statistics.median(real['step_cpu_s']):.1f} "
            f"CPU s), x {real['minibatches']} for n_c={N_C}; filter scoring {real['score_s']:.3f} s + observe/fit on "
            f"a buffer of {real['buffer']} {real['fit_s']:.2f} s; generation and evaluation not counted (an upper "
            f"bound); activation checkpointing {'on' if real['activation_checkpointing'] else 'off'} (without it "
            f"at most 1.5x: {150 * real['fraction']:.2f}%); <= 5% while >= {real['break_even_samples']} of the "
            f"{N_C} candidates are trained")
    if world is not None:
        measured += f"; {world['config']['conf']} world {100 * world['fraction']:.2f}% (information)"
        note += (f". World (information): {100 * world['fraction']:.2f}% of {world['round_s']:.0f} CPU s; "
                 f"{world['note']}")
    if args.quick:
        note = "--quick: tiny shape, not a measurement. " + note
    summary = summary_row(3, "filter overhead", f"filter/round <= {100 * TARGET:.0f}% at a real client's size",
                          measured, ok, note)
    result = {"at_client_size": real, "world_run": world, "summary": summary}
    if world is not None:  # the keys the world run had before (fraction of a whole run)
        result |= {k: world[k] for k in ("world", "config", "rounds", "filter_s", "round_s", "fraction")}
    print(f"wrote {write_result('filter_overhead', result)}")
    return result


if __name__ == "__main__":
    main()
