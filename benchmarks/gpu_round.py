"""One LaDa round on Qwen3 shapes with random bf16 weights: tokens/s per phase and peak GPU memory.

    python benchmarks/gpu_round.py                      # a GPU: server Qwen3-4B, clients Qwen3-0.6B/1.7B/4B
    python benchmarks/gpu_round.py --server Qwen/Qwen3-32B --offload    # an H200
    python benchmarks/gpu_round.py --dry-run            # CPU, tiny shapes, seconds

For K = 1 and K = 3 clients, a round is (lada.run without the filters):
for each client, the server and the client generate answers to n public
prompts (gen_server, gen_client), then MARD updates of the client on them
(client_update: reference log-probs, loss, step, loss again); then MARD
updates of the server on the K·n rows (server_update). Prompts and answers
are words of a word-level tokenizer that covers the model's vocabulary, so one
word is one token. With --offload the idle participants are parked on the CPU
(ladalit.scale.offload.Residency, as `fabric.offload_idle` does in a run): models are
built on the CPU and each is moved onto the GPU when it computes.
Prints one JSON line per K.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import lightning as L
import torch
from omegaconf import OmegaConf

from ladalit.core.config import LoraConfig, TrainConfig
from ladalit.core.experiment import setup_participant
from ladalit.method.distill import distill_step
from ladalit.method.lada import Config as LadaConfig
from ladalit.scale.offload import Residency
from ladalit.core.participant import Participant
from ladalit.scale.shapes import SHAPES, build
from ladalit.core.training import NonFiniteGuard, minibatches

CLIENTS = ["Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B"]


def word_tokenizer(vocab_size: int):
    """Token i is the word "w{i}" (ids 0-2: pad, eos, unk)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2} | {f"w{i}": i for i in range(3, vocab_size)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def make(name, role, shape, tok, fabric, args, residency):
    model = build(shape, "cpu" if residency.enabled else fabric.device, args.dtype)
    model.config.pad_token_id = tok.pad_token_id
    train = OmegaConf.structured(TrainConfig(lr=1e-4, batch_size=args.batch_size,
                                             max_length=args.prompt_len + args.new_tokens + 1))
    p = Participant(name, role, model, tok, train, OmegaConf.structured(LoraConfig(enabled=True, r=16, alpha=32)))
    p.freeze_reference()  # a client trains its "policy" adapter against "sft"; the server against the base
    module = setup_participant(fabric, p, residency)
    return module, fabric.setup_optimizers(p.configure_optimizers())


class Phases:
    def __init__(self, fabric):
        self.fabric, self.stats = fabric, {}

    def run(self, name, fn, tokens_of):
        cuda = self.fabric.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        s = self.stats.setdefault(name, {"seconds": 0.0, "tokens": 0, "peak_gb": 0.0})
        s["seconds"] += time.perf_counter() - t
        s["tokens"] += tokens_of(out)
        if cuda:
            s["peak_gb"] = max(s["peak_gb"], torch.cuda.max_memory_allocated() / 2**30)
        return out

    def report(self):
        return {k: {**v, "tokens_per_s": v["tokens"] / max(v["seconds"], 1e-9)} for k, v in self.stats.items()}


def one_round(args, k: int, fabric, shapes: dict) -> dict:
    torch.manual_seed(0)
    tok = word_tokenizer(min(s.vocab_size for s in shapes.values()))
    n_tok = lambda texts: sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)  # noqa: E731
    residency = Residency(fabric.device, enabled=args.offload)
    server, s_opt = make("server", "server", shapes[args.server], tok, fabric, args, residency)
    clients = {f"client{i + 1}": make(f"client{i + 1}", "client", shapes[CLIENTS[i % 3]], tok, fabric, args, residency)
               for i in range(k)}
    cfg, guard, ph = LadaConfig(beta=0.1), NonFiniteGuard("skip"), Phases(fabric)
    g = torch.Generator().manual_seed(1)
    prompts = [" ".join(f"w{int(i)}" for i in torch.randint(3, tok.vocab_size, (args.prompt_len,), generator=g))
               for _ in range(args.samples)]

    def update(p, opt, keys, chosen, rejected, weights=None):
        for mb in minibatches(len(keys), args.batch_size):
            w = None if weights is None else weights[mb]
            distill_step(cfg, fabric, p, opt, guard, 1, 0, [keys[i] for i in mb], [prompts_of[i] for i in mb],
                         [chosen[i] for i in mb], [rejected[i] for i in mb], weights=w)
        return list(chosen) + list(rejected)

    y_s, y_k = {}, {}
    for name, (client, c_opt) in clients.items():
        y_s[name] = ph.run("gen_server", lambda: server.generate_text(prompts, args.new_tokens, args.gen_batch), n_tok)
        y_k[name] = ph.run("gen_client", lambda: client.generate_text(prompts, args.new_tokens, args.gen_batch), n_tok)
        prompts_of = prompts
        keys = [(name, i) for i in range(len(prompts))]
        ph.run("client_update", lambda: update(client, c_opt, keys, y_s[name], y_k[name]),
               lambda ys: n_tok(ys) + 2 * n_tok(prompts))
    rows = [(name, i) for i in range(len(prompts)) for name in clients]  # every client selected every sample
    prompts_of = [prompts[i] for _, i in rows]
    weights = torch.full((len(rows),), 1.0 / k)
    ph.run("server_update", lambda: update(server, s_opt, rows, [y_k[c][i] for c, i in rows],
                                           [y_s[c][i] for c, i in rows], weights),
           lambda ys: n_tok(ys) + 2 * n_tok(prompts_of))
    out = {"K": k, "server": args.server, "clients": [CLIENTS[i % 3] for i in range(k)],
           "device": str(fabric.device), "phases": ph.report(), "skipped_steps": len(guard.skipped),
           "offload": args.offload, "swaps": residency.swaps}
    if fabric.device.type == "cuda":
        out["peak_gb_round"] = max(v["peak_gb"] for v in out["phases"].values())
    del server, clients
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes")
    ap.add_argument("--server", default="Qwen/Qwen3-4B", choices=sorted(SHAPES))
    ap.add_argument("--ks", default="1,3")
    ap.add_argument("--samples", type=int, default=32, help="public prompts per client")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--gen-batch", type=int, default=16)
    ap.add_argument("--offload", action="store_true")
    args = ap.parse_args(argv)
    shapes = {m: SHAPES[m] for m in {args.server, *CLIENTS}}
    if args.dry_run:
        shapes = {m: replace(s, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                             intermediate_size=128, vocab_size=512) for m, s in shapes.items()}
        args.samples, args.prompt_len, args.new_tokens, args.batch_size, args.gen_batch = 4, 8, 4, 2, 4
        fabric, args.dtype = L.Fabric(accelerator="cpu", devices=1, precision="32-true"), torch.float32
    else:
        assert torch.cuda.is_available(), "no GPU: use --dry-run"
        fabric, args.dtype = L.Fabric(accelerator="cuda", devices=1, precision="bf16-mixed"), torch.bfloat16
    results, threads = [], torch.get_num_threads()
    if args.dry_run:
        torch.set_num_threads(1)  # tiny matrices: threads only contend
    try:
        for k in [int(x) for x in args.ks.split(",")]:
            results.append(one_round(args, k, fabric, shapes))
            print(json.dumps(results[-1]), flush=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    finally:
        torch.set_num_threads(threads)
    return results


if __name__ == "__main__":
    main()
