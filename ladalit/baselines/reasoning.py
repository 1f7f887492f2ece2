"""Reasoning-transfer baselines of paper Table IV, run through the same split, channel and evaluation.

- ``sft_cot``: clients fine-tune on the LLM's chain-of-thought answers for the public set, keeping only
  the rationales that end in a parseable answer statement ("... The answer is (X).").
- ``socratic_cot`` (Shridhar et al., 2022): the LLM decomposes every public question into sub-questions
  and answers them; the SLM learns the whole sub-question/answer chain (then the answer) as its target.
- ``rstar`` (Qi et al., 2024), mutual consistency: the SLM (generator) writes a reasoning trajectory, the
  LLM (discriminator) gets the trajectory cut at a random step and completes it; a trajectory is kept when
  the completion reaches the same answer, and the SLM fine-tunes on the kept ones. Compact: instead of
  rStar's MCTS the generator proposes one greedy trajectory per prompt variant (zero-shot, one-shot).

All three start with the private-train SFT of every method (``standalone.private_sft``); the LLM is not
trained. Options (``reasoning.*``, see :class:`ReasoningConfig`) are validated with the run config.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from ladalit.baselines.standalone import end_round, private_sft, resume_state, round_state
from ladalit.core.config import ReasoningConfig
from ladalit.core.channel import DOWN, UP, Channel
from ladalit.core.participant import Sampling
from ladalit.core.messages import CompletionAnswers, PartialTrajectories, ServerRationales, SocraticChains, as_dict
from ladalit.data.records import LETTERS, MCRecord
from ladalit.core.experiment import public_by_id
from ladalit.core.progress import Progress
from ladalit.core.seeds import client_seed, round_seed
from ladalit.core.prompts import format_question, format_response, one_shot_prompt, zero_shot_prompt
from ladalit.core.results import Results
from ladalit.core.training import NonFiniteGuard, supervised_finetune


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


def _max_new_tokens(cfg, opts: ReasoningConfig) -> int:
    return opts.max_new_tokens or cfg.generation.max_new_tokens


def _num_options(exp) -> int:
    return len(exp.data.public[0].options) if exp.data.public else exp.cfg.data.num_options


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


# ----------------------------------------------------------------------------- one shared loop
def _finetune_all(exp, received: dict[str, tuple[list[str], list[str]]], guard, optimizers, results, t: int,
                  what: str) -> None:
    """Every client fine-tunes train.epochs on the (prompts, targets) it received."""
    for k, client in exp.clients.items():
        prompts, targets = received.get(k, ([], []))
        if not prompts:
            results.add_train(t, k, **{what: math.nan, "targets": 0})
            continue
        ls = supervised_finetune(exp.fabric, client, optimizers[k], prompts, targets, client.train_cfg.epochs,
                                 exp.cfg.seed + t, guard, round=t)
        results.add_train(t, k, **{what: ls[-1] if ls else math.nan, "targets": len(prompts)})


def _run_once_from_server(exp, channel: Channel, results: Results, tracker, progress, message, what: str,
                          make_targets, start_round: int, state, on_round_end) -> dict:
    """The LLM's targets for D_p are made once (it does not train) and sent in round 1; every round each
    client fine-tunes train.epochs more on them (the checkpoint keeps what each client received).
    `make_targets` returns (ids kept, targets, stats)."""
    cfg = exp.cfg
    guard, optimizers = NonFiniteGuard(cfg.on_nonfinite), {}
    received: dict[str, tuple[list[str], list[str]]] = {}
    stats: dict = {}
    if state is not None:
        resume_state(exp, state, guard, optimizers, results, channel)
        received, stats = state["received"], state["stats"]
    for t in range(start_round, cfg.rounds + 1):
        if t == 1:
            private_sft(exp, guard, results, optimizers, lambda c: c.train_cfg.sft_epochs, 0)
            ids, targets, stats = make_targets()
            for k in exp.clients:
                if not ids:
                    received[k] = ([], [])
                    continue
                got = as_dict(channel.send(t, DOWN, k, message(t, ids, targets)))
                received[k] = ([zero_shot_prompt(public_by_id(exp, i)) for i in got["ids"]], got["targets"])
        _finetune_all(exp, received, guard, optimizers, results, t, what)
        end_round(exp, results, channel, tracker, progress, t, on_round_end,
                  lambda: round_state(exp, guard, optimizers, results, channel, received=received, stats=stats))
    return {"nonfinite_skipped": guard.skipped, message.kind: stats}


# ----------------------------------------------------------------------------- sft_cot
def run_sft_cot(exp, channel: Channel, results: Results, tracker=None, start_round: int = 1, state=None,
                on_round_end=None, progress=None) -> dict:
    """SFT on the LLM's rationales for D_p, only those that end in a parseable answer (server-side filter,
    so only kept rationales cross the channel: "server_rationales" down, {ids, targets})."""
    cfg, opts = exp.cfg, exp.cfg.reasoning
    n_opt = _num_options(exp)

    def make_targets():
        public = exp.data.public
        with (progress or Progress(quiet=True)).task("generate server rationales", len(public)) as bar:
            answers = generate(exp.server, [zero_shot_prompt(x) for x in public], _max_new_tokens(cfg, opts),
                               cfg.generation.batch_size)
            bar.advance(len(public))
        kept = [(x.id, t) for x, a in zip(public, answers) if (t := normalised_target(a, n_opt)) is not None]
        return [i for i, _ in kept], [t for _, t in kept], {"generated": len(public), "kept": len(kept)}

    return _run_once_from_server(exp, channel, results, tracker, progress, ServerRationales, "cot_loss",
                                 make_targets, start_round, state, on_round_end)


# ----------------------------------------------------------------------------- socratic_cot
def run_socratic_cot(exp, channel: Channel, results: Results, tracker=None, start_round: int = 1, state=None,
                     on_round_end=None, progress=None) -> dict:
    """The LLM decomposes each public question into answered sub-questions ("socratic_chains" down,
    {ids, targets}); the SLMs learn the chain after the usual zero-shot prompt."""
    cfg, opts = exp.cfg, exp.cfg.reasoning
    n_opt = _num_options(exp)

    def make_targets():
        public = exp.data.public
        with (progress or Progress(quiet=True)).task("generate server decompositions", len(public)) as bar:
            gens = generate(exp.server, [socratic_prompt(x, exp.example) for x in public],
                            _max_new_tokens(cfg, opts), cfg.generation.batch_size)
            bar.advance(len(public))
        kept = [(x.id, c) for x, g in zip(public, gens) if (c := socratic_chain(g, n_opt)) is not None]
        return [i for i, _ in kept], [c for _, c in kept], {"generated": len(public), "kept": len(kept)}

    return _run_once_from_server(exp, channel, results, tracker, progress, SocraticChains, "socratic_loss",
                                 make_targets, start_round, state, on_round_end)


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


def generator_trajectories(exp, client, questions: list[MCRecord], opts: ReasoningConfig, t: int,
                           client_index: int) -> tuple[list[Trajectory], int]:
    """The SLM's trajectories with a stated answer (and how many it generated in all)."""
    cfg, n_opt = exp.cfg, _num_options(exp)
    variants = [zero_shot_prompt] + ([lambda x: one_shot_prompt(x, exp.example)] if opts.rstar_prompts == 2 else [])
    prompts = [v(x) for v in variants for x in questions]
    recs = [x for _ in variants for x in questions]
    gens = generate(client, prompts, _max_new_tokens(cfg, opts), cfg.generation.batch_size)
    rng = random.Random(client_seed(cfg.seed, t, client_index))
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


