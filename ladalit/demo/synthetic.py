"""Synthetic multi-step arithmetic word problems: the CPU proving ground's task (demo world v2).

Each record is a short story ("Tom has 6 apples. He gets 2 more. He doubles them. How many apples now?")
with four numeric options and a step-by-step rationale: the chain of operations, then every option
compared with the result, "6+2=8. 8*2=16. (A) 16 vs 16 yes. (B) 8 vs 16 no. (C) 18 vs 16 no. (D) 15 vs 16 no."
(no "The answer is" -- the response format adds that).

The world is built so that the paper's premises hold by construction:

- **Shared operations** (+, -, *, / with the operand written out: "He gets 2 more.") appear in every
  domain. Long chains of them (3-4 steps) are what the server's pre-training teaches and the clients'
  does not.
- **Domain knowledge**: each client domain (`market`, `kitchen`, `calendar`) has its own phrases, each
  an operation whose operand the text never states ("He buys a dozen more." is +12, "She triples
  them." is *3, "He uses a fortnight's worth." is -14): `FACTS`. A record of a client domain has at
  least one such step. The `shared` domain has none. Only a client's own pre-training teaches its
  domain's facts (with rationales); the server's corpus is `shared` only, so it never sees a fact.
- The number of steps is the difficulty knob (`min_steps`..`max_steps`). Every value stays in
  [0, max_value] and divisions are exact.
- Distractors are the values of plausible mistakes: one step skipped, one step done with the wrong
  operation, the result off by a small amount. The options are distinct, and the gold position is
  exactly balanced over A-D (each block of four consecutive draws uses every position once;
  the split balances the records it deals again, `normalise_options`).

`generate(cfg)` is deterministic in `cfg`; record ids are f"syn-{seed}-{i}", i the draw. No two records have
the same question: a draw whose question repeats an earlier one is left out, so a few ids are missing and
there can be a few fewer records than `num_records` (5945 of 6000 at seed 0). Those are exactly the records
that the split's duplicate check kept before the generator did this (`unique=False` keeps the repeats: what
the zoo was pre-trained and measured on). What a record's text does
not say -- its domain, its number of steps, which steps are facts -- is the oracle's
(`ladalit.demo.oracle`), for analysis only: the split hands methods records without their domain.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ladalit.data.records import LETTERS, MCRecord
from ladalit.data.split import SHARED_DOMAIN, question_key

SHARED = SHARED_DOMAIN  # the domain without facts
OPS = "+-*/"
NUM_OPTIONS = 4

NAMES = [("Tom", "He"), ("Ann", "She"), ("Sam", "He"), ("Mia", "She"), ("Leo", "He"), ("Eva", "She"),
         ("Max", "He"), ("Zoe", "She"), ("Ben", "He"), ("Amy", "She")]
ITEMS = ["apples", "coins", "books", "marbles", "cards", "stamps", "shells", "pens", "eggs", "toys"]
# one sentence per shared operation; {p} is the pronoun, {b} the operand
TEMPLATES = {
    "+": ["{p} gets {b} more.", "{p} buys {b} more.", "{p} finds {b} more."],
    "-": ["{p} loses {b}.", "{p} gives away {b}.", "{p} sells {b}."],
    "*": ["{p} gets {b} times as many.", "{p} multiplies them by {b}."],
    "/": ["{p} keeps 1/{b} of them.", "{p} divides them by {b}."],
}
# each client domain's knowledge: (sentence, operation, operand), the operand never written in the text
FACTS: dict[str, list[tuple[str, str, int]]] = {
    "market": [("{p} buys a dozen more.", "+", 12), ("{p} sells a dozen.", "-", 12),
               ("{p} buys half a dozen more.", "+", 6), ("{p} sells half a dozen.", "-", 6)],
    "kitchen": [("{p} doubles them.", "*", 2), ("{p} triples them.", "*", 3),
                ("{p} halves them.", "/", 2), ("{p} cuts them to a third.", "/", 3)],
    "calendar": [("{p} gets a week's worth more.", "+", 7), ("{p} uses a week's worth.", "-", 7),
                 ("{p} gets a fortnight's worth more.", "+", 14), ("{p} uses a fortnight's worth.", "-", 14)],
}
# the words that carry each domain's knowledge: no other domain's text contains them
FACT_WORDS = {"market": ("dozen",), "kitchen": ("doubles", "triples", "halves", "third"),
              "calendar": ("week", "fortnight")}
CLIENT_DOMAINS = tuple(FACTS)
DOMAINS = (SHARED, *CLIENT_DOMAINS)


# bump when a change here changes the records the zoo generates (`unique=False`; the zoo's cache keys include it)
VERSION = "synthetic-5"


@dataclass
class SyntheticConfig:
    num_records: int = 6000
    min_steps: int = 1
    max_steps: int = 4
    domains: tuple[str, ...] = DOMAINS
    # every start, operand and intermediate value lies in [0, max_value]: small numbers, so that the zoo's
    # tiny models can learn the arithmetic in minutes (+ and - by 1..5, * and / by 2 or 3)
    max_value: int = 20
    # in a client domain's record, each step is one of the domain's facts with this probability (at least one is)
    fact_rate: float = 0.5
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
        hi = min(5, max_value - a)
        return rng.randint(1, hi) if hi >= 1 else None
    if op == "-":
        hi = min(5, a)
        return rng.randint(1, hi) if hi >= 1 else None
    if op == "*":
        cands = [b for b in range(2, 4) if a * b <= max_value]
    else:
        cands = [b for b in range(2, 4) if a % b == 0 and a > 0]
    return rng.choice(cands) if cands else None


Step = tuple[str, int, str]  # (operation, operand, sentence template)


def _step_choices(rng: random.Random, v: int, facts: list[tuple[str, str, int]], fact: bool, last: Step | None,
                  max_value: int) -> list[Step]:
    """The steps possible from value v: the domain's facts (fact=True) or the shared operations."""
    if fact:
        cands = [(op, b, sentence) for sentence, op, b in facts]
    else:
        cands = [(op, b, rng.choice(TEMPLATES[op])) for op in OPS if (b := _operand(rng, op, v, max_value)) is not None]
    return [(op, b, t) for op, b, t in cands if (w := apply_op(v, op, b)) is not None and w <= max_value
            and not (last and (last[0], last[1]) == (INVERSE[op], b))]  # no step that undoes the last one


