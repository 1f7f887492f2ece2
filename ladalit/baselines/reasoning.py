"""Reasoning-transfer baselines of paper Table IV, run through the same split, channel and evaluation.

- ``sft_cot``: clients fine-tune on the LLM's chain-of-thought answers for the public set, keeping only
  the rationales that end in a parseable answer statement ("... The answer is (X).").
- ``socratic_cot`` (Shridhar et al., 2022): the LLM decomposes every public question into sub-questions
  and answers them; the SLM learns the whole sub-question/answer chain (then the answer) as its target.
- ``rstar`` (Qi et al., 2024), mutual consistency: the SLM (generator) writes a reasoning trajectory, the
  LLM (discriminator) gets the trajectory cut at a random step and completes it; a trajectory is kept when
  the completion reaches the same answer, and the SLM fine-tunes on the kept ones. Compact: instead of
  rStar's MCTS the generator proposes one greedy trajectory per prompt variant (zero-shot, one-shot).

All three are roles (ladalit.core.roles: ``SFT_COT``, ``SOCRATIC_COT``, ``RSTAR``, registered in
ladalit/registry.py) and run in this process and on a deployment alike. Every client starts with the
private-train SFT of every method (Standalone's ``PrivateClient``); the LLM is not trained. Options
(``reasoning.*``, see :class:`Config`) are validated with the run config.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass
from typing import Optional

from ladalit.baselines.standalone import LocalRoundsServer, PrivateClient
from ladalit.core.config import ConfigError, section
from ladalit.core.participant import Sampling
from ladalit.core.messages import (AskTrajectories, CompletionAnswers, LocalRound, PartialTrajectories, ProtocolError,
                                   Ready, ServerRationales, SocraticChains)
from ladalit.data.records import LETTERS, MCRecord
from ladalit.core.experiment import one_shot_example
from ladalit.core.progress import Progress
from ladalit.core.roles import MethodRoles
from ladalit.core.seeds import client_seed, round_seed
from ladalit.core.prompts import format_question, format_response, one_shot_prompt, zero_shot_prompt
from ladalit.core.training import supervised_finetune


# ----------------------------------------------------------------------------- config section `reasoning`
@dataclass
class Config:
    """`reasoning.*`: options of sft_cot, socratic_cot and rstar."""
    # tokens per LLM decomposition / SLM trajectory / LLM completion (None: generation.max_new_tokens)
    max_new_tokens: Optional[int] = None
    # rStar: trajectories per question, one per prompt variant: 1 = zero-shot, 2 = zero-shot and one-shot
    rstar_prompts: int = 2
    # rStar: the discriminator sees the first ⌊u·steps⌋ steps, u ~ U[cut_min, cut_max] per trajectory
    rstar_cut_min: float = 0.2
    # rStar: upper end of that cut fraction
    rstar_cut_max: float = 0.8
    # rStar: public questions the generator answers each round (None: all of D_p)
    rstar_questions: Optional[int] = None


def _check(cfg) -> None:
    r = cfg.reasoning
    if r.rstar_cut_min > r.rstar_cut_max:
        raise ConfigError(f"config key 'reasoning.rstar_cut_min': {r.rstar_cut_min} is above "
                          f"rstar_cut_max {r.rstar_cut_max}")


section("reasoning", Config, after="wasp", description="sft_cot / socratic_cot / rstar settings (paper Table IV)",
        ranges={"rstar_prompts": (1, 2), "rstar_cut_min": (0.0, 1.0), "rstar_cut_max": (0.0, 1.0),
                "max_new_tokens": (1, None), "rstar_questions": (1, None)},
        check=_check)


# ----------------------------------------------------------------------------- text helpers
_ANSWER_STATEMENT = re.compile(r"(?:[Tt]he )?answer is\s*\(?([A-J])\)?\.?")


def final_answer(text: str, num_options: int = 4) -> str | None:
    """The letter of the first explicit answer statement ("answer is (X)") in `text`, else None.

    Stricter than `prompts.parse_answer` (no fallback to a stray letter): a rationale counts as ending
    in a parseable answer only if it states one.
    """
    m = _ANSWER_STATEMENT.search(text or "")
    if m and m.group(1) in LETTERS[:num_options]:
        return m.group(1)
    return None


def clean_rationale(text: str, num_options: int = 4) -> tuple[str, str] | None:
    """(reasoning before the answer statement, letter), or None if `text` states no valid answer.

    Whatever follows the first answer statement is dropped (greedy generations often ramble on).
    """
    m = _ANSWER_STATEMENT.search(text or "")
    if not m or m.group(1) not in LETTERS[:num_options]:
        return None
    return text[: m.start()].strip(), m.group(1)


def normalised_target(text: str, num_options: int = 4) -> str | None:
    """The training target in the house format " {reasoning} The answer is (X).", or None."""
    c = clean_rationale(text, num_options)
    return None if c is None else format_response(c[0], c[1])


_STEP_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


def split_steps(reasoning: str) -> list[str]:
    """Reasoning steps: sentences / lines, empty ones dropped."""
    return [s.strip() for s in _STEP_SPLIT.split(reasoning or "") if s.strip()]


def generate(participant, prompts: list[str], max_new_tokens: int, batch_size: int,
             sampling: Sampling | None = None) -> list[str]:
    """Greedy generation, or sampled with `sampling` (one place, so that tests can stand in canned texts)."""
    if not prompts:
        return []
    return participant.generate_text(prompts, max_new_tokens, batch_size, sampling=sampling)


def _max_new_tokens(cfg, opts: Config) -> int:
    return opts.max_new_tokens or cfg.generation.max_new_tokens


def _num_options(cfg, public) -> int:
    return len(public[0].options) if public else cfg.data.num_options


# ----------------------------------------------------------------------------- Socratic CoT prompts
# Worked decompositions of the one-shot examples (prompts.ONE_SHOT_EXAMPLES), by example id.
SOCRATIC_DEMOS: dict[str, str] = {
    "one-shot-math": ("Sub-question 1: How much do 4 pens cost? Answer: 4*3=12 dollars.\n"
                      "Sub-question 2: How much change is left from 20 dollars? Answer: 20-12=8 dollars.\n"
                      "The answer is (B)."),
    "one-shot-synthetic": ("Sub-question 1: How many apples after he gets 2 more? Answer: 6+2=8.\n"
                           "Sub-question 2: How many after he multiplies them by 3? Answer: 8*3=24.\n"
                           "The answer is (B)."),
    "one-shot-commonsense": ("Sub-question 1: What happens to a plate after washing? Answer: It is stored "
                             "until it is used again.\n"
                             "Sub-question 2: Where are clean plates stored? Answer: In a cupboard.\n"
                             "The answer is (B)."),
}
SOCRATIC_INSTRUCTION = ("Break the question into simpler sub-questions, answer each of them in turn, "
                        "then give the final answer.")
SUB_Q = "Sub-question 1:"


def socratic_demo(example: MCRecord) -> str:
    if example.id in SOCRATIC_DEMOS:
        return SOCRATIC_DEMOS[example.id]
    steps = split_steps(example.rationale or "") or ["Read the options."]
    lines = [f"Sub-question {i}: What follows from step {i}? Answer: {s}" for i, s in enumerate(steps, 1)]
    return "\n".join(lines + [f"The answer is ({example.answer})."])


def socratic_prompt(rec: MCRecord, example: MCRecord) -> str:
    """The LLM's decomposition prompt; it ends with "Sub-question 1:" for the LLM to continue."""
    return (f"{SOCRATIC_INSTRUCTION}\n\n{format_question(example)}{socratic_demo(example)}\n\n"
            f"{format_question(rec)}{SUB_Q}")


