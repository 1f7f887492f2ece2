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

Round 1 starts with the private-train SFT of every method. The LLM is not trained. The roles (`ROLES`,
ladalit/registry.py) run in this process and on a deployment alike.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Optional

import torch

from ladalit.baselines.standalone import LocalRoundsServer, PrivateClient
from ladalit.core.config import check_encoder, section
from ladalit.core.messages import EndRound, ProtocolError, Ready, SampleWeights, SyntheticSamples, Votes
from ladalit.data.records import LETTERS, MCRecord
from ladalit.core.encoder import make_encoder
from ladalit.core.participant import Sampling
from ladalit.core.responses import ResponseCache
from ladalit.core.seeds import client_seed, item_seed, round_seed
from ladalit.core.progress import Progress
from ladalit.core.prompts import format_question, zero_shot_prompt
from ladalit.baselines.reasoning import generate, normalised_target
from ladalit.core.results import Results
from ladalit.core.roles import MethodRoles
from ladalit.core.training import NonFiniteGuard, RowLoss, train_rows


# ----------------------------------------------------------------------------- config section `wasp`
@dataclass
class Config:
    """`wasp.*` (defaults used where the config has no such section)."""
    # synthetic questions the LLM is asked for per round (before parsing / dedup / answer check)
    samples_per_round: int = 64
    # Top-Q voting: each private question votes for its top_q most similar synthetic questions
    top_q: int = 8
    # weight of the r-th nearest within one private question's vote: harmonic (1/r) | uniform
    vote_decay: str = "harmonic"
    # std of Gaussian noise added to each client's vote vector (0 = off)
    noise_std: float = 0.0
    # top- and bottom-voted samples kept as the next round's good / bad examples
    pool_size: int = 8
    # good examples shown in each generation prompt
    good_per_prompt: int = 2
    # bad examples shown in each generation prompt
    bad_per_prompt: int = 2
    # round 1: public questions shown as plain examples in each generation prompt
    public_examples: int = 2
    # training weights: global (summed votes, sent down) | local (each client's own votes)
    weights: str = "global"
    # train on every synthetic sample received so far (else only on this round's)
    accumulate: bool = False
    # tokens per generated question (None: generation.max_new_tokens)
    max_new_tokens: Optional[int] = None
    # question writing: 0 = greedy (the examples drawn per prompt are what makes questions differ); > 0:
    # nucleus sampling at this temperature, seeded per round (synthetic-data generation usually samples)
    temperature: float = 0.0
    # nucleus (top-p) mass kept when temperature > 0
    top_p: float = 1.0
    # sentence encoder for the votes ("" = filter_net.encoder): minilm | hashing | pkg.mod:Class
    encoder: str = ""


def _check(cfg) -> None:
    check_encoder("wasp.encoder", cfg.wasp.encoder)


section("wasp", Config, after="fedmkt", description="WASP baseline settings",
        choices={"vote_decay": ("harmonic", "uniform"), "weights": ("global", "local")},
        ranges={"samples_per_round": (1, None), "top_q": (1, None), "noise_std": (0.0, None), "pool_size": (1, None),
                "good_per_prompt": (0, None), "bad_per_prompt": (0, None), "public_examples": (0, None),
                "max_new_tokens": (1, None), "temperature": (0.0, None), "top_p": (1e-6, 1.0)},
        check=_check)


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


# ----------------------------------------------------------------------------- the server role
def _synthesise(cfg, server, public: list[MCRecord], t: int, good: list[MCRecord], bad: list[MCRecord], cache,
                progress, results: Results):
    """The LLM's synthetic samples of round t: (records, targets, stats)."""
    opts = cfg.wasp
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
                       prompts_cut=sum(server.prompt_ids(prompts, max_new)[1]))
    with progress.task(f"round {t} server: synthetic questions", len(prompts)) as bar:
        sampling = Sampling(opts.temperature, opts.top_p, round_seed(cfg.seed, t)) if opts.temperature > 0 else None
        gens = generate(server, prompts, max_new, cfg.generation.batch_size, sampling)
        bar.advance(len(prompts))
    records, seen = [], set()
    for i, g in enumerate(gens):
        parsed = parse_question(g, n_opt)
        if parsed is None or parsed in seen:
            continue
        seen.add(parsed)
        records.append(MCRecord(id=f"wasp-{t}-{i}", question=parsed[0], options=parsed[1], domain="wasp"))
    answers = cache.get(t, server, records)
    kept = [(x, y) for x, a in zip(records, answers) if (y := normalised_target(a, n_opt)) is not None]
    stats = {"prompts": len(prompts), "parsed": len(records), "kept": len(kept)}
    return [x for x, _ in kept], [y for _, y in kept], stats


