"""WASP baseline (Zou et al., ICML 2025), in the federated LLM↔SLM setting of SPEC §8, compact.

Each round t:

1. **Generate** (server). The LLM writes `samples_per_round` synthetic multiple-choice questions, one
   per prompt. Every prompt carries contrastive in-context examples: `good_per_prompt` of the last
   round's top-voted synthetic samples labelled "Good example" and `bad_per_prompt` of its bottom-voted
   ones labelled "Bad example" (round 1, or after a round without usable samples: `public_examples`
   public questions as plain examples). Examples are drawn per prompt with a seeded RNG, which is what
   makes greedy generations differ; with `temperature` > 0 the LLM samples (nucleus, `top_p`, seeded per
   round), as synthetic-data generation usually does (a small LLM's greedy questions often repeat an
   option). A prompt longer than the LLM's prompt budget (`train.max_length` − the new tokens) loses
   its start, the instruction first (`Participant.cut_left`), and is counted where every cut prompt is
   (results.json `budget`: participant "server", what "synthetic_questions"). Unparseable questions and duplicates are dropped; the LLM then
   answers each question with its usual zero-shot reasoning prompt and only questions whose answer states
   a letter are kept (the answer becomes the training target, house format).
2. **Down**: "synthetic_samples" {ids, questions, options, targets} to every client.
3. **Vote** (client, Top-Q voting). The client embeds its private train questions and the synthetic
   questions with a frozen sentence encoder (MiniLM by default, `filter_net.encoder`); each private
   question gives one vote, split over its `top_q` most similar synthetic questions (weights ∝ 1/rank
   with `vote_decay=harmonic`, equal with `uniform`); optional Gaussian noise (`noise_std`, WASP's DP
   mechanism). **Up**: "votes", a float32 vector with one score per synthetic sample — nothing else.
4. **Weights** (server). Votes are summed over clients; the top- / bottom-voted `pool_size` samples become
   the next round's good / bad examples. With `weights=global` (WASP: one weighted synthetic set) the
   server sends "sample_weights" down (float32, mean 1, ∝ the summed votes); with `weights=local` each
   client weighs by its own votes and nothing more is sent.
5. **Train** (client). Vote-weighted cross-entropy on the synthetic targets (mean of w_i · CE_i; samples
   with weight 0 are skipped), `train.epochs` epochs, on this round's set (`accumulate=true`: on every
   synthetic sample received so far, with the weights of its round).

Round 1 starts with the private-train SFT of every method. The LLM is not trained.
"""
from __future__ import annotations

import math
import random
import re

import torch

from ladalit.baselines.standalone import end_round, private_sft, resume_state, round_state
from ladalit.core.config import WASPConfig
from ladalit.core.channel import DOWN, UP, Channel
from ladalit.core.messages import SampleWeights, SyntheticSamples, Votes, as_dict
from ladalit.data.records import LETTERS, MCRecord
from ladalit.core.encoder import make_encoder
from ladalit.core.participant import Sampling
from ladalit.core.responses import ResponseCache
from ladalit.core.seeds import client_seed, item_seed, round_seed
from ladalit.core.progress import Progress
from ladalit.core.prompts import format_question, zero_shot_prompt
from ladalit.baselines.reasoning import generate, normalised_target
from ladalit.core.results import Results
from ladalit.core.training import NonFiniteGuard, RowLoss, train_rows


# ----------------------------------------------------------------------------- generation prompts
GEN_INSTRUCTION = ("Write a new multiple-choice question with {n} options (A) to ({last}), in the same "
                   "format as the examples.")
GEN_CONTRAST = " Make it like the good examples and unlike the bad examples."


def generation_prompt(good: list[MCRecord], bad: list[MCRecord], plain: list[MCRecord], num_options: int) -> str:
    """Contrastive prompt: labelled good / bad examples (or plain ones); ends with "Question:" for the LLM."""
    head = GEN_INSTRUCTION.format(n=num_options, last=LETTERS[num_options - 1])
    if good or bad:
        head += GEN_CONTRAST
    parts = [head]
    parts += [f"Good example {i}:\n{format_question(x)}" for i, x in enumerate(good, 1)]
    parts += [f"Bad example {i}:\n{format_question(x)}" for i, x in enumerate(bad, 1)]
    parts += [f"Example {i}:\n{format_question(x)}" for i, x in enumerate(plain, 1)]
    return "\n".join(parts) + "\nNew question:\nQuestion:"


_OPTION = re.compile(r"\(([A-J])\)\s*(.*?)\s*(?=\([A-J]\)|$)")


def parse_question(generation: str, num_options: int) -> tuple[str, tuple[str, ...]] | None:
    """(question, options) from the LLM's continuation of "Question:", or None if malformed.

    Expects "<question>\\nOptions: (A) .. (B) .." with exactly `num_options` non-empty, distinct options
    in letter order (text after the options line is ignored).
    """
    m = re.match(r"\s*(.+?)\s*\n\s*Options:\s*([^\n]*)", generation or "", re.S)
    if not m:
        return None
    question = m.group(1).strip()
    found = _OPTION.findall(m.group(2))
    letters = [a for a, _ in found]
    options = tuple(o.strip() for _, o in found)
    if (not question or letters != list(LETTERS[:num_options]) or not all(options)
            or len(set(options)) != len(options)):
        return None
    return question, options


