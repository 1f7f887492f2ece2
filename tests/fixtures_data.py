"""Small files in the AQuA-RAT and CommonsenseQA JSONL layouts, with content of the project's own,
written into a test's tmp dir, so that the loader tests run in a fresh clone (no ../shared/data).

The layouts are those of the shipped files (../shared/data/README.md): AQuA `question`, `options`
("A)…" to "E)…"), `rationale`, `correct`; CommonsenseQA `id`, `question.{stem, question_concept,
choices[{label, text}]}`, `answerKey`. The rows are generated from templates by a fixed seed: every
question is distinct, every row has five distinct options, and the CommonsenseQA rows carry
`CSQA_CONCEPTS` concepts (the domains of the domain-skew split), `CSQA_ROWS // len(CSQA_CONCEPTS)` each.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

AQUA_ROWS = 260
CSQA_ROWS = 1800
LETTERS5 = "ABCDE"

CSQA_CONCEPTS = ("kettle", "ladder", "lantern", "anchor", "violin", "compass",
                 "umbrella", "pebble", "blanket", "whistle", "mirror", "saddle")
_PLACES = ("attic", "harbour", "workshop", "garden shed", "museum", "kitchen", "stable", "library",
           "lighthouse", "bakery", "greenhouse", "cellar", "campsite", "train station", "market stall")
_NAMES = ("Ama", "Bruno", "Chen", "Dalia", "Emeka", "Freya", "Goran", "Hana", "Ilse", "Jonas",
          "Kiri", "Lucas", "Mei", "Nadia", "Oskar")
_STEMS = ("{name} left the {concept} somewhere near the {place}. Where should {name} look first?",
          "Which place is most likely to hold an old {concept} that {name} forgot about after visiting the {place}?",
          "After a long day at the {place}, where would {name} most likely put the {concept}?",
          "{name} wants to borrow a {concept} and was told to try the {place}. Where else could one be found?")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def aqua_rows(n: int = AQUA_ROWS, seed: int = 0) -> list[dict]:
    """Rate, total and difference problems, each with a worked rationale and five numeric options."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        kind = len(rows) % 3
        a, b = rng.randint(2, 40), rng.randint(2, 12)
        if kind == 0:
            q = f"A cart moves {a * b} metres in {b} minutes at a steady pace. How many metres does it move per minute?"
            value, why = a, f"Distance per minute = {a * b} / {b} = {a} metres."
        elif kind == 1:
            q = f"A crate holds {b} rows of {a} jars each. How many jars are in {b} such rows?"
            value, why = a * b, f"Jars = {b} rows x {a} jars = {a * b} jars."
        else:
            c = rng.randint(1, a)
            q = f"A shelf had {a + c} plates and {c} of them were sold before noon. How many plates are left on the shelf?"
            value, why = a, f"Plates left = {a + c} - {c} = {a}."
        if q in seen:
            continue
        seen.add(q)
        distractors = rng.sample([v for v in range(max(1, value - 9), value + 10) if v != value], 4)
        gold = rng.randrange(5)
        opts = distractors[:gold] + [value] + distractors[gold:]
        rows.append({"question": q, "options": [f"{L}){o}" for L, o in zip(LETTERS5, opts)],
                     "rationale": f"{why}\nAnswer {LETTERS5[gold]}", "correct": LETTERS5[gold]})
    return rows


def csqa_rows(n: int = CSQA_ROWS, seed: int = 0) -> list[dict]:
    """Where-would-you-find questions about `CSQA_CONCEPTS`, five place names as options."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        concept = CSQA_CONCEPTS[len(rows) % len(CSQA_CONCEPTS)]
        stem = rng.choice(_STEMS).format(name=rng.choice(_NAMES), concept=concept, place=rng.choice(_PLACES))
        if stem in seen:
            continue
        seen.add(stem)
        texts = rng.sample(_PLACES, 5)
        key = LETTERS5[rng.randrange(5)]
        rid = hashlib.sha1(f"ladalit-csqa-{len(rows)}".encode()).hexdigest()[:32]
        rows.append({"answerKey": key, "id": rid, "question": {
            "question_concept": concept,
            "choices": [{"label": L, "text": t} for L, t in zip(LETTERS5, texts)], "stem": stem}})
    return rows


def write_aqua(path: Path, n: int = AQUA_ROWS) -> Path:
    return write_jsonl(path, aqua_rows(n))


def write_commonsenseqa(path: Path, n: int = CSQA_ROWS) -> Path:
    return write_jsonl(path, csqa_rows(n))