def socratic_chain(generation: str, num_options: int = 4) -> str | None:
    """The target chain " Sub-question 1: ... Answer: ... The answer is (X).", or None when the
    decomposition has no answered sub-question or no final answer."""
    c = clean_rationale(f"{SUB_Q}{generation}", num_options)
    if c is None:
        return None
    body, letter = c
    if not re.search(r"Sub-question\s*\d+\s*:.*?Answer\s*:\s*\S", body, re.S):
        return None
    return format_response(body, letter)


# ----------------------------------------------------------------------------- SFT-CoT and Socratic-CoT: the roles
def finetune_received(role, t: int, what: str) -> None:
    """The client fine-tunes train.epochs on the (prompts, targets) it holds; a row of `what` and their number."""
    if not role.prompts:
        role.results.add_train(t, role.name, **{what: math.nan, "targets": 0})
        return
    ls = supervised_finetune(role.fabric, role.participant, role.optimizer, role.prompts, role.targets,
                             role.participant.train_cfg.epochs, role.cfg.seed + t, role.guard, round=t)
    role.results.add_train(t, role.name, **{what: ls[-1] if ls else math.nan, "targets": len(role.prompts)})


class TargetsClient(PrivateClient):
    """SFT-CoT's and Socratic-CoT's client role: round 1's ServerRationales / SocraticChains (the LLM's kept
    targets for public ids) ⇒ Ready after the private SFT and the first train.epochs on them; LocalRound(t)
    ⇒ Ready after round t's epochs on the same targets."""

    def __init__(self, cfg, fabric, name: str, participant, private, public, what: str):
        super().__init__(cfg, fabric, name, participant, private)
        self.what, self.by_id, self.prompts, self.targets = what, {x.id: x for x in public}, [], []

    def handle(self, msg):
        first = isinstance(msg, ServerRationales)
        if not (first or isinstance(msg, LocalRound)) or first != (msg.round == 1):
            raise ProtocolError(f"client '{self.name}': no handler for message kind {msg.kind!r} in round {msg.round}")
        self.start_round(msg.round)
        if first:
            self.private_sft(self.participant.train_cfg.sft_epochs, 0)
            self.prompts = [zero_shot_prompt(self.by_id[i]) for i in msg.ids]
            self.targets = list(msg.targets)
        finetune_received(self, msg.round, self.what)
        return Ready(msg.round)

    def state_dict(self) -> dict:
        return super().state_dict() | {"received": [self.prompts, self.targets]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.prompts, self.targets = (list(x) for x in state["received"])


class TargetsServer(LocalRoundsServer):
    """The server role of SFT-CoT and Socratic-CoT: the LLM's targets for D_p are made once (it does not train)
    and sent in round 1 (`message`: only the kept ones cross); later rounds only start the clients' epochs.
    `make_targets(server)` returns (ids kept, targets, stats)."""

    def __init__(self, cfg, fabric, participant, public, transport, progress, message, make_targets):
        super().__init__(cfg, transport, fabric, participant)
        self.public, self.progress = public, progress or Progress(quiet=True)
        self.message, self.make_targets, self.stats = message, make_targets, {}

    def run_round(self, t: int) -> None:
        if t > 1:
            return super().run_round(t)
        ids, targets, self.stats = self.make_targets(self)
        msg = self.message(1, ids, targets)
        self.transport.request_all({k: msg for k in self.transport.names})

    def counters(self) -> dict:
        return {"nonfinite_skipped": [], self.message.kind: self.stats}

    def state_dict(self) -> dict:
        return super().state_dict() | {"stats": self.stats}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.stats = dict(state["stats"])


def kept_targets(server, prompts: list[str], task: str, target_of) -> tuple[list[str], list[str], dict]:
    """The LLM's generations on `prompts` (one per public sample), kept where `target_of` makes a target."""
    cfg, public = server.cfg, server.public
    with server.progress.task(task, len(public)) as bar:
        gens = generate(server.participant, prompts, _max_new_tokens(cfg, cfg.reasoning), cfg.generation.batch_size)
        bar.advance(len(public))
    n_opt = _num_options(cfg, public)
    kept = [(x.id, y) for x, g in zip(public, gens) if (y := target_of(g, n_opt)) is not None]
    return [i for i, _ in kept], [y for _, y in kept], {"generated": len(public), "kept": len(kept)}


def sft_cot_targets(server):
    """SFT-CoT: the LLM's zero-shot rationales, only those that end in a parseable answer (a server-side filter)."""
    return kept_targets(server, [zero_shot_prompt(x) for x in server.public], "generate server rationales",
                        normalised_target)


def socratic_targets(server):
    """Socratic-CoT: the LLM decomposes each public question into answered sub-questions."""
    example = one_shot_example(server.cfg)
    return kept_targets(server, [socratic_prompt(x, example) for x in server.public],
                        "generate server decompositions", socratic_chain)


def targets_roles(message, what: str, make_targets) -> MethodRoles:
    def server(cfg, fabric, participant, public, transport, progress=None, hooks=None):
        return TargetsServer(cfg, fabric, participant, public, transport, progress, message, make_targets)

    def client(cfg, fabric, name, seat, participant, private, public, progress=None, hooks=None):
        return TargetsClient(cfg, fabric, name, participant, private, public, what)
    return MethodRoles(server=server, client=client)


# SFT-CoT: "server_rationales" down in round 1, {ids, targets}; the SLMs learn them after the zero-shot prompt
SFT_COT = targets_roles(ServerRationales, "cot_loss", sft_cot_targets)
# Socratic-CoT: "socratic_chains" down in round 1, {ids, targets}: the sub-question chains
SOCRATIC_COT = targets_roles(SocraticChains, "socratic_loss", socratic_targets)


# ----------------------------------------------------------------------------- rstar
@dataclass
class Trajectory:
    sample_id: str
    prompt: str        # the SLM's training prompt (zero-shot)
    target: str        # the normalised trajectory " {steps} The answer is (X)."
    letter: str
    partial: str       # the first steps, given to the discriminator


def rstar_partial(steps: list[str], rng: random.Random, cut_min: float, cut_max: float) -> str:
    """The trajectory cut after ⌊u·len(steps)⌋ steps, u ~ U[cut_min, cut_max] (rStar: mask the rest)."""
    n = math.floor(rng.uniform(cut_min, cut_max) * len(steps))
    return " ".join(steps[:n])


def discriminator_prompt(rec: MCRecord, partial: str) -> str:
    return zero_shot_prompt(rec) + (f" {partial}" if partial else "")


def generator_trajectories(cfg, participant, questions: list[MCRecord], t: int, seat: int,
                           n_opt: int) -> tuple[list[Trajectory], int]:
    """The SLM's trajectories with a stated answer (and how many it generated in all); `seat`: the client's
    position in the config (its stream of cuts)."""
    opts, example = cfg.reasoning, one_shot_example(cfg)
    variants = [zero_shot_prompt] + ([lambda x: one_shot_prompt(x, example)] if opts.rstar_prompts == 2 else [])
    prompts = [v(x) for v in variants for x in questions]
    recs = [x for _ in variants for x in questions]
    gens = generate(participant, prompts, _max_new_tokens(cfg, opts), cfg.generation.batch_size)
    rng = random.Random(client_seed(cfg.seed, t, seat))
    out, seen = [], set()
    for x, g in zip(recs, gens):
        c = clean_rationale(g, n_opt)
        if c is None:
            continue
        body, letter = c
        target = format_response(body, letter)
        if (x.id, target) in seen:
            continue
        seen.add((x.id, target))
        out.append(Trajectory(x.id, zero_shot_prompt(x), target, letter,
                              rstar_partial(split_steps(body), rng, opts.rstar_cut_min, opts.rstar_cut_max)))
    return out, len(gens)


def rstar_questions(cfg, public: list[MCRecord], t: int) -> list[MCRecord]:
    """Round t's public questions: all of D_p, or a sample of reasoning.rstar_questions of them."""
    n = cfg.reasoning.rstar_questions
    if n is not None and n < len(public):
        return random.Random(round_seed(cfg.seed, t)).sample(list(public), n)
    return list(public)


class RStarClient(PrivateClient):
    """rStar's client role (the generator): AskTrajectories(t, question ids) ⇒ PartialTrajectories (round 1
    after the private SFT): its trajectories with a stated answer, cut part-way, its own text on public
    questions; CompletionAnswers(t, the letters the LLM's completions reach) ⇒ Ready after train.epochs on the
    trajectories whose answer agrees."""

    def __init__(self, cfg, fabric, name: str, seat: int, participant, private, public, progress=None):
        super().__init__(cfg, fabric, name, participant, private)
        self.seat, self.by_id, self.n_opt = seat, {x.id: x for x in public}, _num_options(cfg, public)
        self.progress, self.trajectories, self.stats = progress or Progress(quiet=True), [], {}
        self.prompts, self.targets = [], []

    def handle(self, msg):
        if isinstance(msg, AskTrajectories):
            return self.trajectories_of(msg)
        if isinstance(msg, CompletionAnswers) and msg.round == self.round:
            return self.keep_consistent(msg)
        raise ProtocolError(f"client '{self.name}': no handler for message kind {msg.kind!r} in round {msg.round}")

    def trajectories_of(self, msg: AskTrajectories) -> PartialTrajectories:
        t = msg.round
        self.start_round(t)
        if t == 1:
            self.private_sft(self.participant.train_cfg.sft_epochs, 0)
        questions = [self.by_id[i] for i in msg.ids]
        with self.progress.task(f"round {t} {self.name}: trajectories", len(questions)) as bar:
            trajs, generated = generator_trajectories(self.cfg, self.participant, questions, t, self.seat, self.n_opt)
            bar.advance(len(questions))
        self.trajectories = trajs
        self.stats[f"{t}:{self.name}"] = {"generated": generated, "answered": len(trajs), "consistent": 0}
        return PartialTrajectories(t, [z.sample_id for z in trajs], [z.partial for z in trajs])

    def keep_consistent(self, msg: CompletionAnswers) -> Ready:
        t = msg.round
        kept = [z for z, a in zip(self.trajectories, msg.answers) if a == z.letter]
        self.stats[f"{t}:{self.name}"]["consistent"] = len(kept)
        self.prompts, self.targets, self.trajectories = [z.prompt for z in kept], [z.target for z in kept], []
        finetune_received(self, t, "rstar_loss")
        return Ready(t)

    def counters(self) -> dict:
        return super().counters() | {"rstar": dict(self.stats)}

    def state_dict(self) -> dict:
        return super().state_dict() | {"stats": self.stats, "trajectories": [asdict(z) for z in self.trajectories]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.stats = {k: dict(v) for k, v in state["stats"].items()}
        self.trajectories = [Trajectory(**z) for z in state["trajectories"]]


class RStarServer(LocalRoundsServer):
    """rStar's server role (the discriminator): every round it asks each client for its cut trajectories on the
    round's questions, completes them with the LLM, and sends back the letter each completion reaches ("" if
    none)."""

    def __init__(self, cfg, fabric, participant, public, transport):
        super().__init__(cfg, transport, fabric, participant)
        self.by_id, self.public = {x.id: x for x in public}, public
        self.n_opt = _num_options(cfg, public)

    def run_round(self, t: int) -> None:
        ids = [x.id for x in rstar_questions(self.cfg, self.public, t)]
        ups = self.transport.request_all({k: AskTrajectories(t, ids) for k in self.transport.names})
        self.transport.request_all({k: CompletionAnswers(t, up.ids, self.complete(up)) for k, up in ups.items()})

    def complete(self, up: PartialTrajectories) -> list[str]:
        prompts = [discriminator_prompt(self.by_id[i], p) for i, p in zip(up.ids, up.partials)]
        completions = generate(self.participant, prompts, _max_new_tokens(self.cfg, self.cfg.reasoning),
                               self.cfg.generation.batch_size)
        return [final_answer(f"{p} {c}", self.n_opt) or "" for p, c in zip(up.partials, completions)]


def rstar_server(cfg, fabric, participant, public, transport, progress=None, hooks=None) -> RStarServer:
    return RStarServer(cfg, fabric, participant, public, transport)


def rstar_client(cfg, fabric, name, seat, participant, private, public, progress=None, hooks=None) -> RStarClient:
    return RStarClient(cfg, fabric, name, seat, participant, private, public, progress)


# rStar, mutual consistency each round: "partial_trajectories" up ({ids, partials}: the SLM's own text on
# public questions), "completion_answers" down ({ids, answers}: the letter the LLM's completion reaches)
RSTAR = MethodRoles(server=rstar_server, client=rstar_client)
