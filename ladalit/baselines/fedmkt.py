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
re-tokenising), and one fp32 cross-entropy per example.

Cross-tokenizer transfer (token strings, alignment, vocabulary mapping): `ladalit.baselines.token_alignment`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ladalit.baselines.standalone import end_round, private_sft, resume_state, round_state
from ladalit.baselines.token_alignment import TokenTable, align_tokens, token_table, vocab_mapping
from ladalit.core.channel import DOWN, UP, Channel
from ladalit.core.messages import ServerAnswers, TopKLogits, as_dict
from ladalit.core.responses import ResponseCache
from ladalit.core.prompts import zero_shot_prompt
from ladalit.core.results import Results
from ladalit.core.training import NonFiniteGuard, RowLoss, minibatches, train_rows


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


# ----------------------------------------------------------------------------- the loop
def run_fedmkt(exp, channel: Channel, results: Results, tracker=None, start_round: int = 1, state=None,
               on_round_end=None, progress=None) -> dict:
    """FedMKT through the same data split, evaluation and channel as every method (SPEC §8)."""
    cfg, fabric = exp.cfg, exp.fabric
    opts = cfg.fedmkt  # validated with the run config (ladalit.core.config)
    guard, optimizers = NonFiniteGuard(cfg.on_nonfinite), {}
    server, clients, public = exp.server, exp.clients, exp.data.public
    sample_ids = [x.id for x in public]
    prompts = [zero_shot_prompt(x) for x in public]
    cache = ResponseCache(cfg.generation.max_new_tokens, cfg.generation.batch_size)
    tables = {"server": token_table(server.tokenizer), **{k: token_table(c.tokenizer) for k, c in clients.items()}}
    cache_dir = opts.vocab_cache_dir or None
    # sender id -> receiver id, once per tokenizer pair
    to_server = {k: vocab_mapping(c.tokenizer, server.tokenizer, cache_dir, opts.vocab_window)
                 for k, c in clients.items()}
    to_client = {k: vocab_mapping(server.tokenizer, c.tokenizer, cache_dir, opts.vocab_window)
                 for k, c in clients.items()}
    stats = {"teacher_chosen": {}, "aligned_fraction": {}}
    server_answers: list[str] | None = None
    received: dict[str, list[str]] = {}
    server_top: TopK | None = None  # the server's top-k, valid until it trains or the texts change
    version, down = 0, {}  # server_top's version; what each client last received: (version, TopK)
    if state is not None:  # resume: what both sides carry from round to round
        resume_state(exp, state, guard, optimizers, results, channel)
        carried = state["fedmkt"]
        server_answers, received, server_top = carried["server_answers"], carried["received"], carried["server_top"]
        version, down, stats = carried["version"], carried["down"], carried["stats"]
        cache.generated = state["counters"]["responses_generated"]
    if "server" not in optimizers:
        optimizers["server"] = fabric.setup_optimizers(server.configure_optimizers())

    def snap(p, texts):
        return snapshot(p, prompts, texts, opts.top_k, p.train_cfg.batch_size, opts.ce_normalise)

    for t in range(start_round, cfg.rounds + 1):
        # ---------------------------------------------------------------- public texts (the server's answers)
        if server_answers is None or opts.regenerate:
            cache.drop_before(t)
            server_answers = cache.get(t, server, public)
            received = {k: channel.send(t, DOWN, k, ServerAnswers(t, server_answers)).texts for k in clients}
            server_top, version = None, version + 1

        # ---------------------------------------------------------------- clients: private SFT, top-k up
        if t == 1:
            private_sft(exp, guard, results, optimizers, lambda c: c.train_cfg.sft_epochs, 0)
        elif opts.private_every_round:
            private_sft(exp, guard, results, optimizers, lambda c: c.train_cfg.epochs, t)
        client_top, up = {}, {}
        for k, client in clients.items():
            client_top[k] = snap(client, received[k])
            up[k] = TopK.from_payload(as_dict(channel.send(t, UP, k, TopKLogits(t, **client_top[k].payload(sample_ids)))))

        # ---------------------------------------------------------------- server: min-CE over itself and every client
        if server_top is None:
            server_top = snap(server, server_answers)
        if opts.server_training:
            teachers = [(up[k], tables[k], to_server[k]) for k in clients]
            targets, choice, frac = choose_targets(server_top, tables["server"], teachers, opts.temperature)
            losses = distill(fabric, server, optimizers["server"], prompts, server_answers, targets, opts.kd_alpha,
                             server.train_cfg.epochs, cfg.seed + t, guard, t)
            chosen = {k: (choice == n + 1).float().mean().item() for n, k in enumerate(clients)}
            results.add_train(t, "server", **losses, aligned_fraction=frac,
                              **{f"chose_{k}": v for k, v in chosen.items()})
            stats["teacher_chosen"][f"{t}:server"] = chosen
            stats["aligned_fraction"][f"{t}:server"] = None if math.isnan(frac) else frac
            server_top, version = snap(server, server_answers), version + 1

        # ---------------------------------------------------------------- clients: min-CE between itself and the server
        for k, client in clients.items():
            if down.get(k, (None,))[0] != version:  # unchanged top-k (server_training=false) is sent once
                payload = as_dict(channel.send(t, DOWN, k, TopKLogits(t, **server_top.payload(sample_ids))))
                down[k] = (version, TopK.from_payload(payload))
            teacher = [(down[k][1], tables["server"], to_client[k])]
            targets, choice, frac = choose_targets(client_top[k], tables[k], teacher, opts.temperature)
            losses = distill(fabric, client, optimizers[k], prompts, received[k], targets, opts.kd_alpha,
                             client.train_cfg.epochs, cfg.seed + t, guard, t)
            chosen = (choice == 1).float().mean().item()
            results.add_train(t, k, **losses, aligned_fraction=frac, chose_server=chosen)
            stats["teacher_chosen"][f"{t}:{k}"] = chosen
            stats["aligned_fraction"][f"{t}:{k}"] = None if math.isnan(frac) else frac

        end_round(exp, results, channel, tracker, progress, t, on_round_end, lambda: round_state(
            exp, guard, optimizers, results, channel, counters={"responses_generated": cache.generated},
            fedmkt={"server_answers": server_answers, "received": received, "server_top": server_top,
                    "version": version, "down": down, "stats": stats}))
    return {"nonfinite_skipped": guard.skipped, "responses_generated": cache.generated, "fedmkt": stats}
