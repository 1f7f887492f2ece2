"""Prompts and answer parsing (SPEC §7): one place for the text formats every model speaks.

A prompt ends with "Answer: Let's think step by step." and a response is
" {rationale} The answer is (X)." — the same format in pre-training (zoo),
generation, distillation and evaluation. The private-train SFT's targets carry no
rationale, so by default (`sft_prompt=direct`) they follow a direct-answer prompt that
ends with "Answer:" (`private_sft_pairs`).
"""
from __future__ import annotations

import re

from ladalit.data.records import LETTERS, MCRecord

INSTRUCTION = "Answer: Let's think step by step."
DIRECT_INSTRUCTION = "Answer:"


def format_question(rec: MCRecord) -> str:
    opts = " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(rec.options))
    return f"Question: {rec.question}\nOptions: {opts}\n"


def zero_shot_prompt(rec: MCRecord) -> str:
    return format_question(rec) + INSTRUCTION


def direct_prompt(rec: MCRecord) -> str:
    """The question and options asking for the answer without reasoning."""
    return format_question(rec) + DIRECT_INSTRUCTION


def private_sft_pairs(train: list[MCRecord], style: str = "direct") -> tuple[list[str], list[str]]:
    """(prompts, responses) of the private-train SFT (SPEC §3 ❶): the short answer statement of each record,
    after the direct-answer prompt (`style="direct"`) or after the step-by-step prompt (`"cot"`, which
    teaches a model to answer the step-by-step instruction without steps: measured in docs/method.md,
    sft_prompt)."""
    if style not in ("direct", "cot"):
        raise ValueError(f"sft_prompt must be direct or cot, got {style!r}")
    prompt = direct_prompt if style == "direct" else zero_shot_prompt
    return [prompt(x) for x in train], [format_response(None, x.answer) for x in train]


def answer_statement(letter: str) -> str:
    return f"The answer is ({letter})."


def format_response(rationale: str | None, letter: str) -> str:
    """The target text a model produces after the prompt."""
    body = f"{rationale.strip()} " if rationale and rationale.strip() else ""
    return f" {body}{answer_statement(letter)}"


# Worked chain-of-thought examples for the one-shot setting, by task family.
ONE_SHOT_EXAMPLES: dict[str, MCRecord] = {
    "math": MCRecord(
        id="one-shot-math",
        question="A shop sells pens at 3 dollars each. Ann buys 4 pens and pays with a 20 dollar bill. How much change does she get?",
        options=("5", "8", "12", "17"),
        answer="B",
        rationale="4 pens cost 4*3=12 dollars. The change is 20-12=8 dollars.",
    ),
    # the demo world's own format (ladalit.demo.synthetic, shared operations only), which its zoo is pre-trained on
    "synthetic": MCRecord(
        id="one-shot-synthetic",
        question="Tom has 6 apples. He gets 2 more. He multiplies them by 3. How many apples now?",
        options=("8", "24", "18", "26"),
        answer="B",
        rationale="6+2=8. 8*3=24. (A) 8 vs 24 no. (B) 24 vs 24 yes. (C) 18 vs 24 no. (D) 26 vs 24 no.",
    ),
    "commonsense": MCRecord(
        id="one-shot-commonsense",
        question="Where would you put a plate after washing it?",
        options=("oven", "cupboard", "garden", "car"),
        answer="B",
        rationale="Clean plates are stored until they are used again. Plates are stored in a cupboard.",
    ),
}
DATA_FAMILY = {"synthetic": "synthetic", "aqua": "math", "mathinstruct": "math",
               "commonsenseqa": "commonsense", "cot_collection": "commonsense"}


def one_shot_prompt(rec: MCRecord, example: MCRecord) -> str:
    demo = zero_shot_prompt(example) + format_response(example.rationale, example.answer)
    return f"{demo}\n\n{zero_shot_prompt(rec)}"


def make_prompt(rec: MCRecord, shots: int, example: MCRecord | None = None) -> str:
    if shots == 0:
        return zero_shot_prompt(rec)
    if shots == 1:
        assert example is not None, "one-shot prompts need a worked example"
        return one_shot_prompt(rec, example)
    raise ValueError(f"shots must be 0 or 1, got {shots}")


class CutAnswer(str):
    """A generated answer that reached its token budget before EOS: the loss appends no EOS to it
    (the model never ended it). It stays on the side that generated or received it; the channel
    carries the text and which answers were cut (`ladalit.core.responses.send_answers`)."""


_ANSWER_IS = re.compile(r"answer is\s*\(?([A-J])\)?")
_PAREN_LETTER = re.compile(r"\(([A-J])\)")
_BARE_LETTER = re.compile(r"(?<![A-Za-z])([A-J])(?![A-Za-z])")


def parse_answer(text: str, num_options: int = 4) -> str | None:
    """The answer letter of a generation (lenient accuracy): the *first* "answer is (X)", else the last
    standalone option letter, else None (invalid).

    The first statement, not the last: an answer ends at its statement ("... The answer is (X)." then EOS,
    the format every participant is taught), so text after it is a run-on (a model that failed to stop and
    began another question or example), not a revision. The fallback to a stray letter is what the strict
    accuracy (`stated_answer`) refuses: a rationale cut short often ends on an option it was only checking."""
    valid = LETTERS[:num_options]
    m = _ANSWER_IS.search(text)
    if m and m.group(1) in valid:
        return m.group(1)
    for pattern in (_PAREN_LETTER, _BARE_LETTER):
        found = [x for x in pattern.findall(text) if x in valid]
        if found:
            return found[-1]
    return None


def stated_answer(text: str, num_options: int = 4) -> str | None:
    """The letter of the first answer statement ("answer is (X)"), without `parse_answer`'s fallback to the
    last stray letter (strict accuracy): None counts as wrong, and towards the strict invalid rate."""
    m = _ANSWER_IS.search(text)
    return m.group(1) if m and m.group(1) in LETTERS[:num_options] else None
