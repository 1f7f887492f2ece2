"""FedMKT baseline (Fan et al., COLING 2025; SPEC §8): mutual knowledge transfer between the
server LLM and the client SLMs through per-token top-k logits on the public set.

Every round (the order of FATE-LLM's `algo/fedmkt`):

    clients: SFT on private train                                  [private_sft]
             top-k logits of every response token of the public texts  -> up       [snapshot]
    server:  top-k of its own; for every public example choose, among its own and each
             client's (aligned) distribution, the one with the lowest cross-entropy on
             the text ("dual minimum cross-entropy"); train kd_alpha·LM + (1-kd_alpha)·KD
             top-k after training                                   -> down
    clients: choose between their own and the server's aligned distribution; train

The public questions are unlabeled, so the text both sides score is the server's greedy
answer to each public question (generated once with `ResponseCache`, sent down once,
like FedKD). Only sparse top-k crosses the channel: fp16 values and int32 vocabulary
indices per response token, the int32 token ids (so the receiver can align without
re-tokenising), and one fp32 cross-entropy per example; and, once (round 1), each side's
token strings, from which the other maps its ids (`token_alignment.table_mapping`).

The roles (`ROLES`, ladalit/registry.py; run in this process and on a deployment alike), per round:
PublicTexts(t, the answers when new, round 1: the server's vocabulary) ⇒ the client's TopKLogits
(round 1: with its vocabulary); the server's TopKLogits when it changed ⇒ Ready; EndRound(t) ⇒ Ready
after the client's own min-CE choice and training.

Cross-tokenizer transfer (token strings, alignment, vocabulary mapping): `ladalit.baselines.token_alignment`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ladalit.baselines.standalone import PrivateClient
from ladalit.baselines.token_alignment import TokenTable, align_tokens, table_mapping, table_of_strings, token_table
from ladalit.core.config import section
from ladalit.core.checkpoint import load_optimizer_state, load_participant_state, optimizer_state, participant_state
from ladalit.core.messages import EndRound, ProtocolError, PublicTexts, Ready, TopKLogits, as_dict
from ladalit.core.responses import ResponseCache
from ladalit.core.prompts import zero_shot_prompt
from ladalit.core.results import Results
from ladalit.core.roles import MethodRoles
from ladalit.core.training import NonFiniteGuard, RowLoss, minibatches, train_rows


# ----------------------------------------------------------------------------- config section `fedmkt`
@dataclass
class Config:
    """`method=fedmkt` (defaults follow FATE-LLM where it has one)."""
    # weight of the LM loss; (1 - kd_alpha) weighs the KD loss
    kd_alpha: float = 0.5
    # logits kept per token (what crosses the channel)
    top_k: int = 16
    # softmax temperature over the kept top-k logits
    temperature: float = 1.0
    # min-CE metric per "char" of text (tokenizer-invariant) or per "token" (FATE)
    ce_normalise: str = "char"
    # FATE llm_training: false = the server only teaches
    server_training: bool = True
    # private SFT every round (round 1 sft_epochs, later train.epochs), as FATE does
    private_every_round: bool = True
    # regenerate the server's public answers every round (else once)
    regenerate: bool = False
    # vocabulary-mapping fallback: sorted neighbours examined on each side
    vocab_window: int = 8
    # on-disk cache of vocabulary mappings ("" = memory only)
    vocab_cache_dir: str = ""


section("fedmkt", Config, after="clients", description="FedMKT baseline settings",
        choices={"ce_normalise": ("char", "token")},
        ranges={"kd_alpha": (0.0, 1.0), "top_k": (1, None), "temperature": (1e-6, None), "vocab_window": (1, None)})


# ----------------------------------------------------------------------------- top-k, KD, min-CE
def topk_logits(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest logits per position and their vocabulary ids (k capped at the vocab size)."""
    return logits.topk(min(k, logits.shape[-1]), dim=-1)