# ----------------------------------------------------------------------------- votes and weights
def top_q_votes(private_emb: torch.Tensor, synthetic_emb: torch.Tensor, top_q: int, decay: str = "harmonic",
                noise_std: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """One vote per private question, split over its top_q most similar synthetic questions: [n_synthetic].

    Similarity is the inner product of the (L2-normalised) embeddings. With noise, Gaussian noise of std
    `noise_std` is added to every entry.
    """
    n_syn = synthetic_emb.shape[0]
    votes = torch.zeros(n_syn, dtype=torch.float32)
    if n_syn and private_emb.shape[0]:
        q = min(top_q, n_syn)
        sim = private_emb.float() @ synthetic_emb.float().T  # [n_private, n_syn]
        idx = sim.topk(q, dim=1).indices  # [n_private, q], most similar first
        w = 1.0 / torch.arange(1, q + 1, dtype=torch.float32) if decay == "harmonic" else torch.ones(q)
        w = w / w.sum()
        votes.index_add_(0, idx.reshape(-1), w.repeat(idx.shape[0]))
    if noise_std > 0 and n_syn:
        votes = votes + noise_std * torch.randn(n_syn, generator=generator)
    return votes


def vote_weights(votes: torch.Tensor) -> torch.Tensor:
    """Training weights ∝ max(votes, 0), scaled to mean 1; all ones if no sample got a positive vote."""
    w = votes.float().clamp(min=0)
    if w.numel() == 0 or float(w.sum()) <= 0:
        return torch.ones_like(w)
    return w * (w.numel() / w.sum())


def contrastive_pools(votes: torch.Tensor, pool_size: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the top- and bottom-voted samples (disjoint; ties broken by a seeded random order)."""
    n = votes.numel()
    if n == 0:
        return [], []
    order = list(range(n))
    random.Random(seed).shuffle(order)  # the tie-break
    ranked = sorted(order, key=lambda i: -float(votes[i]))
    top = ranked[: min(pool_size, n)]
    rest = [i for i in reversed(ranked) if i not in set(top)]
    return top, rest[: pool_size]


def weighted_finetune(fabric, participant, optimizer, prompts, responses, weights: torch.Tensor, epochs: int,
                      seed: int, guard: NonFiniteGuard, round: int) -> list[float]:
    """Mean over a minibatch of w_i · CE_i (CE_i: sample i's mean token cross-entropy); returns the mean
    weighted loss per epoch."""
    def mean_token_ce(rows):
        logp, mask = participant.token_logprobs([prompts[i] for i in rows], [responses[i] for i in rows])
        return RowLoss({"loss": -(logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)})

    per_epoch = train_rows(fabric, participant, optimizer, guard, len(prompts), mean_token_ce, epochs, seed,
                           round, weights=weights)
    return [e.get("loss", math.nan) for e in per_epoch]


# ----------------------------------------------------------------------------- the loop
def _synthesise(exp, opts: WASPConfig, t: int, good: list[MCRecord], bad: list[MCRecord], cache, progress,
                results: Results):
    """The LLM's synthetic samples of round t: (records, targets, stats)."""
    cfg, public = exp.cfg, exp.data.public
    n_opt = len(public[0].options) if public else cfg.data.num_options
    prompts = []
    for i in range(opts.samples_per_round):
        rng = random.Random(item_seed(cfg.seed, t, i))
        if good or bad:
            g = rng.sample(good, min(opts.good_per_prompt, len(good)))
            b = rng.sample(bad, min(opts.bad_per_prompt, len(bad)))
            prompts.append(generation_prompt(g, b, [], n_opt))
        else:
            prompts.append(generation_prompt([], [], rng.sample(public, min(opts.public_examples, len(public))), n_opt))
    max_new = opts.max_new_tokens or cfg.generation.max_new_tokens
    results.add_budget(t, "server", "synthetic_questions", n=len(prompts),
                       prompts_cut=sum(exp.server.prompt_ids(prompts, max_new)[1]))
    with progress.task(f"round {t} server: synthetic questions", len(prompts)) as bar:
        sampling = Sampling(opts.temperature, opts.top_p, round_seed(cfg.seed, t)) if opts.temperature > 0 else None
        gens = generate(exp.server, prompts, max_new, cfg.generation.batch_size, sampling)
        bar.advance(len(prompts))
    records, seen = [], set()
    for i, g in enumerate(gens):
        parsed = parse_question(g, n_opt)
        if parsed is None or parsed in seen:
            continue
        seen.add(parsed)
        records.append(MCRecord(id=f"wasp-{t}-{i}", question=parsed[0], options=parsed[1], domain="wasp"))
    answers = cache.get(t, exp.server, records)
    kept = [(x, y) for x, a in zip(records, answers) if (y := normalised_target(a, n_opt)) is not None]
    stats = {"prompts": len(prompts), "parsed": len(records), "kept": len(kept)}
    return [x for x, _ in kept], [y for _, y in kept], stats


def _client_votes(encoder, client: str, train: list[MCRecord], synthetic: list[MCRecord], opts: WASPConfig,
                  seed: int) -> torch.Tensor:
    """Runs on the client: its private questions never leave this function."""
    priv = encoder.encode_cached([(client, x.id) for x in train], [format_question(x) for x in train])
    syn = encoder.encode_cached([("synthetic", x.id) for x in synthetic], [format_question(x) for x in synthetic])
    gen = torch.Generator().manual_seed(seed)
    return top_q_votes(priv, syn, opts.top_q, opts.vote_decay, opts.noise_std, gen)


def run_wasp(exp, channel: Channel, results: Results, tracker=None, start_round: int = 1, state=None,
             on_round_end=None, progress=None) -> dict:
    cfg = exp.cfg
    opts = cfg.wasp  # validated with the run config (ladalit.core.config)
    progress = progress or Progress(quiet=True)
    guard, optimizers = NonFiniteGuard(cfg.on_nonfinite), {}
    encoder = make_encoder(opts.encoder or cfg.filter_net.encoder)
    cache = ResponseCache(cfg.generation.max_new_tokens, cfg.generation.batch_size, progress)
    private = {k: exp.data.clients[i].train for i, k in enumerate(exp.clients)}
    good: list[MCRecord] = []
    bad: list[MCRecord] = []
    # per client: what it has received so far, (prompt, target, weight) by round
    held: dict[str, list[tuple[list[str], list[str], torch.Tensor]]] = {k: [] for k in exp.clients}
    stats: dict = {}
    if state is not None:  # resume: the contrastive pools, what every client holds, the counters
        resume_state(exp, state, guard, optimizers, results, channel)
        good, bad, held, stats = state["good"], state["bad"], state["held"], state["stats"]
        cache.generated = state["counters"]["responses_generated"]
    for t in range(start_round, cfg.rounds + 1):
        if t == 1:
            private_sft(exp, guard, results, optimizers, lambda c: c.train_cfg.sft_epochs, 0)
        synthetic, targets, st = _synthesise(exp, opts, t, good, bad, cache, progress, results)
        cache.drop_before(t + 1)
        if synthetic:
            payload = {"ids": [x.id for x in synthetic], "questions": [x.question for x in synthetic],
                       "options": [list(x.options) for x in synthetic], "targets": targets}
            votes = {}
            for i, k in enumerate(exp.clients):
                got = as_dict(channel.send(t, DOWN, k, SyntheticSamples(t, **payload)))
                recs = [MCRecord(id=sid, question=q, options=tuple(o), domain="wasp")
                        for sid, q, o in zip(got["ids"], got["questions"], got["options"])]
                mine = _client_votes(encoder, k, private[k], recs, opts, client_seed(cfg.seed, t, i))
                votes[k] = channel.send(t, UP, k, Votes(t, mine)).votes
                held[k].append(([zero_shot_prompt(x) for x in recs], list(got["targets"]),
                                vote_weights(mine) if opts.weights == "local" else None))
            total = torch.stack(list(votes.values())).sum(0)
            if opts.weights == "global":
                w = vote_weights(total)
                for k in exp.clients:
                    received = channel.send(t, DOWN, k, SampleWeights(t, w)).weights
                    p, y, _ = held[k][-1]
                    held[k][-1] = (p, y, received)
            top, bottom = contrastive_pools(total, opts.pool_size, round_seed(cfg.seed, t))
            good, bad = [synthetic[i] for i in top], [synthetic[i] for i in bottom]
            st |= {"voted": int((total > 0).sum()), "good": [x.id for x in good], "bad": [x.id for x in bad]}
        stats[str(t)] = st
        # ---------------------------------------------------------------- clients train on the weighted set
        for k, client in exp.clients.items():
            rounds = held[k] if opts.accumulate else held[k][-1:] if synthetic else []
            prompts = [p for r in rounds for p in r[0]]
            targets_k = [y for r in rounds for y in r[1]]
            weights = torch.cat([r[2] for r in rounds]) if rounds else torch.zeros(0)
            use = [j for j in range(len(prompts)) if float(weights[j]) > 0]
            results.add_selection(t, f"{k}<-server", "client", len(prompts), len(use))
            if not use:
                results.add_train(t, k, wasp_loss=math.nan, synthetic=0)
                continue
            ls = weighted_finetune(exp.fabric, client, optimizers[k], [prompts[j] for j in use],
                                   [targets_k[j] for j in use], weights[use], client.train_cfg.epochs,
                                   cfg.seed + t, guard, t)
            results.add_train(t, k, wasp_loss=ls[-1] if ls else math.nan, synthetic=len(use))
        end_round(exp, results, channel, tracker, progress, t, on_round_end, lambda: round_state(
            exp, guard, optimizers, results, channel, good=good, bad=bad, held=held, stats=stats,
            counters={"responses_generated": cache.generated}))
    return {"nonfinite_skipped": guard.skipped, "responses_generated": cache.generated, "wasp": stats}
