"""A tiny zoo of pre-trained decoder models for the CPU proving ground.

No pretrained LLM can be downloaded here, so the zoo builds its own: tokenizers
trained with `tokenizers` on the synthetic task (`ladalit.demo.synthetic`), and small
llama / qwen3 / gemma models pre-trained on it with a plain torch loop. The
curricula make the paper's premises hold by construction:

- the server is taught rationales for chains of 1-4 shared operations, and never sees a
  record of a client domain (no domain fact is in its corpus);
- each client is smaller, and is taught rationales for chains of at most two steps, of
  the shared operations and of its own domain's facts (`ladalit.demo.synthetic.FACTS`); since
  world v6 two clients also see a share of the longer shared chains (`partial_steps`);
- every member sees a share of its examples in the one-shot prompt format, and the server
  also learns to write questions in the task's format (the WASP baseline's generation prompt).

`learnable_steps` is the longest chain a member is meant to be able to learn from
rationales (the smallest client: 3); the oracle (`ladalit.demo.oracle`) uses it to label
which public samples a pair can learn from, for analysis only.

    model, tokenizer = load_member("server")      # trains once, then loads from the cache
    quick_eval(model, tokenizer, records)          # accuracy of the parsed "answer is (X)"

Shipped weights: the repository carries every member's pre-trained weights and tokenizer
(`ladalit/demo/weights/{name}-{hash}/`, about 6 MB), with their sha256 in
`ladalit/demo/weights/SHA256SUMS` (`cd ladalit/demo/weights && sha256sum -c SHA256SUMS`).
`load_member` loads them after checking every file's sha256, so every user starts from the
same models whatever CPU they have; pre-training on this machine is not bit-reproducible
elsewhere (the float sums depend on the CPU's kernels).

Cache: a member that is not shipped at its current hash (a changed spec) is pre-trained once
into `cache_dir / f"{name}-{hash}"` (safetensors + tokenizer + zoo.json), the hash covering the
member spec, its tokenizer spec, the corpus and CODE_VERSION.
Default cache dir: $LADALIT_CACHE or ~/.cache/ladalit/zoo.

    python -m ladalit.demo.zoo                     # accuracy per member and step count (shipped weights)
    python -m ladalit.demo.zoo --retrain --cache-dir /tmp/zoo   # pre-train again, compare with the shipped
    python -m ladalit.demo.zoo --ship              # pre-train (or take the cache's) and ship them
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import string
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from ladalit.core.prompts import (ONE_SHOT_EXAMPLES, format_question, format_response, one_shot_prompt, private_sft_pairs,
                                  zero_shot_prompt)
from ladalit.data.records import MCRecord
from ladalit.demo.synthetic import VERSION as SYNTHETIC_VERSION
from ladalit.demo.synthetic import CLIENT_DOMAINS, DOMAINS, SHARED, SyntheticConfig, generate, num_steps
from ladalit.baselines.wasp import generation_prompt
from ladalit.core.progress import Progress
from ladalit.core.run_identity import file_sha256

# bump when a change to this file changes what a cached member would contain
CODE_VERSION = "zoo-4+" + SYNTHETIC_VERSION
EXAMPLE = ONE_SHOT_EXAMPLES["synthetic"]  # the worked example of the demo world's one-shot prompts
BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
ANSWER_RE = re.compile(r"answer is \(([A-J])\)")


# ----------------------------------------------------------------------------- prompt format

def parse_answer(text: str) -> str | None:
    m = ANSWER_RE.search(text)
    return m.group(1) if m else None


# ----------------------------------------------------------------------------- specs

@dataclass(frozen=True)
class TokenizerSpec:
    name: str
    # "bytebpe": GPT-2/Qwen-style byte-level BPE ("Ġ" marks a space), every byte representable;
    # "metaspace": Llama/Gemma-style BPE over printable ASCII ("▁" marks a space, other characters -> unk)
    kind: str = "bytebpe"
    # vocab_size 0 (bytebpe only) keeps just the 256 byte symbols: a character-level tokenizer
    vocab_size: int = 0


@dataclass(frozen=True)
class TrainSpec:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class ZooMember:
    name: str
    arch: str  # a transformers model type: qwen3 | llama | gemma | gemma2 | qwen2 | internlm3 ...
    tokenizer: TokenizerSpec
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    # curriculum: records of these domains with at most this many steps get the rationale...
    rationale_domains: tuple[str, ...] = (SHARED,)
    rationale_max_steps: int = 4
    # ...and, beyond rationale_max_steps, this share of the records of (domain, steps), chosen by a hash of the
    # record's id: a partial exposure that leaves longer chains half known, within reach of a few hundred more
    # rationales (world v6)
    partial_steps: tuple[tuple[str, int, float], ...] = ()
    # ...every other record gets the short answer only (short_answers) or is left out (not short_answers),
    # and this fraction of the taught records gets the short answer too
    short_answers: bool = True
    short_fraction: float = 0.0
    # the share of examples shown in the one-shot prompt format (after the worked EXAMPLE)
    one_shot_fraction: float = 0.3
    # the share of taught records added once more in the direct-answer format (question, options, "Answer:"
    # -> the short answer statement): the format of the private-train SFT (`prompts.private_sft_pairs`)
    direct_fraction: float = 0.0
    # pairs added per taught record: WASP's generation prompt (3 records as examples) -> a new question
    question_fraction: float = 0.0
    # the longest chain this member is meant to learn from another's rationales (the oracle's label only)
    learnable_steps: int = 4
    train: TrainSpec = field(default_factory=TrainSpec)
    # the pre-training corpus (its own seed: the experiments' data use others)
    corpus: SyntheticConfig = field(default_factory=lambda: SyntheticConfig(num_records=20000, seed=1000))
    max_position_embeddings: int = 1024
    # std of the initial weights; HF's 0.02 is meant for hidden sizes in the thousands and leaves the
    # attention of a hidden-64 model near uniform for hundreds of steps
    init_std: float = 0.1

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


CHAR = TokenizerSpec("char", "bytebpe", 0)
BPE = TokenizerSpec("bpe", "bytebpe", 448)
BPE_SMALL = TokenizerSpec("bpe320", "bytebpe", 320)
SP = TokenizerSpec("sp", "metaspace", 320)

# The server learns chains of every length over the shared operations, and no domain's facts; each client
# learns its own domain's facts and the shared operations, in chains of at most two steps, and is smaller
# (no short answers: greedy decoding always reasons). Client k's domain is the k-th of CLIENT_DOMAINS in the
# order the split deals them (sorted: calendar, kitchen, market), matching conf/demo.yaml's client1..3.
# Families and tokenizers differ as in the paper (qwen3 / llama / gemma; three BPEs). Client3 is a gemma
# rather than a gemma2: transformers gives gemma2 eager attention only (its logit soft-capping), and with
# a character-level tokenizer it was half of the zoo's pre-training time (world v2, docs/demo.md). Each client also
# sees a tenth of its taught records in the direct-answer format of its private-train SFT (world v4): without
# it, that SFT took world v3's client3 from 0.45 to 0.04 step-by-step accuracy in two epochs. Client3 trains
# 4000 steps (world v5): at 1500 it ended at loss 0.067 (the others 0.02) and solved 0.81 / 0.39 of its own
# domain's 1- / 2-step items, failing precondition b (>= 0.8, benchmarks/demo_preconditions.py); at 4000,
# 0.98 / 0.98, and shared 3-4 steps still 0.22 / 0.25 (100 items per cell, `python -m ladalit.demo.zoo`).
# World v6: the two larger clients also saw a share of the longer shared chains with their rationale (HALF_TAUGHT,
# chosen by each record's id), as an SLM half knows reasoning it has not mastered. On world v5 no client could gain
# from an oracle teacher (precondition d: its learnable chains were those it already solved); with this exposure
# client2 learns 3- and 4-step chains from 200 gold rationales (51 -> 72, 26 -> 40, seed 0) and gains 6-8.5 points
# from the server's answers to its correctable samples; the llama trains 2200 steps (at 1500 it ended at loss
# 0.10, at 3000 it solved 55% of shared 3-4-step items, over precondition b's 50%). The gemma, the smallest, keeps
# v5's curriculum: learnability that ends at two steps (precondition c). benchmarks/results/demo_world_v6_probe.md.
HALF_TAUGHT = ((SHARED, 3, 0.3), (SHARED, 4, 0.1))
ZOO: dict[str, ZooMember] = {m.name: m for m in [
    ZooMember("server", "qwen3", BPE, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
              intermediate_size=384, one_shot_fraction=0.15, question_fraction=0.05, short_answers=False,
              train=TrainSpec(steps=1500, batch_size=16, seed=0)),
    ZooMember("client-llama", "llama", SP, hidden_size=96, num_layers=2, num_heads=4, num_kv_heads=2,
              intermediate_size=256, rationale_domains=("calendar", SHARED), rationale_max_steps=2,
              partial_steps=HALF_TAUGHT, short_answers=False, direct_fraction=0.1,
              train=TrainSpec(steps=2200, batch_size=16, seed=1)),
    ZooMember("client-qwen3", "qwen3", BPE, hidden_size=96, num_layers=3, num_heads=4, num_kv_heads=2,
              intermediate_size=256, rationale_domains=("kitchen", SHARED), rationale_max_steps=2,
              partial_steps=HALF_TAUGHT, short_answers=False, direct_fraction=0.1,
              train=TrainSpec(steps=1500, batch_size=16, seed=3)),
    ZooMember("client-gemma", "gemma", BPE_SMALL, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=1,
              intermediate_size=192, rationale_domains=("market", SHARED), rationale_max_steps=2,
              short_answers=False, direct_fraction=0.1, learnable_steps=3,
              train=TrainSpec(steps=4000, batch_size=16, seed=2)),
]}
assert sorted(CLIENT_DOMAINS) == ["calendar", "kitchen", "market"]


def _digest(*parts) -> str:
    blob = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def member_hash(member: ZooMember) -> str:
    """Changes whenever the spec, its tokenizer, its corpus, its training or CODE_VERSION changes (a field added
    since world v5 counts only where it differs from its default, so the members that do not use it keep their
    hash and their shipped weights)."""
    spec = asdict(member)
    if not member.partial_steps:
        del spec["partial_steps"]
    return _digest(spec, CODE_VERSION)


def default_cache_dir() -> Path:
    return Path(os.environ.get("LADALIT_CACHE") or Path.home() / ".cache" / "ladalit" / "zoo")


# ----------------------------------------------------------------------------- tokenizers

def build_tokenizer(spec: TokenizerSpec, texts: list[str]) -> PreTrainedTokenizerFast:
    """A BPE trained on `texts`; digits always split one by one; BOS added to every encoding."""
    digits = pre_tokenizers.Digits(individual_digits=True)
    specials = [PAD, BOS, EOS]
    if spec.kind == "bytebpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([digits, pre_tokenizers.ByteLevel(add_prefix_space=False)])
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    elif spec.kind == "metaspace":
        specials.append(UNK)
        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Sequence([digits, pre_tokenizers.Metaspace(prepend_scheme="never")])
        tok.decoder = decoders.Metaspace(prepend_scheme="never")
        alphabet = [c for c in string.printable if c not in " \t\r\x0b\x0c"] + ["\u2581"]
    else:
        raise ValueError(f"unknown tokenizer kind {spec.kind!r} (bytebpe | metaspace)")
    trainer = trainers.BpeTrainer(vocab_size=max(spec.vocab_size, len(alphabet) + len(specials)),
                                  special_tokens=specials, initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    extra = {"unk_token": UNK} if spec.kind == "metaspace" else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   padding_side="left", **extra)


def corpus_texts(cfg: SyntheticConfig) -> list[str]:
    """The texts a zoo tokenizer is trained on: every record as prompt and response, the worked example and
    the question-writing instruction."""
    texts = [zero_shot_prompt(r) + format_response(r.rationale, r.answer) for r in generate(cfg, unique=False)]
    return texts + [one_shot_prompt(EXAMPLE, EXAMPLE), generation_prompt([], [], [EXAMPLE], 4)]


def load_tokenizer(spec: TokenizerSpec, corpus: SyntheticConfig, cache_dir: Path | None = None) -> PreTrainedTokenizerFast:
    """Train the tokenizer once per (spec, corpus); later calls load it from the cache."""
    path = Path(cache_dir or default_cache_dir()) / f"tok-{spec.name}-{_digest(spec, corpus, CODE_VERSION)}"
    if (path / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(path)
    tok = build_tokenizer(spec, corpus_texts(corpus))
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tok.save_pretrained(tmp)
    _publish(tmp, path)
    return tok


def _publish(tmp: Path, path: Path) -> None:
    """Move a finished directory into place; if another process won the race, keep theirs."""
    try:
        tmp.rename(path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- models

def build_model(member: ZooMember, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    extra = {"query_pre_attn_scalar": member.head_dim} if member.arch == "gemma2" else {}
    cfg = AutoConfig.for_model(
        member.arch, vocab_size=len(tokenizer), hidden_size=member.hidden_size,
        num_hidden_layers=member.num_layers, num_attention_heads=member.num_heads,
        num_key_value_heads=member.num_kv_heads, intermediate_size=member.intermediate_size,
        head_dim=member.head_dim, max_position_embeddings=member.max_position_embeddings,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, initializer_range=member.init_std, **extra)
    torch.manual_seed(member.train.seed)
    model = AutoModelForCausalLM.from_config(cfg)
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id
    return model


def taught(member: ZooMember, rec: MCRecord) -> bool:
    """Whether the member's curriculum teaches this record with its rationale."""
    if rec.domain not in member.rationale_domains:
        return False
    steps = num_steps(rec)
    if steps <= member.rationale_max_steps:
        return True
    share = {(d, n): f for d, n, f in member.partial_steps}.get((rec.domain, steps), 0.0)
    return share > 0 and _unit(rec.id) < share