def sparse_target(values: torch.Tensor, indices: torch.Tensor, mapping: torch.Tensor | None = None,
                  temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probs [.., k], receiver ids [.., k], ok [..]) of sparse top-k logits: softmax over the k
    values, ids mapped through `mapping` (sender id -> receiver id). Ids outside the mapping
    (padding rows of the sender's embedding) get probability 0 and the rest is renormalised;
    `ok` is False where nothing was left."""
    probs = torch.softmax(values.float() / temperature, dim=-1)
    indices = indices.long()
    if mapping is None:
        return probs, indices, torch.ones(probs.shape[:-1], dtype=torch.bool)
    valid = indices < len(mapping)
    mapped = mapping.to(indices.device)[indices.clamp(max=len(mapping) - 1)]
    probs = probs * valid
    mass = probs.sum(-1, keepdim=True)
    return probs / mass.clamp(min=1e-12), mapped, mass.squeeze(-1) > 0


def sparse_kd_per_position(student_logp: torch.Tensor, target_ids: torch.Tensor,
                           target_probs: torch.Tensor) -> torch.Tensor:
    """-Σ_k p_k · log q(id_k) at every position [..]: the student's cross-entropy against a sparse target."""
    return -(student_logp.gather(-1, target_ids) * target_probs).sum(-1)


def sparse_kd_loss(student_logp: torch.Tensor, target_ids: torch.Tensor, target_probs: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over (masked) positions of -Σ_k p_k · log q(id_k): cross-entropy of the student's
    log-probs [.., V] against a sparse target distribution [.., k]. Repeated ids (two teacher
    tokens mapped to one student token) simply add their probabilities."""
    per_pos = sparse_kd_per_position(student_logp, target_ids, target_probs)
    if mask is None:
        return per_pos.mean()
    mask = mask.to(per_pos.dtype)
    return (per_pos * mask).sum() / mask.sum().clamp(min=1)


def sequence_ce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                chars: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example cross-entropy of `labels` [B, T] under `logits` [B, T, V] over `mask`: mean per
    token, or, given `chars` [B], total nats per character of the text (comparable across
    tokenizers)."""
    logp = logits.float().log_softmax(-1).gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)
    mask = mask.to(logp.dtype)
    nll = -(logp * mask).sum(-1)
    return nll / (chars.to(nll) if chars is not None else mask.sum(-1)).clamp(min=1)


def min_ce_choice(self_ce: torch.Tensor, *other_ces: torch.Tensor) -> torch.Tensor:
    """Dual minimum cross-entropy: per example the index of the lowest CE among the
    participant's own distribution (0) and each teacher's (1, 2, ...); ties keep the lower index."""
    return torch.stack([self_ce, *other_ces], dim=-1).float().argmin(-1)


# ----------------------------------------------------------------------------- per-example payloads
@dataclass
class TopK:
    """One participant's sparse distributions on the public texts (what crosses the channel)."""
    lengths: torch.Tensor    # int32 [N]: response tokens per example
    token_ids: torch.Tensor  # int32 [L]: the tokens (labels) themselves, L = Σ lengths
    values: torch.Tensor     # fp16 [L, k]: top-k logits predicting each token
    indices: torch.Tensor    # int32 [L, k]
    ce: torch.Tensor         # fp32 [N]: the sender's cross-entropy on each example (min-CE metric)

    def payload(self, sample_ids: list[str]) -> dict:
        return {"ids": list(sample_ids), "lengths": self.lengths, "token_ids": self.token_ids,
                "values": self.values, "indices": self.indices, "ce": self.ce}

    @classmethod
    def from_payload(cls, p: dict) -> "TopK":
        return cls(p["lengths"], p["token_ids"], p["values"], p["indices"], p["ce"])

    def split(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        sizes = self.lengths.tolist()
        return list(zip(self.token_ids.split(sizes), self.values.split(sizes), self.indices.split(sizes)))


def _response_logits(participant, prompts, responses):
    """Logits predicting each response token, flattened over the batch: ([L, V], labels [L],
    row of each position [L], response tokens per row [B]). Rows keep their order, positions
    theirs within a row."""
    ids, attn, resp = participant._encode(prompts, responses)
    mask = resp[:, 1:]
    logits = participant(ids, attn)[:, :-1][mask].float()
    return logits, ids[:, 1:][mask], mask.nonzero()[:, 0], mask.sum(-1)


@torch.no_grad()
def snapshot(participant, prompts: Sequence[str], responses: Sequence[str], k: int, batch_size: int,
             ce_normalise: str = "char") -> TopK:
    """Top-k logits at every response token of (prompt, response), in this participant's tokenizer,
    and its cross-entropy per example (per character or per token, see `sequence_ce`)."""
    table = token_table(participant.tokenizer)
    was_training = participant.training
    participant.eval()
    lengths, toks, vals, idxs, ces = [], [], [], [], []
    try:
        for mb in minibatches(len(prompts), batch_size):
            logits, labels, rows, counts = _response_logits(participant, [prompts[i] for i in mb],
                                                            [responses[i] for i in mb])
            nll_tok = logits.logsumexp(-1) - logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            nll = torch.zeros(len(mb), device=logits.device).index_add_(0, rows, nll_tok)
            if ce_normalise == "char":
                lens = table.char_len.to(labels.device)[labels.clamp(max=len(table.char_len) - 1)]
                denom = torch.zeros(len(mb), device=logits.device).index_add_(0, rows, lens.float())
            else:
                denom = counts.float()
            ces.append((nll / denom.clamp(min=1)).cpu())
            v, ix = topk_logits(logits, k)
            vals.append(v.half().cpu())
            idxs.append(ix.int().cpu())
            toks.append(labels.int().cpu())
            lengths.append(counts.int().cpu())
    finally:
        participant.train(was_training)
    return TopK(torch.cat(lengths), torch.cat(toks), torch.cat(vals), torch.cat(idxs), torch.cat(ces).float())


def own_targets(mine: TopK, temperature: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(receiver ids [n, k], probs [n, k]) per example from a participant's own top-k."""
    out = []
    for _, v, ix in mine.split():
        probs, ids, _ = sparse_target(v, ix, None, temperature)
        out.append((ids, probs))
    return out


def aligned_target(own_tokens: torch.Tensor, own_table: TokenTable, other_tokens: torch.Tensor,
                   other_values: torch.Tensor, other_indices: torch.Tensor, other_table: TokenTable,
                   mapping: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A teacher's sparse distributions moved onto the student's tokens of one example.

    Student position i aligned one-to-one (equal strings) with teacher position j takes the
    teacher's top-k at j, mapped to student ids; any other position gets a one-hot target on
    its own label token. Returns (ids [n, k], probs [n, k], number of aligned positions).
    """
    n, k = len(own_tokens), other_values.shape[-1]
    ids = own_tokens.long().unsqueeze(-1).repeat(1, k)
    probs = torch.zeros(n, k)
    probs[:, 0] = 1.0
    a = [own_table.strings[t] for t in own_tokens.tolist()]
    b = [other_table.strings[t] for t in other_tokens.tolist()]
    pairs = align_tokens(a, b, normalise=False)
    if not pairs:
        return ids, probs, 0
    ii = torch.tensor([p[0] for p in pairs])
    jj = torch.tensor([p[1] for p in pairs])
    p, mapped, ok = sparse_target(other_values[jj], other_indices[jj], mapping, temperature)
    ii, p, mapped = ii[ok], p[ok], mapped[ok]
    ids[ii], probs[ii] = mapped, p
    return ids, probs, len(ii)


# ----------------------------------------------------------------------------- training
def _stack_targets(targets: list[tuple[torch.Tensor, torch.Tensor]], counts: torch.Tensor):
    """Per-example [n_b, k_b] targets stacked in row order to [Σ n_b, max k] (probability-0 padding)."""
    found = [len(i) for i, _ in targets]
    if found != counts.tolist():
        raise RuntimeError(f"targets cover {found} response tokens, the encoding has {counts.tolist()}")
    width = max(i.shape[-1] for i, _ in targets)
    ids = torch.cat([torch.nn.functional.pad(i, (0, width - i.shape[-1])) for i, _ in targets])
    probs = torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[-1])) for _, p in targets])
    return ids.to(counts.device), probs.to(counts.device)


def distill(fabric, participant, optimizer, prompts, responses, targets, kd_alpha: float, epochs: int,
            seed: int, guard: NonFiniteGuard, round: int) -> dict:
    """kd_alpha·LM + (1 - kd_alpha)·KD on the response tokens, `epochs` passes; the means of the last epoch
    that stepped. Both terms are means over the batch's response tokens (log-softmax at those positions only)."""
    def lm_and_kd(rows):
        logits, labels, row_of, counts = _response_logits(participant, [prompts[i] for i in rows],
                                                          [responses[i] for i in rows])
        logp = logits.log_softmax(-1)
        t_ids, t_probs = _stack_targets([targets[i] for i in rows], counts)
        kd = sparse_kd_per_position(logp, t_ids, t_probs)
        return RowLoss({"lm": -logp.gather(-1, labels.unsqueeze(-1)), "kd": kd}, count=counts, row_of=row_of)

    per_epoch = train_rows(fabric, participant, optimizer, guard, len(prompts), lm_and_kd, epochs, seed, round,
                           normalise="count", coefs={"lm": kd_alpha, "kd": 1.0 - kd_alpha})
    last = {"loss": math.nan, "lm_loss": math.nan, "kd_loss": math.nan}
    for e in per_epoch:
        if e:
            last = {"loss": e["loss"], "lm_loss": e["lm"], "kd_loss": e["kd"]}
    return last


def choose_targets(mine: TopK, own_table: TokenTable, teachers: list[tuple[TopK, TokenTable, torch.Tensor]],
                   temperature: float):
    """Per example the lowest-CE distribution among the participant's own and the teachers'
    (aligned to its tokens). Returns the targets, the choice per example and the fraction of
    student positions aligned on the examples where a teacher won."""
    choice = min_ce_choice(mine.ce, *[t.ce for t, _, _ in teachers])
    own = own_targets(mine, temperature)
    mine_rows = mine.split()
    teacher_rows = [t.split() for t, _, _ in teachers]
    targets, aligned, positions = [], 0, 0
    for e, c in enumerate(choice.tolist()):
        if c == 0:
            targets.append(own[e])
            continue
        other, table, mapping = teachers[c - 1]
        tok, v, ix = teacher_rows[c - 1][e]
        ids, probs, n_al = aligned_target(mine_rows[e][0], own_table, tok, v, ix, table, mapping, temperature)
        targets.append((ids, probs))
        aligned, positions = aligned + n_al, positions + len(ids)
    return targets, choice, (aligned / positions if positions else math.nan)


# ----------------------------------------------------------------------------- the roles
def _stat(frac: float):
    return None if math.isnan(frac) else frac


class FedMKTServer:
    """FedMKT's server role: the public texts (its answers, generated once unless `regenerate`), its top-k, the
    min-CE choice over itself and every client and its own KD training, then its top-k down (only when changed)."""

    def __init__(self, cfg, fabric, participant, public, transport):
        self.cfg, self.fabric, self.participant, self.transport = cfg, fabric, participant, transport
        self.ids, self.public = [x.id for x in public], list(public)
        self.prompts = [zero_shot_prompt(x) for x in public]
        self.cache = ResponseCache(cfg.generation.max_new_tokens, cfg.generation.batch_size)
        self.guard, self.results = NonFiniteGuard(cfg.on_nonfinite), Results()
        self.optimizer = fabric.setup_optimizers(participant.configure_optimizers())
        self.table = token_table(participant.tokenizer)
        self.vocab: dict[str, list[str]] = {}  # every client's token strings, from its first top-k
        self.answers: list[str] | None = None
        self.top: TopK | None = None  # the server's top-k, valid until it trains or the texts change
        self.version, self.down = 0, {}  # self.top's version; the version each client last received
        self.stats = {"teacher_chosen": {}, "aligned_fraction": {}}

    def run_round(self, t: int) -> None:
        opts, names = self.cfg.fedmkt, self.transport.names
        new = self.answers is None or opts.regenerate
        if new:
            self.cache.drop_before(t)
            self.answers = self.cache.get(t, self.participant, self.public)
            self.top, self.version = None, self.version + 1
        start = PublicTexts(t, list(self.answers) if new else [], self.table.strings if t == 1 else [])
        ups = self.transport.request_all({k: start for k in names})
        self.vocab |= {k: list(up.vocab) for k, up in ups.items() if up.vocab}
        if self.top is None:
            self.top = self.snap()
        if opts.server_training:
            self.train(t, {k: TopK.from_payload(as_dict(up)) for k, up in ups.items()})
        stale = [k for k in names if self.down.get(k) != self.version]  # an unchanged top-k is sent once
        self.transport.request_all({k: TopKLogits(t, **self.top.payload(self.ids)) for k in stale})
        self.down |= {k: self.version for k in stale}
        self.transport.request_all({k: EndRound(t) for k in names})

    def snap(self) -> TopK:
        opts = self.cfg.fedmkt
        return snapshot(self.participant, self.prompts, self.answers, opts.top_k,
                        self.participant.train_cfg.batch_size, opts.ce_normalise)

    def train(self, t: int, up: dict) -> None:
        """Min-CE over itself and every client (aligned to its tokens), kd_alpha·LM + (1-kd_alpha)·KD."""
        opts = self.cfg.fedmkt
        teachers = [(up[k], table_of_strings(self.vocab[k]), self.mapping(k)) for k in up]
        targets, choice, frac = choose_targets(self.top, self.table, teachers, opts.temperature)
        losses = distill(self.fabric, self.participant, self.optimizer, self.prompts, self.answers, targets,
                         opts.kd_alpha, self.participant.train_cfg.epochs, self.cfg.seed + t, self.guard, t)
        chosen = {k: (choice == n + 1).float().mean().item() for n, k in enumerate(up)}
        self.results.add_train(t, "server", **losses, aligned_fraction=frac,
                               **{f"chose_{k}": v for k, v in chosen.items()})
        self.stats["teacher_chosen"][f"{t}:server"] = chosen
        self.stats["aligned_fraction"][f"{t}:server"] = _stat(frac)
        self.top, self.version = self.snap(), self.version + 1

    def mapping(self, k: str) -> torch.Tensor:
        """Client k's ids -> the server's (from its token strings), once per pair of vocabularies."""
        opts = self.cfg.fedmkt
        return table_mapping(table_of_strings(self.vocab[k]), self.table, opts.vocab_cache_dir or None,
                             opts.vocab_window)

    def counters(self) -> dict:
        return {"nonfinite_skipped": list(self.guard.skipped), "responses_generated": self.cache.generated,
                "fedmkt": self.stats}

    def state_dict(self) -> dict:
        return {"participant": participant_state(self.fabric, self.participant),
                "optimizer": optimizer_state(self.fabric, self.participant, self.optimizer),
                "skipped": self.guard.skipped, "generated": self.cache.generated, "vocab": self.vocab,
                "answers": self.answers, "top": self.top, "version": self.version, "down": self.down,
                "stats": self.stats}

    def load_state_dict(self, state: dict) -> None:
        load_participant_state(self.fabric, self.participant, state["participant"])
        load_optimizer_state(self.fabric, self.participant, self.optimizer, state["optimizer"])
        self.guard.skipped, self.cache.generated = list(state["skipped"]), state["generated"]
        self.vocab, self.answers, self.top = dict(state["vocab"]), state["answers"], state["top"]
        self.version, self.down, self.stats = state["version"], dict(state["down"]), state["stats"]

    def close(self) -> None:
        pass


class FedMKTClient(PrivateClient):
    """FedMKT's client role: PublicTexts(t) ⇒ its top-k on the public texts (round 1 after the private SFT, and
    with its token strings); the server's TopKLogits ⇒ Ready (kept); EndRound(t) ⇒ Ready after choosing, per
    example, between its own and the server's aligned distribution (min CE) and training on it."""

    def __init__(self, cfg, fabric, name: str, participant, private, public):
        super().__init__(cfg, fabric, name, participant, private)
        self.ids, self.prompts = [x.id for x in public], [zero_shot_prompt(x) for x in public]
        self.table = token_table(participant.tokenizer)
        self.server_vocab: list[str] = []
        self.texts: list[str] = []
        self.own: TopK | None = None  # this round's top-k
        self.teacher: TopK | None = None  # the server's, as last received
        self.stats = {"teacher_chosen": {}, "aligned_fraction": {}}

    def handle(self, msg):
        if isinstance(msg, PublicTexts):
            return self.top_k(msg)
        if isinstance(msg, TopKLogits) and msg.round == self.round:
            self.teacher = TopK.from_payload(as_dict(msg))
            return Ready(msg.round)
        if isinstance(msg, EndRound) and msg.round == self.round:
            return self.learn(msg.round)
        raise ProtocolError(f"client '{self.name}': no handler for message kind {msg.kind!r} in round {msg.round}")

    def top_k(self, msg: PublicTexts) -> TopKLogits:
        t, opts = msg.round, self.cfg.fedmkt
        self.start_round(t)
        self.texts = list(msg.texts) or self.texts
        self.server_vocab = list(msg.vocab) or self.server_vocab
        if t == 1:
            self.private_sft(self.participant.train_cfg.sft_epochs, 0)
        elif opts.private_every_round:
            self.private_sft(self.participant.train_cfg.epochs, t)
        self.own = snapshot(self.participant, self.prompts, self.texts, opts.top_k,
                            self.participant.train_cfg.batch_size, opts.ce_normalise)
        return TopKLogits(t, **self.own.payload(self.ids), vocab=self.table.strings if t == 1 else [])

    def learn(self, t: int) -> Ready:
        opts = self.cfg.fedmkt
        server_table = table_of_strings(self.server_vocab)
        mapping = table_mapping(server_table, self.table, opts.vocab_cache_dir or None, opts.vocab_window)
        targets, choice, frac = choose_targets(self.own, self.table, [(self.teacher, server_table, mapping)],
                                               opts.temperature)
        losses = distill(self.fabric, self.participant, self.optimizer, self.prompts, self.texts, targets,
                         opts.kd_alpha, self.participant.train_cfg.epochs, self.cfg.seed + t, self.guard, t)
        chosen = (choice == 1).float().mean().item()
        self.results.add_train(t, self.name, **losses, aligned_fraction=frac, chose_server=chosen)
        self.stats["teacher_chosen"][f"{t}:{self.name}"] = chosen
        self.stats["aligned_fraction"][f"{t}:{self.name}"] = _stat(frac)
        self.own = None
        return Ready(t)

    def counters(self) -> dict:
        return super().counters() | {"fedmkt": self.stats}

    def state_dict(self) -> dict:
        return super().state_dict() | {"server_vocab": self.server_vocab, "texts": self.texts, "own": self.own,
                                       "teacher": self.teacher, "stats": self.stats}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.server_vocab, self.texts = list(state["server_vocab"]), list(state["texts"])
        self.own, self.teacher, self.stats = state["own"], state["teacher"], state["stats"]


def fedmkt_server(cfg, fabric, participant, public, transport, progress=None, hooks=None) -> FedMKTServer:
    return FedMKTServer(cfg, fabric, participant, public, transport)


def fedmkt_client(cfg, fabric, name, seat, participant, private, public, progress=None, hooks=None) -> FedMKTClient:
    return FedMKTClient(cfg, fabric, name, participant, private, public)


ROLES = MethodRoles(server=fedmkt_server, client=fedmkt_client)
