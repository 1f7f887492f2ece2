"""MARD training step (ladalit) vs TRL's DPOTrainer step (sigmoid loss): training tokens per second.

    python -m benchmarks.mard_vs_trl [--steps 5] [--warmup 1] [--threads 1] [--no-ablation]

Both sides train the same random qwen3 model (hidden 256, 4 layers, vocab 4096,
tied embeddings) with the same LoRA adapter (r 16 on every linear layer of the
decoder, identical initial weights), fp32, no gradient checkpointing, AdamW at
a constant learning rate, gradient clipping at 1.0, on the same batches in the
same order: 8 (prompt, chosen, rejected) triples per step, prompts of 16-64
words, responses of 64-256 words (one word = one token). The reference
log-probs are computed before the timed steps on both sides (TRL:
`precompute_ref_log_probs=True`; ladalit: `reference_pair_logprobs`, cached).
Threads: one by default (`--threads`), the same for both; on a shared
machine several threads per process measure contention more than the code.

A ladalit step is `pair_logprobs` (policy, with grad) + the cached reference +
`mard_loss` + backward + clipping + AdamW. A TRL step is everything
`Trainer.train` does between two `on_step_end` callbacks (collation, forward,
backward, clipping, optimizer, scheduler, its metrics). The two are
interleaved in one process: TRL runs its training loop and, at each of its
`on_step_end`, ladalit runs its step on the same batch (its time is excluded
from TRL's). Tokens counted per step: the non-pad tokens of the 2B
prompt+response sequences (BOS + prompt + response + EOS), the same count on
both sides (checked). tokens/s = total tokens / total time over the timed steps.
ladalit's step includes its tokenisation; TRL tokenises once, before training.

Memory column: what autograd keeps for the backward of one step (the unique storages of
the saved tensors, parameters excluded: activations and logits; the weights, the adapter
and AdamW's state are the same on both sides), the largest over the timed steps. It is
counted with `torch.autograd.graph.saved_tensors_hooks` around the forward (ladalit:
`pair_logprobs` + loss; TRL: its `compute_loss`), so it is the same measure on a CPU and
a GPU; on CUDA the peak allocated memory of the step is reported too.

Ablation row "ladalit, padded": the same participant code path with the model
wrapped as a non-transformers module, which makes `pair_logprobs` fall back to
one right-padded row per sequence and full logits (the implementation before
packing and response-only logits); trained on the same batches, interleaved.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import random
import statistics
import tempfile
import time

import torch

from benchmarks.common import table, write_result

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def make_tokenizer(vocab_size: int):
    """A word-level tokenizer (one word = one token, exact boundaries), BOS before every text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), vocab_size)})
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def make_model(tok, args):
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.for_model(
        "qwen3", vocab_size=len(tok), hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=args.hidden // 4,
        intermediate_size=4 * args.hidden, max_position_embeddings=1024, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(args.seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def make_data(n: int, vocab_size: int, args) -> dict[str, list[str]]:
    rng = random.Random(args.seed)

    def words(lo, hi):
        return " ".join(f"w{rng.randrange(len(SPECIALS), vocab_size)}" for _ in range(rng.randint(lo, hi)))
    return {
        "prompt": [words(args.prompt_min, args.prompt_max) for _ in range(n)],
        "chosen": [" " + words(args.resp_min, args.resp_max) for _ in range(n)],
        "rejected": [" " + words(args.resp_min, args.resp_max) for _ in range(n)],
    }


def make_participant(model, tok, args):
    from omegaconf import OmegaConf

    from ladalit.core.config import LoraConfig, TrainConfig
    from ladalit.core.participant import Participant
    lora = OmegaConf.structured(LoraConfig(enabled=True, r=args.r, alpha=2 * args.r, dropout=0.0,
                                           target_modules=["all-linear"]))
    train = OmegaConf.structured(TrainConfig(lr=args.lr, max_length=1024, grad_clip=1.0, weight_decay=0.0))
    p = Participant("server", "server", model, tok, train, lora)
    p.freeze_reference()
    return p


def make_trainer(model, tok, data, args, out_dir, callback):
    from datasets import Dataset
    from peft import LoraConfig
    from torch.utils.data import SequentialSampler
    from trl import DPOConfig, DPOTrainer

    class InOrder(DPOTrainer):  # the same batches, in the same order, as the ladalit side
        def _get_train_sampler(self, *a, **k):
            return SequentialSampler(self.train_dataset)

    cfg = DPOConfig(
        output_dir=out_dir, per_device_train_batch_size=args.pairs, max_steps=args.warmup + args.steps,
        learning_rate=args.lr, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0,
        beta=args.beta, loss_type=["sigmoid"], precompute_ref_log_probs=True, precompute_ref_batch_size=args.pairs,
        use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none", save_strategy="no",
        logging_steps=10 ** 6, disable_tqdm=True, dataloader_num_workers=0, seed=args.seed, max_length=1024)
    peft_config = LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.0, target_modules="all-linear",
                             task_type="CAUSAL_LM")
    return InOrder(model=model, args=cfg, train_dataset=Dataset.from_dict(data), processing_class=tok,
                   peft_config=peft_config, callbacks=[callback])


class Padded(torch.nn.Module):
    """The model seen as a causal LM outside transformers: `pair_logprobs` takes its right-padded path."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def copy_adapter(src, dst, src_name: str, dst_name: str) -> int:
    """Copy LoRA weights adapter `src_name` of `src` into adapter `dst_name` of `dst` (same base layout)."""
    theirs = {n.replace(f".{dst_name}.", "."): q for n, q in dst.named_parameters() if f".{dst_name}." in n}
    mine = {n.replace(f".{src_name}.", "."): q for n, q in src.named_parameters() if f".{src_name}." in n}
    assert theirs.keys() == mine.keys() and mine, (sorted(theirs)[:3], sorted(mine)[:3])
    with torch.no_grad():
        for n, q in mine.items():
            theirs[n].copy_(q)
    return len(mine)


class SavedBytes:
    """Bytes of the distinct storages autograd saves for backward inside the context (parameters excluded)."""

    def __init__(self):
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor):
        if not isinstance(t, torch.nn.Parameter) and t.device.type != "meta":
            st = t.untyped_storage()
            self.storages[st.data_ptr()] = st.nbytes()
        return t

    def __enter__(self):
        self.storages.clear()
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per side first")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--prompt-min", type=int, default=16)
    ap.add_argument("--prompt-max", type=int, default=64)
    ap.add_argument("--resp-min", type=int, default=64)
    ap.add_argument("--resp-max", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--no-ablation", action="store_true", help="skip the 'ladalit, padded' row")
    args = ap.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's reference precompute progress bar
    if args.threads:
        torch.set_num_threads(args.threads)
    import warnings

    import datasets
    from transformers import PrinterCallback, TrainerCallback
    from transformers.utils import logging as hf_logging

    from ladalit.method.losses import mard_loss
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)

    n_steps = args.warmup + args.steps
    tok = make_tokenizer(args.vocab)
    data = make_data(n_steps * args.pairs, args.vocab, args)
    base = make_model(tok, args)
    participant = make_participant(copy.deepcopy(base), tok, args)
    sides = {"ladalit": (participant, None)}
    if not args.no_ablation:
        padded = make_participant(copy.deepcopy(base), tok, args)
        copy_adapter(participant.model, padded.model, "policy", "policy")
        sides["ladalit_padded"] = (padded, Padded(padded.model))
    opts = {name: torch.optim.AdamW([q for q in p.parameters() if q.requires_grad], lr=args.lr, weight_decay=0.0)
            for name, (p, _) in sides.items()}

    keys = [f"pair{i}" for i in range(n_steps * args.pairs)]

    def batch(k):
        sl = slice(k * args.pairs, (k + 1) * args.pairs)
        return keys[sl], data["prompt"][sl], data["chosen"][sl], data["rejected"][sl]

    t0 = time.perf_counter()
    for k in range(n_steps):  # ladalit's reference pass (cached per key), like TRL's precompute
        participant.reference_pair_logprobs(*batch(k))
    ref_time_ladalit = time.perf_counter() - t0

    stats = {name: {"time": [], "tokens": [], "loss": [], "saved_bytes": [], "cuda_peak_bytes": []}
             for name in [*sides, "trl"]}
    trl = stats["trl"]
    saved = SavedBytes()

    def cuda_peak_reset():
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def cuda_peak():
        return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None

    def ladalit_step(name, k):
        p, model = sides[name]
        opt, params = opts[name], opts[name].param_groups[0]["params"]
        keys, prompts, chosen, rejected = batch(k)
        cuda_peak_reset()
        t = time.perf_counter()
        with saved:
            pc, pr = p.pair_logprobs(prompts, chosen, rejected, model=model)
            rc, rr = participant.reference_pair_logprobs(keys, prompts, chosen, rejected)  # cached
            loss = mard_loss(pc, pr, rc, rr, args.beta).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        stats[name]["time"].append(time.perf_counter() - t)
        stats[name]["saved_bytes"].append(saved.bytes)
        stats[name]["cuda_peak_bytes"].append(cuda_peak())
        rows = p._rows(list(prompts) * 2, list(chosen) + list(rejected))  # not timed: counting only
        stats[name]["tokens"].append(sum(len(a) + len(b) for a, b in rows))
        stats[name]["loss"].append(loss.item())

    class Interleave(TrainerCallback):
        def __init__(self):
            self.resume = None

        def on_step_begin(self, a, state, control, **kw):
            if self.resume is None:  # first step: the batch was fetched just before
                self.resume = time.perf_counter()
            cuda_peak_reset()

        def on_step_end(self, a, state, control, **kw):
            trl["time"].append(time.perf_counter() - self.resume)
            trl["cuda_peak_bytes"].append(cuda_peak())
            for name in sides:
                ladalit_step(name, state.global_step - 1)
            self.resume = time.perf_counter()

    with tempfile.TemporaryDirectory() as out_dir:
        t0 = time.perf_counter()
        trainer = make_trainer(copy.deepcopy(base), tok, data, args, out_dir, Interleave())
        init_time_trl = time.perf_counter() - t0  # tokenisation + reference precompute
        n_lora = copy_adapter(participant.model, trainer.model, "policy", "default")
        seen = []
        compute_loss = trainer.compute_loss

        def counting_loss(model, inputs, *a, **k):
            seen.append(int(inputs["attention_mask"].sum()))
            with saved:
                out = compute_loss(model, inputs, *a, **k)
            trl["saved_bytes"].append(saved.bytes)
            trl["loss"].append(float(out.detach()))
            return out
        trainer.compute_loss = counting_loss
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        trl["tokens"] = seen
    lad = stats["ladalit"]
    for name, st in stats.items():
        assert st["tokens"] == lad["tokens"], (name, st["tokens"], lad["tokens"])  # same batches, same tokens
        # the first step starts with the adapter's B = 0 everywhere: loss = log 2
        assert abs(st["loss"][0] - math.log(2)) < 1e-5, (name, st["loss"][0])

    timed = slice(args.warmup, None)
    for st in stats.values():
        st["tokens_per_s"] = sum(st["tokens"][timed]) / sum(st["time"][timed])
        st["peak_saved_bytes"] = max(st["saved_bytes"][timed])
        peaks = [b for b in st["cuda_peak_bytes"][timed] if b is not None]
        st["peak_cuda_bytes"] = max(peaks) if peaks else None
    ratio = lad["tokens_per_s"] / trl["tokens_per_s"]
    per_step_ratio = [t / l for t, l in zip(trl["time"][timed], lad["time"][timed])]
    labels = {"ladalit": "ladalit MARD", "ladalit_padded": "ladalit, padded (ablation)", "trl": "TRL DPOTrainer"}
    rows = [[labels[name], sum(st["tokens"][timed]), sum(st["time"][timed]), statistics.median(st["time"][timed]),
             st["tokens_per_s"], st["tokens_per_s"] / trl["tokens_per_s"], st["loss"][-1],
             round(st["peak_saved_bytes"] / 2**20, 1)]
            + ([round(st["peak_cuda_bytes"] / 2**20, 1)] if st["peak_cuda_bytes"] is not None else [])
            for name, st in stats.items()]
    print(table(rows, ["side", "tokens", "time_s", "median_step_s", "tokens_per_s", "vs_TRL", "last_loss",
                       "saved_for_backward_MiB"] + (["cuda_peak_MiB"] if torch.cuda.is_available() else [])))
    print(f"ratio ladalit/TRL tokens/s = {ratio:.3f}   (per-step time ratio TRL/ladalit: "
          f"min {min(per_step_ratio):.3f}, "
          f"median {statistics.median(per_step_ratio):.3f}, max {max(per_step_ratio):.3f}; "
          f"{args.steps} timed steps after {args.warmup} warm-up, interleaved; {torch.get_num_threads()} thread(s))")
    print(f"reference pass, all {n_steps * args.pairs} pairs: ladalit {ref_time_ladalit:.2f} s; "
          f"TRL init incl. tokenisation + precompute {init_time_trl:.2f} s (neither is in the ratio)")
    result = {
        "config": vars(args),
        "lora_tensors": n_lora,
        "tokens_counted": "non-pad prompt+response tokens of the 2B sequences per step (BOS+prompt+response+EOS)",
        **stats,
        "ratio_tokens_per_s": ratio,
        "per_step_time_ratio_trl_over_ladalit": per_step_ratio,
        "ladalit_reference_pass_s": ref_time_ladalit,
        "trl_init_s": init_time_trl,
    }
    path = write_result("mard_vs_trl", result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