def _unit(text: str) -> float:
    """A number in [0, 1) fixed by `text` (a partial curriculum's draw, independent of any rng's state)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def curriculum(member: ZooMember, records: list[MCRecord], seed: int) -> list[tuple[str, str]]:
    """(prompt, response) pairs: a rationale where the member's curriculum allows one, else the short answer
    (or nothing, without short answers); a share in the one-shot format; a share of the taught records once
    more after the direct-answer prompt, with the short answer (`direct_fraction`); and, for a member that
    writes questions, WASP's generation prompt over three taught records followed by a new taught question."""
    rng = random.Random(seed)
    pairs, pool = [], []
    for r in records:
        if not taught(member, r) and not member.short_answers:
            continue
        short = not taught(member, r) or rng.random() < member.short_fraction
        prompt = one_shot_prompt(r, EXAMPLE) if rng.random() < member.one_shot_fraction else zero_shot_prompt(r)
        pairs.append((prompt, format_response(None if short else r.rationale, r.answer)))
        if taught(member, r):
            pool.append(r)
            # rng drawn only for a member with the share, so that the others' curricula stay as they were
            if member.direct_fraction and rng.random() < member.direct_fraction:
                pairs.extend(zip(*private_sft_pairs([r], "direct")))  # the private SFT's own pair for r
    n_questions = round(member.question_fraction * len(pool))
    for _ in range(n_questions if len(pool) >= 4 else 0):
        *examples, new = rng.sample(pool, 4)
        question = format_question(new.public()).removeprefix("Question:").rstrip("\n")
        pairs.append((generation_prompt([], [], examples, len(new.options)), question))
    rng.shuffle(pairs)
    return pairs


