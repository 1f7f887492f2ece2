"""A participant (client SLM or server LLM): a LightningModule around a HF causal LM.

It owns its model, its own tokenizer and the operations every method needs:
summed response log-probs (policy and frozen reference, chosen and rejected in
one concatenated forward pass), batched greedy generation with the KV cache,
and the supervised fine-tuning loss.

The reference (SPEC §3) is never the policy:
- LoRA, client: adapter "sft" is trained on private train (Algorithm 1 ❶), then
  frozen; the policy is "sft"+"policy" (the "policy" adapter starts at zero, so
  φ_k starts at φ_ref_k); the reference runs with "sft" alone.
- LoRA, server: the policy is base+"policy"; the reference is the base with the
  adapter disabled (the pretrained LLM).
- No LoRA: `freeze_reference()` keeps a frozen copy of the weights.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import weakref
from dataclasses import dataclass
from typing import Hashable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from ladalit.scale import data_parallel
from ladalit.core.prompts import CutAnswer


@dataclass(frozen=True)
class Sampling:
    """Nucleus sampling for `Participant.generate_text`: temperature > 0, top_p in (0, 1], and the seed the
    generation starts from (the caller's global RNG is restored afterwards)."""
    temperature: float
    top_p: float
    seed: int


@contextlib.contextmanager
def seeded(sampling: Sampling | None, device: torch.device):
    """With `sampling`: torch's RNG seeded from it inside, and left as it was outside. Without: nothing."""
    if sampling is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(sampling.seed)
        yield


def on_device(method):
    """Mark a method that computes: with `fabric.offload_idle` the participant is brought onto the
    accelerator first (ladalit.scale.offload.Residency), and whoever was there is parked."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.residency is not None:
            self.residency.use(self)
        return method(self, *args, **kwargs)
    return wrapper


class Participant(L.LightningModule):
    """A server LLM or a client SLM: a Hugging Face causal LM, its tokenizer and its frozen reference.

    With LoRA (`lora_cfg.enabled`) a client carries two adapters, a frozen "sft" one (its reference
    φ_ref_k after the private SFT) and the trained "policy"; the server carries "policy" alone, and its
    reference is the base with the adapter disabled. Without LoRA, :meth:`freeze_reference` keeps a frozen
    copy of the weights. Methods that run the model are decorated with `@on_device` (offloading) and listed
    in `FORWARD_METHODS` (FSDP2).

    Args:
        name: the participant's name (`server`, or a key of the config's `clients`).
        role: `"client"` or `"server"`.
        model: the causal LM.
        tokenizer: its own tokenizer.
        train_cfg (TrainConfig): learning rate, batch size, max_length, ... (`ladalit.core.config`).
        lora_cfg (LoraConfig | None): its LoRA settings, or None for full fine-tuning.
    """

    def __init__(self, name: str, role: str, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                 train_cfg, lora_cfg=None):
        super().__init__()
        assert role in ("client", "server"), role
        self.name, self.role = name, role
        self.tokenizer = tokenizer
        self.train_cfg = train_cfg
        self.use_lora = bool(lora_cfg is not None and lora_cfg.enabled)
        if self.use_lora:
            model = _add_lora(model, lora_cfg, ["sft", "policy"] if role == "client" else ["policy"])
        self.model = model
        self.ref_model: torch.nn.Module | None = None
        self.reference_frozen = False  # freeze_reference() was called (a checkpoint restores it)
        self.reference_passes = 0  # reference computations, one per cache key (round, sample)
        self._ref_cache: dict[Hashable, tuple[float, float]] = {}
        self.optimizers_made: weakref.WeakSet = weakref.WeakSet()  # what ladalit.scale.offload parks with the weights
        self.residency = None  # ladalit.scale.offload.Residency, when idle participants are parked
        if self.use_lora:
            self.train_adapters(["sft"] if role == "client" else ["policy"])

    # ---------------------------------------------------------------- adapters and reference
    def train_adapters(self, names: list[str]) -> None:
        """LoRA: activate `names` (plus the frozen "sft" for a client's policy) and train only `names`."""
        active = names if names == ["sft"] or self.role == "server" else ["sft", *names]
        self.model.base_model.set_adapter(active)
        for n, p in self.model.named_parameters():
            p.requires_grad = any(f".{a}." in n for a in names)

    def freeze_reference(self) -> None:
        """The current weights become the frozen reference; the policy starts from them."""
        self.reference_frozen = True
        if self.use_lora:
            if self.role == "client":
                self.train_adapters(["policy"])
            return
        self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)

    @contextlib.contextmanager
    def reference(self):
        """Run the frozen reference model inside this context."""
        if not self.use_lora:
            assert self.ref_model is not None, f"{self.name}: freeze_reference() was not called"
            yield self.ref_model
        elif self.role == "server":
            with self.model.disable_adapter():
                yield self.model
        else:
            active = list(self.model.base_model.active_adapters)
            self.model.base_model.set_adapter(["sft"])
            try:
                yield self.model
            finally:
                self.model.base_model.set_adapter(active)
                for n, p in self.model.named_parameters():  # set_adapter resets requires_grad
                    p.requires_grad = ".policy." in n

    # ---------------------------------------------------------------- tokenisation
    def _rows(self, prompts: Sequence[str], responses: Sequence[str]) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, response ids) per pair, in this participant's own tokenizer.

        Prompt and response are tokenised separately, so the boundary is exact. The response ends
        with EOS unless it is a `CutAnswer` (generation stopped at the token budget: the model never
        ended it). An over-long pair keeps its prompt (the question and instruction) and loses the end
        of its response, then without EOS; only a prompt longer than max_length − 1 is cut, from the
        left after its leading special tokens (`cut_left`).
        """
        if not len(prompts):
            return []
        tok, max_len = self.tokenizer, self.train_cfg.max_length
        p_all = tok([str(x) for x in prompts], add_special_tokens=True)["input_ids"]
        r_all = tok([str(x) for x in responses], add_special_tokens=False)["input_ids"]
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        rows = []
        for p_ids, r_ids, resp in zip(p_all, r_all, responses):
            p_ids = self.cut_left(p_ids, max_len - 1)
            room = max_len - len(p_ids)
            end = [] if isinstance(resp, CutAnswer) or len(r_ids) + len(eos) > room else eos
            rows.append((p_ids, r_ids[: room - len(end)] + end))
        return rows

    def response_ids(self, prompts: Sequence[str], responses: Sequence[str]) -> list[list[int]]:
        """The response tokens each pair is trained on (EOS included, after any cut; `_rows`)."""
        return [r for _, r in self._rows(prompts, responses)]

    def response_lengths(self, prompts: Sequence[str], responses: Sequence[str]) -> list[int]:
        """The number of response tokens each pair is trained on (EOS included, after any cut; `_rows`)."""
        return [len(r) for r in self.response_ids(prompts, responses)]

    def overlong_pairs(self, prompts: Sequence[str], responses: Sequence[str]) -> int:
        """How many (prompt, response) pairs exceed max_length in this participant's tokens (with EOS),
        so that `_rows` cuts their response."""
        tok, max_len = self.tokenizer, self.train_cfg.max_length
        if not len(prompts):
            return 0
        p_all = tok([str(x) for x in prompts], add_special_tokens=True)["input_ids"]
        r_all = tok([str(x) for x in responses], add_special_tokens=False)["input_ids"]
        end = 0 if tok.eos_token_id is None else 1
        return sum(len(p) + len(r) + (0 if isinstance(y, CutAnswer) else end) > max_len
                   for p, r, y in zip(p_all, r_all, responses))

    def cut_left(self, ids: list[int], budget: int) -> list[int]:
        """`ids` cut from the left to `budget` tokens, keeping a leading BOS: an over-long prompt loses
        the start of its text (a one-shot prompt: its worked example first), never its end (the question
        and "Answer: Let's think step by step.")."""
        if len(ids) <= budget:
            return ids
        bos = self.tokenizer.bos_token_id
        head = ids[:1] if bos is not None and ids and ids[0] == bos else []
        return head + ids[len(ids) - (budget - len(head)):]

    def prompt_budget(self, max_new_tokens: int) -> int:
        """Prompt tokens that leave room for `max_new_tokens` within max_length."""
        return max(self.train_cfg.max_length - max_new_tokens, 8)

    def prompt_ids(self, prompts: Sequence[str], max_new_tokens: int) -> tuple[list[list[int]], list[bool]]:
        """Generation prompts in this participant's tokens, cut from the left to `prompt_budget`
        (`cut_left`), and whether each was cut. The one rule for the HF and vLLM backends."""
        budget = self.prompt_budget(max_new_tokens)
        ids = self.tokenizer([str(x) for x in prompts], add_special_tokens=True)["input_ids"]
        return [self.cut_left(x, budget) for x in ids], [len(x) > budget for x in ids]

    def _encode(self, prompts: Sequence[str], responses: Sequence[str]):
        """Right-padded prompt+response ids, attention mask and a mask of the response tokens (see `_rows`)."""
        return self._pad(self._rows(prompts, responses))

    def _pad(self, rows: list[tuple[list[int], list[int]]]):
        width = max((len(p) + len(r) for p, r in rows), default=1)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        resp = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, (p, r) in enumerate(rows):
            n = len(p) + len(r)
            ids[i, :n] = torch.tensor(p + r)
            attn[i, :n] = 1
            resp[i, len(p):n] = True
        return ids.to(self.device), attn.to(self.device), resp.to(self.device)

    # ---------------------------------------------------------------- log-probs
    def _response_logprobs(self, prompts, responses, model: torch.nn.Module | None = None):
        """log p of every response token given its prefix, from one forward pass.

        Returns (logp [N], seq [N], col [N], width): the N response tokens of all
        pairs, their pair index and their column in the right-padded layout of
        `_encode` (whose width is `width`).

        For transformers' own models the pairs are packed: first-fit decreasing
        into rows as wide as the longest pair, every pair restarting its
        position ids at 0, no attention mask, so that transformers builds a
        block-diagonal causal mask and no pair sees another; and the LM head
        and the log-softmax run only at the positions that predict a response
        token (`logits_to_keep` as a boolean mask). Padding and prompt
        positions cost neither vocabulary projection nor softmax. Other models
        (remote code) get the right-padded batch and full logits.
        """
        model = model or self.model
        rows = self._rows(prompts, responses)
        lengths = [len(p) + len(r) for p, r in rows]
        width = max(lengths, default=1)
        if not _packs(model):
            ids, attn, resp = self._pad(rows)
            logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
            targets = ids[:, 1:]
            logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
            seq, col = resp[:, 1:].nonzero(as_tuple=True)
            return logp[seq, col], seq, col + 1, width
        place = _first_fit_decreasing(lengths, width)
        n_rows = 1 + max((r for r, _ in place), default=0)
        ids = torch.full((n_rows, width), self.tokenizer.pad_token_id, dtype=torch.long)
        pos = torch.arange(width).repeat(n_rows, 1)  # trailing padding: never seen by a pair (causal)
        keep = torch.zeros((n_rows, width), dtype=torch.bool)  # positions that predict a response token
        seq = torch.full((n_rows, width), -1, dtype=torch.long)
        for i, ((p, r), (row, off)) in enumerate(zip(rows, place)):
            n = len(p) + len(r)
            ids[row, off: off + n] = torch.tensor(p + r)
            pos[row, off: off + n] = torch.arange(n)
            first = max(len(p), 1)  # the first token has no prefix to predict it from
            keep[row, off + first - 1: off + n - 1] = True
            seq[row, off + first - 1: off + n - 1] = i
        targets = torch.cat([ids[:, 1:], ids[:, :1]], 1)[keep]
        col = (pos + 1)[keep]
        seq = seq[keep]
        dev = self.device
        logits = model(input_ids=ids.to(dev), position_ids=pos.to(dev), use_cache=False,
                       logits_to_keep=keep.to(dev)).logits
        assert logits.shape[:-1] == targets.shape, f"logits_to_keep ignored: {tuple(logits.shape)}"
        logp = -F.cross_entropy(logits.float(), targets.to(dev), reduction="none")
        return logp, seq.to(dev), col.to(dev), width

    @on_device
    def token_logprobs(self, prompts, responses, model: torch.nn.Module | None = None):
        """Per-token log-probs of the responses given the prompts: (logp [B, T-1], mask [B, T-1]).

        Column t holds log p(token t+1 | tokens ≤ t) of the right-padded layout of
        `_encode`; only response tokens are computed, so logp is 0 where mask is False.
        """
        logp, seq, col, width = self._response_logprobs(prompts, responses, model)
        grid = logp.new_zeros((len(prompts), width - 1)).index_put((seq, col - 1), logp)
        mask = torch.zeros((len(prompts), width - 1), dtype=torch.bool, device=logp.device)
        mask[seq, col - 1] = True
        return grid, mask

    @on_device
    def sequence_logprobs(self, prompts, responses, model: torch.nn.Module | None = None,
                          lengths: Sequence[int] | None = None) -> torch.Tensor:
        """log p(y|x): the sum of the response tokens' log-probs, [B]; with `lengths`, the sum over each
        response's first lengths[i] tokens only (of those `response_ids` gives)."""
        logp, seq, col, _ = self._response_logprobs(prompts, responses, model)
        if lengths is not None:  # a response's token j sits at column len(prompt) + j
            ends = torch.tensor([len(p) + n for (p, _), n in zip(self._rows(prompts, responses), lengths)],
                                device=col.device)
            keep = col < ends[seq]
            logp, seq = logp[keep], seq[keep]
        return logp.new_zeros(len(prompts)).index_add(0, seq, logp)

    @on_device
    def pair_logprobs(self, prompts, chosen, rejected, model: torch.nn.Module | None = None,
                      lengths: tuple[Sequence[int], Sequence[int]] | None = None):
        """log p(chosen|x) and log p(rejected|x) in one concatenated (packed) forward pass; `lengths`: (chosen's,
        rejected's) numbers of leading response tokens to sum over (`sequence_logprobs`), None = all."""
        n = len(prompts)
        both = self.sequence_logprobs(list(prompts) * 2, list(chosen) + list(rejected), model,
                                      None if lengths is None else [*lengths[0], *lengths[1]])
        return both[:n], both[n:]

    @torch.no_grad()
    @on_device
    def reference_pair_logprobs(self, keys: Sequence[Hashable], prompts, chosen, rejected,
                                lengths: tuple[Sequence[int], Sequence[int]] | None = None):
        """Reference log-probs of (chosen, rejected), computed once per key and cached (`lengths` as in
        `pair_logprobs`: a key's lengths must be the same at every call).

        Split over processes (FSDP2), a forward pass is a collective: when any process misses a key,
        every process runs one (one with nothing missing recomputes its first row)."""
        missing = [i for i, k in enumerate(keys) if k not in self._ref_cache]
        forward = bool(missing)
        if data_parallel.world_of(self.fabric)[1] > 1:
            forward = data_parallel.any_process(forward, self.device)
        if forward:
            rows = missing or [0]
            with self.reference() as ref:
                rc, rr = self.pair_logprobs([prompts[i] for i in rows], [chosen[i] for i in rows],
                                            [rejected[i] for i in rows], model=ref,
                                            lengths=None if lengths is None else
                                            tuple([side[i] for i in rows] for side in lengths))
            for j, i in enumerate(missing):
                self._ref_cache[keys[i]] = (rc[j].item(), rr[j].item())
            self.reference_passes += len(missing)
        vals = torch.tensor([self._ref_cache[k] for k in keys], dtype=torch.float32, device=self.device)
        return vals[:, 0], vals[:, 1]

    def clear_reference_cache(self) -> None:
        self._ref_cache.clear()

    @on_device
    def sft_loss(self, prompts, responses) -> torch.Tensor:
        """Mean token cross-entropy of the responses (prompt tokens masked)."""
        logp, mask = self.token_logprobs(prompts, responses)
        return -(logp * mask).sum() / mask.sum().clamp(min=1)

    # ---------------------------------------------------------------- generation
    @torch.no_grad()
    @on_device
    def generate_text(self, prompts: Sequence[str], max_new_tokens: int, batch_size: int,
                      cut: list | None = None, sampling: Sampling | None = None) -> list[str]:
        """Greedy generation with the KV cache, batched (left padding, similar lengths together); with
        `sampling`, nucleus sampling from its seed (the global RNG is left as it was).

        Prompts longer than `prompt_budget(max_new_tokens)` lose their start (`prompt_ids`). `cut`, when
        given, receives one bool per prompt: whether its answer reached max_new_tokens before EOS.

        Split over processes (FSDP2), every process must pass the same prompts: each generates its share
        (ladalit.scale.data_parallel.share) and all get every answer back, in order."""
        rank, world = data_parallel.world_of(self.fabric)
        if world == 1 or not prompts:
            return self.generate_local(prompts, max_new_tokens, batch_size, cut, sampling)
        rows, _ = data_parallel.share(len(prompts), rank, world)
        mine_cut: list[bool] = []
        mine = self.generate_local([prompts[i] for i in rows], max_new_tokens, batch_size, mine_cut, sampling)
        both = data_parallel.gather_objects(list(zip(mine, mine_cut)), len(prompts))
        if cut is not None:
            cut += [c for _, c in both]
        return [t for t, _ in both]

    @torch.no_grad()
    @on_device
    def generate_local(self, prompts: Sequence[str], max_new_tokens: int, batch_size: int,
                       cut: list | None = None, sampling: Sampling | None = None) -> list[str]:
        """`generate_text` on this process's own prompts, not split (under FSDP2 every process must call it,
        with the same number of prompts; HF's synced_gpus keeps the processes' decoding steps matched when
        their sequences end at different steps)."""
        tok = self.tokenizer
        was_training = self.model.training
        self.model.eval()
        ids, _ = self.prompt_ids(prompts, max_new_tokens)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[str] = [""] * len(prompts)
        stopped = [False] * len(prompts)
        decoding = (dict(do_sample=False) if sampling is None else
                    dict(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0))
        with seeded(sampling, self.device):
            try:
                for s in range(0, len(order), batch_size):
                    idx = order[s: s + batch_size]
                    width = max(len(ids[i]) for i in idx)
                    enc = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
                    attn = torch.zeros((len(idx), width), dtype=torch.long)
                    for j, i in enumerate(idx):  # left padding
                        enc[j, width - len(ids[i]):] = torch.tensor(ids[i])
                        attn[j, width - len(ids[i]):] = 1
                    gen = self.model.generate(input_ids=enc.to(self.device), attention_mask=attn.to(self.device),
                                              max_new_tokens=max_new_tokens, **decoding,
                                              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
                    new = gen[:, width:]
                    texts = tok.batch_decode(new, skip_special_tokens=True)
                    for j, (i, t) in enumerate(zip(idx, texts)):
                        out[i] = t
                        stopped[i] = new.shape[1] < max_new_tokens or bool((new[j] == tok.eos_token_id).any())
            finally:
                self.model.train(was_training)
        if cut is not None:
            cut += [not x for x in stopped]
        return out

    # ---------------------------------------------------------------- Lightning
    @on_device
    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def configure_optimizers(self, lr: float | None = None):
        """AdamW over the trainable parameters, at `lr` (None: train.lr)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.train_cfg.lr if lr is None else lr,
                                weight_decay=self.train_cfg.weight_decay)
        self.optimizers_made.add(opt)
        return opt

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must keep: the adapters with LoRA, else all weights."""
        sd = self.model.state_dict()
        return {k: v for k, v in sd.items() if "lora_" in k} if self.use_lora else sd


def _add_lora(model, lora_cfg, names: list[str]):
    from peft import LoraConfig, get_peft_model
    targets = lora_cfg.target_modules
    targets = "all-linear" if list(targets) == ["all-linear"] else list(targets)

    def make():
        return LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                          target_modules=targets, task_type="CAUSAL_LM")
    model = get_peft_model(model, make(), adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, make())
    return model


def _packs(model: torch.nn.Module) -> bool:
    """Whether `model` is one of transformers' own causal LMs (packed sequences, boolean `logits_to_keep`)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return any(c.__module__.startswith("transformers.models.") for c in type(base).__mro__)


def _first_fit_decreasing(lengths: list[int], width: int) -> list[tuple[int, int]]:
    """(row, offset) of each sequence, packed longest first into the first row with room."""
    free: list[int] = []
    place: list[tuple[int, int]] = [(0, 0)] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, f in enumerate(free) if f >= lengths[i]), len(free))
        if row == len(free):
            free.append(width)
        place[i] = (row, width - free[row])
        free[row] -= lengths[i]
    return place
