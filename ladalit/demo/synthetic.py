"""Synthetic multi-step arithmetic word problems: the CPU proving ground's task.

Each record is a short story ("Tom has 6 apples. He gets 2 more. He doubles
them. How many apples now?") with four numeric options and a step-by-step
rationale: the chain of operations, then every option compared with the result,
"6+2=8. 8*2=16. (A) 16 vs 16 yes. (B) 8 vs 16 no. (C) 18 vs 16 no. (D) 15 vs 16 no."
(no "The answer is" -- the response format adds that).

- The number of steps is the difficulty knob (`min_steps`..`max_steps`).
- The domain decides which operations appear: `add_sub` (+, -), `mul` (*, /),
  `mixed` (all four). Every intermediate value stays in [0, max_value], and
  divisions are exact, so a tiny character-level model can compute the chain.
- Distractors are the values of plausible mistakes: one step skipped, one step
  done with the wrong operation, the result off by a small amount. The options
  are distinct, and the gold position is exactly balanced over A-D (each block
  of four consecutive records uses every position once, in a seeded order).

`generate(cfg)` is deterministic in `cfg`; record ids are f"syn-{seed}-{i}".
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ladalit.data.records import LETTERS, MCRecord

DOMAIN_OPS = {"add_sub": "+-", "mul": "*/", "mixed": "+-*/"}
NUM_OPTIONS = 4

NAMES = [("Tom", "He"), ("Ann", "She"), ("Sam", "He"), ("Mia", "She"), ("Leo", "He"), ("Eva", "She"),
         ("Max", "He"), ("Zoe", "She"), ("Ben", "He"), ("Amy", "She")]
ITEMS = ["apples", "coins", "books", "marbles", "cards", "stamps", "shells", "pens", "eggs", "toys"]
# one sentence per operation; {p} is the pronoun, {b} the operand
TEMPLATES = {
    "+": ["{p} gets {b} more.", "{p} buys {b} more.", "{p} finds {b} more."],
    "-": ["{p} loses {b}.", "{p} gives away {b}.", "{p} sells {b}."],
    "*": ["{p} gets {b} times as many.", "{p} multiplies them by {b}."],
    "/": ["{p} keeps 1/{b} of them.", "{p} divides them by {b}."],
}


# bump when a change here changes the generated records (the zoo's cache keys include it)
VERSION = "synthetic-3"


@dataclass
class SyntheticConfig:
    num_records: int = 6000
    min_steps: int = 1
    max_steps: int = 4
    domains: tuple[str, ...] = ("add_sub", "mul", "mixed")
    # every start, operand and intermediate value lies in [0, max_value]
    max_value: int = 100
    seed: int = 0


def apply_op(a: int, op: str, b: int) -> int | None:
    """a op b, or None when the result is not a non-negative integer."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a >= b else None
    if op == "*":
        return a * b
    if op == "/":
        return a // b if b > 0 and a % b == 0 else None
    raise ValueError(f"unknown operation {op!r}")


def run_chain(start: int, steps: list[tuple[str, int]]) -> int | None:
    """The value after applying `steps` to `start`, or None if a step is invalid."""
    v: int | None = start
    for op, b in steps:
        v = apply_op(v, op, b)
        if v is None:
            return None
    return v


INVERSE = {"+": "-", "-": "+", "*": "/", "/": "*"}


def _operand(rng: random.Random, op: str, a: int, max_value: int) -> int | None:
    """A random operand for `a op ?` that keeps the result in [0, max_value]; None if there is none."""
    if op == "+":
        hi = min(20, max_value - a)
        return rng.randint(1, hi) if hi >= 1 else None
    if op == "-":
        hi = min(20, a)
        return rng.randint(1, hi) if hi >= 1 else None
    if op == "*":
        cands = [b for b in range(2, 6) if a * b <= max_value]
    else:
        cands = [b for b in range(2, 6) if a % b == 0 and a > 0]
    return rng.choice(cands) if cands else None