def run_rstar(exp, channel: Channel, results: Results, tracker=None, start_round: int = 1, state=None,
              on_round_end=None, progress=None) -> dict:
    """Mutual consistency each round: "partial_trajectories" up ({ids, partials}: the SLM's own text on
    public questions), "completion_answers" down ({ids, answers}: the letter the LLM's completion reaches,
    "" if none); the client keeps the trajectories whose answer agrees and fine-tunes on them."""
    cfg, opts = exp.cfg, exp.cfg.reasoning
    guard, optimizers = NonFiniteGuard(cfg.on_nonfinite), {}
    progress = progress or Progress(quiet=True)
    n_opt = _num_options(exp)
    stats: dict = {}
    if state is not None:
        resume_state(exp, state, guard, optimizers, results, channel)
        stats = state["stats"]
    for t in range(start_round, cfg.rounds + 1):
        if t == 1:
            private_sft(exp, guard, results, optimizers, lambda c: c.train_cfg.sft_epochs, 0)
        questions = list(exp.data.public)
        if opts.rstar_questions is not None and opts.rstar_questions < len(questions):
            questions = random.Random(round_seed(cfg.seed, t)).sample(questions, opts.rstar_questions)
        received: dict[str, tuple[list[str], list[str]]] = {}
        for i, (k, client) in enumerate(exp.clients.items()):
            with progress.task(f"round {t} {k}: trajectories", len(questions)) as bar:
                trajs, generated = generator_trajectories(exp, client, questions, opts, t, i)
                bar.advance(len(questions))
            kept: list[Trajectory] = []
            if trajs:
                # client -> server: the cut trajectories; server -> client: the answers its completions reach
                up = as_dict(channel.send(t, UP, k, PartialTrajectories(t, [z.sample_id for z in trajs],
                                                                        [z.partial for z in trajs])))
                recs = [public_by_id(exp, sid) for sid in up["ids"]]
                completions = generate(exp.server, [discriminator_prompt(x, p) for x, p in zip(recs, up["partials"])],
                                       _max_new_tokens(cfg, opts), cfg.generation.batch_size)
                letters = [final_answer(f"{p} {c}", n_opt) or "" for p, c in zip(up["partials"], completions)]
                down = as_dict(channel.send(t, DOWN, k, CompletionAnswers(t, up["ids"], letters)))
                kept = [z for z, a in zip(trajs, down["answers"]) if a == z.letter]
            received[k] = ([z.prompt for z in kept], [z.target for z in kept])
            stats[f"{t}:{k}"] = {"generated": generated, "answered": len(trajs), "consistent": len(kept)}
        _finetune_all(exp, received, guard, optimizers, results, t, "rstar_loss")
        end_round(exp, results, channel, tracker, progress, t, on_round_end,
                  lambda: round_state(exp, guard, optimizers, results, channel, stats=stats))
    return {"nonfinite_skipped": guard.skipped, "rstar": stats}