class WASPServer(LocalRoundsServer):
    """WASP's server role, steps 1, 2 and 4 of the module docstring. Per round: SyntheticSamples(t, the kept
    samples; empty when none) ⇒ Votes (the round starts: round 1 after the client's private SFT); then
    SampleWeights(t, w) ⇒ Ready with `weights=global` and samples, else EndRound(t) ⇒ Ready (the client trains
    then). The LLM is not trained."""

    def __init__(self, cfg, fabric, participant, public, transport, progress=None):
        super().__init__(cfg, transport, fabric, participant)
        self.public, self.progress = list(public), progress or Progress(quiet=True)
        self.cache = ResponseCache(cfg.generation.max_new_tokens, cfg.generation.batch_size, self.progress)
        self.good: list[MCRecord] = []
        self.bad: list[MCRecord] = []
        self.stats: dict = {}

    def run_round(self, t: int) -> None:
        synthetic, targets, st = _synthesise(self.cfg, self.participant, self.public, t, self.good, self.bad,
                                             self.cache, self.progress, self.results)
        self.cache.drop_before(t + 1)
        msg = SyntheticSamples(t, [x.id for x in synthetic], [x.question for x in synthetic],
                               [list(x.options) for x in synthetic], targets)
        votes = self.transport.request_all({k: msg for k in self.transport.names})
        if synthetic:
            total = torch.stack([v.votes for v in votes.values()]).sum(0)
            top, bottom = contrastive_pools(total, self.cfg.wasp.pool_size, round_seed(self.cfg.seed, t))
            self.good, self.bad = [synthetic[i] for i in top], [synthetic[i] for i in bottom]
            st |= {"voted": int((total > 0).sum()), "good": [x.id for x in self.good], "bad": [x.id for x in self.bad]}
        self.stats[str(t)] = st
        if synthetic and self.cfg.wasp.weights == "global":
            end = SampleWeights(t, vote_weights(total))
        else:
            end = EndRound(t)
        self.transport.request_all({k: end for k in self.transport.names})

    def counters(self) -> dict:
        return {"nonfinite_skipped": [], "responses_generated": self.cache.generated, "wasp": self.stats}

    def state_dict(self) -> dict:
        return super().state_dict() | {"good": self.good, "bad": self.bad, "stats": self.stats,
                                       "generated": self.cache.generated}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.good, self.bad, self.stats = list(state["good"]), list(state["bad"]), dict(state["stats"])
        self.cache.generated = state["generated"]


# ----------------------------------------------------------------------------- the client role
def _client_votes(encoder, client: str, train: list[MCRecord], synthetic: list[MCRecord], opts: Config,
                  seed: int) -> torch.Tensor:
    """Runs on the client: its private questions never leave this function."""
    priv = encoder.encode_cached([(client, x.id) for x in train], [format_question(x) for x in train])
    syn = encoder.encode_cached([("synthetic", x.id) for x in synthetic], [format_question(x) for x in synthetic])
    gen = torch.Generator().manual_seed(seed)
    return top_q_votes(priv, syn, opts.top_q, opts.vote_decay, opts.noise_std, gen)


class WASPClient(PrivateClient):
    """WASP's client role, steps 3 and 5 of the module docstring: it votes on the synthetic samples with its
    private questions (only the vote vector goes up) and trains on the vote-weighted set at the round's end.
    `held`: what it has received so far, (prompts, targets, weights) per round with samples."""

    def __init__(self, cfg, fabric, name: str, seat: int, participant, private):
        super().__init__(cfg, fabric, name, participant, private)
        self.seat, self.encoder = seat, make_encoder(cfg.wasp.encoder or cfg.filter_net.encoder)
        self.held: list[list] = []
        self.fresh = False  # whether this round brought samples

    def handle(self, msg):
        if isinstance(msg, SyntheticSamples):
            return self.vote(msg)
        if isinstance(msg, (SampleWeights, EndRound)) and msg.round == self.round:
            if isinstance(msg, SampleWeights):
                self.held[-1][2] = msg.weights
            return self.train_round(msg.round)
        raise ProtocolError(f"client '{self.name}': no handler for message kind {msg.kind!r} in round {msg.round}")

    def vote(self, msg: SyntheticSamples) -> Votes:
        t, opts = msg.round, self.cfg.wasp
        self.start_round(t)
        if t == 1:
            self.private_sft(self.participant.train_cfg.sft_epochs, 0)
        recs = [MCRecord(id=sid, question=q, options=tuple(o), domain="wasp")
                for sid, q, o in zip(msg.ids, msg.questions, msg.options)]
        mine = _client_votes(self.encoder, self.name, self.private.train, recs, opts,
                             client_seed(self.cfg.seed, t, self.seat)) if recs else torch.zeros(0)
        self.fresh = bool(recs)
        if recs:
            self.held.append([[zero_shot_prompt(x) for x in recs], list(msg.targets),
                              vote_weights(mine) if opts.weights == "local" else None])
        return Votes(t, mine)

    def train_round(self, t: int) -> Ready:
        """Vote-weighted cross-entropy on this round's set (`accumulate`: on everything received so far)."""
        rounds = self.held if self.cfg.wasp.accumulate else self.held[-1:] if self.fresh else []
        prompts = [p for r in rounds for p in r[0]]
        targets = [y for r in rounds for y in r[1]]
        weights = torch.cat([r[2] for r in rounds]) if rounds else torch.zeros(0)
        use = [j for j in range(len(prompts)) if float(weights[j]) > 0]
        self.results.add_selection(t, f"{self.name}<-server", "client", len(prompts), len(use))
        if not use:
            self.results.add_train(t, self.name, wasp_loss=math.nan, synthetic=0)
            return Ready(t)
        ls = weighted_finetune(self.fabric, self.participant, self.optimizer, [prompts[j] for j in use],
                               [targets[j] for j in use], weights[use], self.participant.train_cfg.epochs,
                               self.cfg.seed + t, self.guard, t)
        self.results.add_train(t, self.name, wasp_loss=ls[-1] if ls else math.nan, synthetic=len(use))
        return Ready(t)

    def state_dict(self) -> dict:
        return super().state_dict() | {"held": self.held, "fresh": self.fresh}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.held, self.fresh = [list(r) for r in state["held"]], state["fresh"]


def wasp_server(cfg, fabric, participant, public, transport, progress=None, hooks=None) -> WASPServer:
    return WASPServer(cfg, fabric, participant, public, transport, progress)


def wasp_client(cfg, fabric, name, seat, participant, private, public, progress=None, hooks=None) -> WASPClient:
    return WASPClient(cfg, fabric, name, seat, participant, private)


ROLES = MethodRoles(server=wasp_server, client=wasp_client)