def _chain(rng: random.Random, ops: str, n_steps: int, max_value: int) -> tuple[int, list[tuple[str, int]]]:
    while True:  # rejection: restart when the chain gets stuck (e.g. a prime above max_value/2 in `mul`)
        start = rng.randint(2, max_value // 2 if "*" in ops else max_value)
        v, steps = start, []
        for _ in range(n_steps):
            choices = [(op, b) for op in ops if (b := _operand(rng, op, v, max_value)) is not None
                       and not (steps and steps[-1] == (INVERSE[op], b))]  # no step that undoes the last one
            if not choices:
                break
            op, b = rng.choice(choices)
            v = apply_op(v, op, b)
            steps.append((op, b))
        if len(steps) == n_steps:
            return start, steps


WRONG_OP = {"+": "-*", "-": "+", "*": "+/", "/": "*-"}


def _distractors(rng: random.Random, start: int, steps: list[tuple[str, int]], gold: int, max_value: int) -> list[int]:
    """Values of plausible mistakes, most plausible first, all distinct from gold and each other."""
    mistakes = []
    skipped = [run_chain(start, steps[:i] + steps[i + 1:]) for i in range(len(steps))]
    rng.shuffle(skipped)
    wrong = [run_chain(start, steps[:i] + [(w, b)] + steps[i + 1:])
             for i, (op, b) in enumerate(steps) for w in WRONG_OP[op]]
    rng.shuffle(wrong)
    mistakes += [v for v in skipped[:1] + wrong[:1] + skipped[1:] + wrong[1:] if v is not None and v <= 2 * max_value]
    out: list[int] = []
    for v in mistakes:
        if v != gold and v not in out and len(out) < 2:
            out.append(v)
    while len(out) < NUM_OPTIONS - 1:  # off by a small amount
        v = gold + rng.choice([-3, -2, -1, 1, 2, 3, 10, -10])
        if v >= 0 and v != gold and v not in out:
            out.append(v)
    return out


def _question(rng: random.Random, start: int, steps: list[tuple[str, int]]) -> str:
    name, pron = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    parts = [f"{name} has {start} {item}."]
    parts += [rng.choice(TEMPLATES[op]).format(p=pron, b=b) for op, b in steps]
    parts.append(f"How many {item} now?")
    return " ".join(parts)


def rationale_of(start: int, steps: list[tuple[str, int]]) -> str:
    """'6+2=8. 8*2=16.' -- the chain of operations, one equation per step."""
    eqs, v = [], start
    for op, b in steps:
        w = apply_op(v, op, b)
        eqs.append(f"{v}{op}{b}={w}.")
        v = w
    return " ".join(eqs)


def option_check(options: list[str], gold_pos: int) -> str:
    """'(A) 35 vs 22 no. (B) 20 vs 22 no. (C) 22 vs 22 yes. (D) 48 vs 22 no.' -- each option set next
    to the computed value, in order. Tiny models compute chains well but map a value to its letter
    poorly (NOTES.md): comparing two numbers far apart needs a composed attention circuit that takes
    them long to form. Writing both numbers side by side makes every comparison local."""
    gold = options[gold_pos]
    return " ".join(f"({LETTERS[i]}) {o} vs {gold} {'yes' if i == gold_pos else 'no'}." for i, o in enumerate(options))


def generate(cfg: SyntheticConfig) -> list[MCRecord]:
    """`cfg.num_records` records with answers and rationales, deterministic in `cfg`."""
    if not 1 <= cfg.min_steps <= cfg.max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got {cfg.min_steps}..{cfg.max_steps}")
    unknown = [d for d in cfg.domains if d not in DOMAIN_OPS]
    if unknown or not cfg.domains:
        raise ValueError(f"unknown domains {unknown}; known: {', '.join(DOMAIN_OPS)}")
    if cfg.max_value < 20:
        raise ValueError(f"max_value must be >= 20, got {cfg.max_value}")
    rng = random.Random(f"ladalit-synthetic-{cfg.seed}")
    records, positions = [], []
    for i in range(cfg.num_records):
        if not positions:  # a fresh seeded order of the gold positions every block of four
            positions = rng.sample(range(NUM_OPTIONS), NUM_OPTIONS)
        gold_pos = positions.pop()
        domain = rng.choice(cfg.domains)
        n_steps = rng.randint(cfg.min_steps, cfg.max_steps)
        start, steps = _chain(rng, DOMAIN_OPS[domain], n_steps, cfg.max_value)
        gold = run_chain(start, steps)
        values = _distractors(rng, start, steps, gold, cfg.max_value)
        rng.shuffle(values)
        values.insert(gold_pos, gold)
        options = [str(v) for v in values]
        records.append(MCRecord(
            id=f"syn-{cfg.seed}-{i}",
            question=_question(rng, start, steps),
            options=tuple(options),
            answer=LETTERS[gold_pos],
            rationale=f"{rationale_of(start, steps)} {option_check(options, gold_pos)}",
            domain=domain,
        ))
    return records


def num_steps(rec: MCRecord) -> int:
    """The difficulty of a synthetic record: its number of operations (one sentence each, between the
    opening "X has N items." and the closing question); works on public records too."""
    return rec.question.count(".") - 1