def _chain(rng: random.Random, domain: str, n_steps: int, max_value: int, fact_rate: float) -> tuple[int, list[Step]]:
    """A start value and n_steps steps; in a client domain at least one step is one of its facts."""
    facts = FACTS.get(domain, [])
    while True:  # rejection: restart when the chain gets stuck (e.g. a prime above max_value/2)
        is_fact = [bool(facts) and rng.random() < fact_rate for _ in range(n_steps)]
        if facts and not any(is_fact):
            is_fact[rng.randrange(n_steps)] = True
        start = rng.randint(2, max_value)
        v, steps = start, []
        for fact in is_fact:
            choices = _step_choices(rng, v, facts, fact, steps[-1] if steps else None, max_value)
            if not choices:
                break
            step = rng.choice(choices)
            v = apply_op(v, step[0], step[1])
            steps.append(step)
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


def _question(rng: random.Random, start: int, steps: list[Step]) -> str:
    name, pron = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    parts = [f"{name} has {start} {item}."]
    parts += [template.format(p=pron, b=b) for _, b, template in steps]
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


def _record(rng: random.Random, cfg: SyntheticConfig, i: int, gold_pos: int, domain: str, n_steps: int) -> MCRecord:
    start, steps = _chain(rng, domain, n_steps, cfg.max_value, cfg.fact_rate)
    ops = [(op, b) for op, b, _ in steps]
    gold = run_chain(start, ops)
    values = _distractors(rng, start, ops, gold, cfg.max_value)
    rng.shuffle(values)
    values.insert(gold_pos, gold)
    options = [str(v) for v in values]
    return MCRecord(
        id=f"syn-{cfg.seed}-{i}",
        question=_question(rng, start, steps),
        options=tuple(options),
        answer=LETTERS[gold_pos],
        rationale=f"{rationale_of(start, ops)} {option_check(options, gold_pos)}",
        domain=domain,
    )


def generate(cfg: SyntheticConfig, unique: bool = True) -> list[MCRecord]:
    """The records of `cfg.num_records` draws, with answers and rationales, deterministic in `cfg`; the domain
    of each is drawn uniformly from `cfg.domains`. `unique`: a draw whose question repeats an earlier one
    (case and spacing ignored) is left out; False keeps it (what the zoo was pre-trained and measured on)."""
    if not 1 <= cfg.min_steps <= cfg.max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got {cfg.min_steps}..{cfg.max_steps}")
    unknown = [d for d in cfg.domains if d not in DOMAINS]
    if unknown or not cfg.domains:
        raise ValueError(f"unknown domains {unknown}; known: {', '.join(DOMAINS)}")
    if cfg.max_value < 15:
        raise ValueError(f"max_value must be >= 15, got {cfg.max_value}")
    if not 0.0 <= cfg.fact_rate <= 1.0:
        raise ValueError(f"fact_rate must be in [0, 1], got {cfg.fact_rate}")
    rng = random.Random(f"ladalit-synthetic-{cfg.seed}")
    records, positions, seen = [], [], set()
    for i in range(cfg.num_records):
        if not positions:  # a fresh seeded order of the gold positions every block of four
            positions = rng.sample(range(NUM_OPTIONS), NUM_OPTIONS)
        gold_pos = positions.pop()
        domain = rng.choice(cfg.domains)
        n_steps = rng.randint(cfg.min_steps, cfg.max_steps)
        rec = _record(rng, cfg, i, gold_pos, domain, n_steps)
        key = question_key(rec.question)
        if unique and key in seen:
            continue
        seen.add(key)
        records.append(rec)
    return records


def fact_steps(rec: MCRecord, domain: str) -> int:
    """How many of `domain`'s fact sentences the record's question holds (the text alone decides)."""
    words = FACT_WORDS.get(domain, ())
    return sum(any(w in sentence for w in words) for sentence in rec.question.split(". "))


def num_steps(rec: MCRecord) -> int:
    """The difficulty of a synthetic record: its number of operations (one sentence each, between the
    opening "X has N items." and the closing question); works on public records too."""
    return rec.question.count(".") - 1
