"""The multiple-choice record every loader produces, and its validation."""
from __future__ import annotations

from dataclasses import dataclass, replace

LETTERS = "ABCDEFGHIJ"


class DataError(ValueError):
    """A malformed input record. The message names the file, the line and the field."""

    def __init__(self, source: str, line: int | None, field: str, problem: str):
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: field '{field}': {problem}")
        self.source, self.line, self.field, self.problem = source, line, field, problem


@dataclass(frozen=True)
class MCRecord:
    """One multiple-choice question.

    `options` hold the option texts without their letters; `answer` is the gold
    letter ("A".."J") or None (public set); `rationale` is a step-by-step
    solution or None; `domain` groups records for per-client skew. The split hands
    methods the `public()` and `private()` views, which drop the domain: it is a label
    of the data source (and of the demo world's oracle), never an input of a method.
    """

    id: str
    question: str
    options: tuple[str, ...]
    answer: str | None = None
    rationale: str | None = None
    domain: str = "default"

    @property
    def gold_index(self) -> int:
        assert self.answer is not None, f"record {self.id} has no answer"
        return LETTERS.index(self.answer)

    @property
    def gold_text(self) -> str:
        return self.options[self.gold_index]

    def public(self) -> "MCRecord":
        """The record as the public set holds it: no answer, no rationale, no domain."""
        return replace(self, answer=None, rationale=None, domain="default")

    def private(self) -> "MCRecord":
        """The record as a client's private data holds it: answer, no rationale, no domain."""
        return replace(self, rationale=None, domain="default")


def validate_record(rec: MCRecord, source: str, line: int | None, require_answer: bool = True) -> MCRecord:
    """Check one record; raise DataError naming source, line and field."""
    if not isinstance(rec.id, str) or not rec.id:
        raise DataError(source, line, "id", "missing or empty")
    if not isinstance(rec.question, str) or not rec.question.strip():
        raise DataError(source, line, "question", "missing or empty")
    if len(rec.options) < 2 or len(rec.options) > len(LETTERS):
        raise DataError(source, line, "options", f"expected 2..{len(LETTERS)} options, got {len(rec.options)}")
    for i, opt in enumerate(rec.options):
        if not isinstance(opt, str) or not opt.strip():
            raise DataError(source, line, "options", f"option {LETTERS[i]} is empty")
    if rec.answer is None:
        if require_answer:
            raise DataError(source, line, "answer", "missing gold letter")
    elif rec.answer not in LETTERS[: len(rec.options)]:
        raise DataError(
            source, line, "answer",
            f"gold letter {rec.answer!r} not among options {LETTERS[: len(rec.options)]}",
        )
    return rec