def encode_pairs(tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[float]]]:
    """Token ids of BOS+prompt+response+EOS, and loss weights: 0 on the prompt, 1 on the response and EOS.
    Prompt and response are encoded apart (both tokenizer kinds split at their boundary, so the ids equal
    those of the joined text)."""
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=True)["input_ids"]
    responses = tokenizer([r for _, r in pairs], add_special_tokens=False)["input_ids"]
    return [(p + r + [tokenizer.eos_token_id], [0.0] * len(p) + [1.0] * (len(r) + 1))
            for p, r in zip(prompts, responses)]


def _collate(items, pad_id: int):
    n = max(len(ids) for ids, _ in items)
    ids = torch.full((len(items), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), n), dtype=torch.long)
    weights = torch.zeros((len(items), n))
    for i, (x, w) in enumerate(items):
        ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
        weights[i, : len(w)] = torch.tensor(w)
    return ids, mask, weights


def weighted_lm_loss(model, ids, mask, weights) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    w = weights[:, 1:]
    return (nll * w).sum() / w.sum().clamp_min(1.0)


def length_bucketed_batches(lengths: list[int], batch_size: int, g: torch.Generator, bucket: int = 16) -> list[list[int]]:
    """One epoch of minibatches (whole ones only), popped from the end: a seeded shuffle, cut into chunks of
    `bucket` batches, each chunk sorted by length before it is split, then the batches shuffled. Examples of
    similar length share a batch, so little of it is padding (one-shot prompts are twice as long)."""
    order = torch.randperm(len(lengths), generator=g).tolist()
    batches = []
    for i in range(0, len(order), batch_size * bucket):
        chunk = sorted(order[i: i + batch_size * bucket], key=lambda j: lengths[j])
        batches += [chunk[k: k + batch_size] for k in range(0, len(chunk) - batch_size + 1, batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


def pretrain(model, tokenizer, member: ZooMember, progress=None) -> list[float]:
    """Plain AdamW loop, loss on response tokens only. Returns the loss of every step.

    `progress`: a `ladalit.core.progress.Task` advanced every step (a bar on a terminal, else a line every 30 s)."""
    ts = member.train
    records = generate(member.corpus, unique=False)
    data = encode_pairs(tokenizer, curriculum(member, records, ts.seed))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": ts.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=ts.lr, betas=(0.9, 0.95))

    def lr_at(step):
        if step < ts.warmup:
            return ts.lr * (step + 1) / ts.warmup
        t = (step - ts.warmup) / max(1, ts.steps - ts.warmup)
        return ts.lr * (ts.min_lr_ratio + (1 - ts.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

    g = torch.Generator().manual_seed(ts.seed)
    model.train()
    losses, batches = [], []
    for step in range(ts.steps):
        if not batches:
            batches = length_bucketed_batches([len(ids) for ids, _ in data], ts.batch_size, g)
        batch = [data[i] for i in batches.pop()]
        ids, mask, weights = _collate(batch, tokenizer.pad_token_id)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = weighted_lm_loss(model, ids, mask, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), ts.grad_clip)
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress.update(description=f"pre-training {member.name}, loss {sum(losses[-20:]) / len(losses[-20:]):.3f}")
            progress.advance()
    model.eval()
    return losses


def member_dir(member: ZooMember, cache_dir: Path | str | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"{member.name}-{member_hash(member)}"


# ----------------------------------------------------------------------------- shipped weights

SHIPPED = Path(__file__).resolve().with_name("weights")
SUMS = "SHA256SUMS"  # `sha256sum` format: "<hex>  <member dir>/<file>", one line per shipped file


class ZooIntegrityError(RuntimeError):
    """A shipped file is missing or its sha256 differs from SHA256SUMS."""


def read_sums(shipped: Path | None = None) -> dict[str, str]:
    """relative path -> sha256 of every shipped file; {} where nothing is shipped."""
    sums = (shipped or SHIPPED) / SUMS
    if not sums.exists():
        return {}
    out = {}
    for line in sums.read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        out[rel.lstrip("*")] = digest
    return out


def shipped_member(member: ZooMember, shipped: Path | None = None) -> Path | None:
    """The shipped directory of `member` at its current hash, its files checked against SHA256SUMS; None when
    this spec is not shipped (it is then pre-trained into the cache)."""
    shipped = shipped or SHIPPED
    name = f"{member.name}-{member_hash(member)}"
    files = {rel: d for rel, d in read_sums(shipped).items() if rel.split("/", 1)[0] == name}
    if not files:
        return None
    for rel, want in sorted(files.items()):
        path = shipped / rel
        got = file_sha256(path) if path.exists() else "missing"
        if got != want:
            raise ZooIntegrityError(f"{path}: sha256 {got[:16]} does not match {shipped / SUMS} ({want[:16]}); "
                                    "restore it (git checkout) or ship the zoo again: python -m ladalit.demo.zoo --ship")
    return shipped / name


def ship(members: list[str | ZooMember], cache_dir: Path | str | None = None, shipped: Path | None = None) -> list[str]:
    """Copy the members' cached directories (pre-training them where missing) into `shipped`, dropping other
    versions of those members, and rewrite SHA256SUMS over everything shipped. Returns the lines written."""
    shipped = shipped or SHIPPED
    shipped.mkdir(parents=True, exist_ok=True)
    for member in members:
        member = ZOO[member] if isinstance(member, str) else member
        load_member(member, cache_dir, progress=False, shipped=False)
        for old in shipped.glob(f"{member.name}-*"):
            shutil.rmtree(old)
        shutil.copytree(member_dir(member, cache_dir), shipped / member_dir(member).name)
    lines = [f"{file_sha256(f)}  {f.relative_to(shipped).as_posix()}"
             for f in sorted(shipped.glob("*/*")) if f.is_file()]
    (shipped / SUMS).write_text("\n".join(lines) + "\n")
    return lines


def load_member(name: str | ZooMember, cache_dir: Path | str | None = None, progress: bool = True,
                shipped: bool = True):
    """(model, tokenizer) of a zoo member: the shipped weights where this spec is shipped (sha256 checked),
    else pre-trained on first use into the cache and loaded from it after. `shipped=False` ignores the shipped
    weights (a re-train to compare with them)."""
    member = ZOO[name] if isinstance(name, str) else name
    cache_dir = Path(cache_dir or default_cache_dir())
    path = (shipped_member(member) if shipped else None) or member_dir(member, cache_dir)
    if not (path / "zoo.json").exists():
        tokenizer = load_tokenizer(member.tokenizer, member.corpus, cache_dir)
        model = build_model(member, tokenizer)
        t0 = time.perf_counter()
        if progress:
            with Progress() as prog, prog.task(f"pre-training {member.name}", member.train.steps) as task:
                losses = pretrain(model, tokenizer, member, task)
        else:
            losses = pretrain(model, tokenizer, member)
        seconds = time.perf_counter() - t0
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {"member": asdict(member), "code_version": CODE_VERSION, "train_seconds": seconds,
                "num_parameters": sum(p.numel() for p in model.parameters()),
                "first_loss": losses[0], "final_loss": sum(losses[-20:]) / len(losses[-20:])}
        (tmp / "zoo.json").write_text(json.dumps(info, indent=1))
        _publish(tmp, path)
    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    return model, tokenizer


def member_info(name: str | ZooMember, cache_dir: Path | str | None = None) -> dict:
    """What pre-training recorded (time, parameters, losses); the member must be shipped or cached."""
    member = ZOO[name] if isinstance(name, str) else name
    path = shipped_member(member) or member_dir(member, cache_dir)
    return json.loads((path / "zoo.json").read_text())


def compare_with_shipped(name: str, cache_dir: Path | str | None = None) -> dict:
    """How a re-train in `cache_dir` differs from the shipped weights: whether the bytes are the same, and the
    largest absolute difference of any weight."""
    from safetensors.torch import load_file
    member = ZOO[name]
    ours, theirs = member_dir(member, cache_dir) / "model.safetensors", shipped_member(member)
    if theirs is None:
        return {"member": name, "shipped": False}
    a, b = load_file(ours), load_file(theirs / "model.safetensors")
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a) if a.keys() == b.keys() else float("inf")
    return {"member": name, "shipped": True, "same_bytes": file_sha256(ours) == file_sha256(theirs / "model.safetensors"),
            "max_abs_weight_diff": diff}


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def predict(model, tokenizer, records: list[MCRecord], max_new_tokens: int = 160, batch_size: int = 64,
            shots: int = 0) -> list[str]:
    """Greedy generations (KV cache, left padding) for the zero- or one-shot prompts of `records`."""
    out = []
    for i in range(0, len(records), batch_size):
        prompts = [one_shot_prompt(r, EXAMPLE) if shots else zero_shot_prompt(r) for r in records[i: i + batch_size]]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def quick_eval(model, tokenizer, records: list[MCRecord], max_new_tokens: int = 160, batch_size: int = 64,
               shots: int = 0) -> float:
    """Accuracy of the letter parsed from "answer is (X)" in greedy generations; unparseable = wrong."""
    if not records:
        return float("nan")
    texts = predict(model, tokenizer, records, max_new_tokens, batch_size, shots)
    return sum(parse_answer(t) == r.answer for t, r in zip(texts, records)) / len(records)


def starting_points(members: list[str], per_cell: int = 40, cache_dir=None, progress: bool = True,
                    shipped: bool = True) -> list[dict]:
    """Accuracy of each member per (domain, steps, shots) on fresh records (seed 7, which no split uses):
    rows {member, domain, steps, shots, n, accuracy}."""
    test = generate(SyntheticConfig(num_records=per_cell * 16 * 2, seed=7), unique=False)
    cells = {(d, k): [r for r in test if r.domain == d and num_steps(r) == k][:per_cell]
             for d in DOMAINS for k in range(1, 5)}
    rows = []
    for name in members:
        model, tok = load_member(name, cache_dir, progress, shipped=shipped)
        for shots in (0, 1):
            for (d, k), recs in cells.items():
                rows.append({"member": name, "domain": d, "steps": k, "shots": shots, "n": len(recs),
                             "accuracy": quick_eval(model, tok, recs, shots=shots)})
    return rows


def main(argv: list[str] | None = None) -> None:
    import argparse

    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description="print each zoo member's accuracy per domain, step count and prompt "
                                             "setting (the shipped weights, or a re-train)")
    ap.add_argument("--members", nargs="*", default=list(ZOO))
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--per-cell", type=int, default=40, help="test records per (domain, steps)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--retrain", action="store_true",
                    help="pre-train into --cache-dir (or load a re-train there), ignoring the shipped weights, and "
                         "compare them with the shipped ones")
    ap.add_argument("--ship", action="store_true", help="ship the cache's members (pre-training where missing) "
                                                        "into ladalit/demo/weights with their sha256")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.ship:
        for line in ship(args.members, args.cache_dir):
            print(line)
    rows = starting_points(args.members, args.per_cell, args.cache_dir, shipped=not args.retrain)
    if args.retrain:
        for name in args.members:
            print(json.dumps(compare_with_shipped(name, args.cache_dir)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    for shots in (0, 1):
        table = Table(title=f"zoo: {shots}-shot accuracy by domain and number of steps")
        table.add_column("member")
        for d in DOMAINS:
            for k in range(1, 5):
                table.add_column(f"{d[:4]} {k}")
        for name in args.members:
            acc = {(r["domain"], r["steps"]): r["accuracy"] for r in rows if r["member"] == name and r["shots"] == shots}
            table.add_row(name, *[f"{acc[(d, k)]:.2f}" for d in DOMAINS for k in range(1, 5)])
        Console().print(table)
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
