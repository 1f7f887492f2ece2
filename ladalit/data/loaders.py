"""Loaders: each turns one data set into a list of MCRecord.

Every loader is `(path, hub_id, split) -> list[MCRecord]`: a local file when
`path` is given, else the hub data set `hub_id` (or the loader's default id).
Malformed multiple-choice input raises DataError naming the file (or hub id),
the 1-based row and the input field; so do a missing path, a directory, an empty file,
a line that is not UTF-8 (a BOM is accepted), a duplicate id and a hub that cannot be reached.
Repeated questions are not an error here: `ladalit.core.experiment.load_data` keeps the first
and warns with the count. `datasets` is imported only when needed.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ladalit.data.records import LETTERS, DataError, MCRecord, validate_record

log = logging.getLogger(__name__)

Row = dict[str, Any]


# --------------------------------------------------------------------------- rows

def _check_file(path: str) -> None:
    p = Path(path)
    if not p.exists():
        raise DataError(path, None, "data.path", "no such file")
    if p.is_dir():
        raise DataError(path, None, "data.path", "is a directory, expected a JSONL or JSON file")


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of a UTF-8 file (a BOM is accepted)."""
    _check_file(path)
    try:
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f, 1):
                try:
                    yield line_no, raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(path, line_no, "(file)", f"not UTF-8 text (byte {err.start + 1} of the line)") from None
    except OSError as err:
        raise DataError(path, None, "data.path", f"cannot be read ({err.strerror})") from None


def _jsonl_rows(path: str) -> Iterator[tuple[int, Row]]:
    """(1-based line number, object) for each non-blank line of a JSONL file."""
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, line_no, "(json)", f"invalid JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(row, dict):
            raise DataError(path, line_no, "(json)", f"expected a JSON object, got {type(row).__name__}")
        yield line_no, row


def _hub_rows(hub_id: str, split: str, config: str | None = None) -> Iterator[tuple[int, Row]]:
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, config, split=split) if config else datasets.load_dataset(hub_id, split=split)
    except (OSError, ValueError) as err:  # unreachable hub (ConnectionError), unknown id or split
        text = str(err).strip()
        why = text.splitlines()[0][:200] if text else type(err).__name__
        raise DataError(hub_id, None, "data.hub_id", f"cannot load split {split!r} from the hub ({why}); check the "
                        "network and the id, or download it and set HF_DATASETS_OFFLINE=1, or point data.path "
                        "at a local file") from None
    return enumerate(ds, 1)


def _json_rows(path: str) -> Iterator[tuple[int, Row]]:
    """A local JSONL file, or a JSON file holding one list of objects (rows numbered from 1)."""
    lines = list(_lines(path))
    text = "".join(line for _, line in lines)
    if not text.lstrip().startswith("["):
        return _jsonl_rows(path)
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, "(json)", f"invalid JSON: {e.msg} at column {e.colno}") from None
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataError(path, i, "(json)", f"row {i}: expected a JSON object, got {type(row).__name__}")
    return enumerate(rows, 1)


# ------------------------------------------------------------------------ checks

_TYPE_NAMES = {str: "a string", list: "a list", dict: "an object"}


def _get(row: Row, key: str, kind: type, source: str, line: int, field: str | None = None, empty_ok: bool = False):
    """row[key], checked to be present, of type `kind` and (for strings) not empty."""
    field = field or key
    value = row.get(key) if isinstance(row, dict) else None
    if value is None:
        raise DataError(source, line, field, "missing")
    if not isinstance(value, kind):
        raise DataError(source, line, field, f"expected {_TYPE_NAMES[kind]}, got {type(value).__name__}")
    if kind is str and not empty_ok and not value.strip():
        raise DataError(source, line, field, "empty")
    return value


def _check_options(options: list[str], field: str, source: str, line: int) -> None:
    if len(options) < 2 or len(options) > len(LETTERS):
        raise DataError(source, line, field, f"expected 2..{len(LETTERS)} options, got {len(options)}")
    for i, opt in enumerate(options):
        if not opt.strip():
            raise DataError(source, line, field, f"option {LETTERS[i]} is empty")


def _check_gold(letter: str, num_options: int, field: str, source: str, line: int) -> str:
    if letter not in LETTERS[:num_options]:
        raise DataError(source, line, field, f"gold letter {letter!r} not among options {LETTERS[:num_options]}")
    return letter


def _optional_text(row: Row, key: str, source: str, line: int) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataError(source, line, key, f"expected a string, got {type(value).__name__}")
    return value.strip() or None


def _collect(source: str, rows: Iterable[tuple[int, Row]], parse: Callable[[Row, str, int], MCRecord | str]) -> list[MCRecord]:
    """Parse every row; rows that are not multiple-choice come back as a reason, counted and logged."""
    records, skipped, seen = [], Counter(), {}
    for line, row in rows:
        rec = parse(row, source, line)
        if isinstance(rec, str):
            skipped[rec] += 1
            continue
        if rec.id in seen:
            raise DataError(source, line, "id", f"duplicate id {rec.id!r} (first at line {seen[rec.id]})")
        seen[rec.id] = line
        records.append(validate_record(rec, source, line))
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())) or "none"
    if not records:
        raise DataError(source, None, "(records)", f"no multiple-choice records (skipped: {reasons})")
    log.info("%s: kept %d multiple-choice items, skipped %d (%s)", source, len(records), sum(skipped.values()), reasons)
    return records


# ---------------------------------------------------------------- option parsing

_PAREN = re.compile(r"\(([A-J])\)")  # (A) text (B) text
_BRACKET = re.compile(r"(?:(?<=\s)|^)([A-J])\)", re.M)  # A) text B) text
_DOTTED = re.compile(r"^[ \t]*([A-J])[.:][ \t]", re.M)  # A. text  (one per line)
_BULLET = re.compile(r"[ \t]*[-+*•][ \t]+(.*)")  # - text  (one per line, after a header)
_HEADER_WORDS = ("option", "choice", "answer", "choose", "pick", "select")
_TRAILING_HEADER = re.compile(
    r"(?:answer choices|answer options|possible answers|available options|options|choices|"
    r"choose from|pick from|select from)\s*:?\s*$", re.I)


def _letter_run(text: str, marker: re.Pattern) -> tuple[int, int, list[str]] | None:
    """The last run of markers A, B, C, ... in `text`: (start, end, option texts), or None.

    An option runs to the next marker; the last one to the end of its line.
    """
    found = list(marker.finditer(text))
    run = None
    for i, m in enumerate(found):
        if m.group(1) != "A":
            continue
        cand = [m]
        for nxt in found[i + 1:]:
            if nxt.group(1) == LETTERS[len(cand)]:
                cand.append(nxt)
        if len(cand) >= 2:
            run = cand
    if run is None:
        return None
    options, end = [], len(text)
    for j, m in enumerate(run):
        stop = run[j + 1].start() if j + 1 < len(run) else len(text)
        chunk = text[m.end():stop]
        if j + 1 == len(run):
            newline = chunk.find("\n")
            if newline >= 0:
                chunk, end = chunk[:newline], m.end() + newline
        options.append(chunk.strip().lstrip(".:").strip())
    return run[0].start(), end, options


def _bullet_block(text: str) -> tuple[str, list[str]] | None:
    """The last "Options:\\n- a\\n- b" block: (text without the block, options), or None."""
    lines = text.split("\n")
    block = None
    for i, line in enumerate(lines):
        head = line.strip().lower()
        if not (head.endswith(":") and any(w in head for w in _HEADER_WORDS)):
            continue
        j, opts = i + 1, []
        while j < len(lines) and (m := _BULLET.fullmatch(lines[j])):
            opts.append(m.group(1).strip())
            j += 1
        if len(opts) >= 2:
            block = i, j, opts
    if block is None:
        return None
    i, j, opts = block
    rest = "\n".join(p for p in ("\n".join(lines[:i]).strip(), "\n".join(lines[j:]).strip()) if p)
    return rest, opts


def parse_options(text: str) -> tuple[str, list[str], bool] | None:
    """Find the option list in a prompt: (question, options, lettered) or None if there is none.

    Formats, tried in order: a header line ("Options:", "Answer Choices:", ...)
    followed by "- a" bullet lines; "(A) … (B) …"; "A) … B) …"; "A. …" lines.
    """
    bullets = _bullet_block(text)
    if bullets is not None:
        return bullets[0], bullets[1], False
    for marker in (_PAREN, _BRACKET, _DOTTED):
        run = _letter_run(text, marker)
        if run is not None:
            start, end, options = run
            before = _TRAILING_HEADER.sub("", text[:start].rstrip()).strip()
            question = "\n".join(p for p in (before, text[end:].strip()) if p)
            return question, options, True
    return None


def _norm(s: str) -> str:
    return " ".join(s.casefold().split()).rstrip(".")


def _gold_from_text(answer: str, options: list[str]) -> str | None:
    want = _norm(answer)
    for i, opt in enumerate(options):
        if _norm(opt) == want:
            return LETTERS[i]
    return None


_SINGLE_LETTER = re.compile(r"\(?([A-J])\)?[.:]?")  # C  (C)  C.
_LETTER_AND_TEXT = re.compile(r"\(([A-J])\)[.:]?\s*\S.*|([A-J])[).:]\s*\S.*", re.S)  # (C) text  C) text  C: text
_LOWER_LETTER = re.compile(r"\(?([a-j])\)?\.?")  # c  (c)


def _gold_letter(answer: str, options: list[str], lettered: bool, field: str, source: str, line: int) -> str:
    """The gold letter for an answer given as a letter ("C", "(C)", "C) text") or as an option's text."""
    answer = answer.strip()
    single = _SINGLE_LETTER.fullmatch(answer)
    if single and lettered:
        return _check_gold(single.group(1), len(options), field, source, line)
    by_text = _gold_from_text(answer, options)
    if by_text is not None:
        return by_text
    m = single or (lettered and (_LETTER_AND_TEXT.fullmatch(answer) or _LOWER_LETTER.fullmatch(answer)))
    if not m:
        raise DataError(source, line, field, f"answer {answer!r} is neither an option letter nor an option text")
    letter = next(g for g in m.groups() if g).upper()
    return _check_gold(letter, len(options), field, source, line)


# ----------------------------------------------------------------------- loaders

def _aqua_row(row: Row, source: str, line: int, prefix: str) -> MCRecord:
    question = _get(row, "question", str, source, line)
    raw = _get(row, "options", list, source, line)
    if len(raw) > len(LETTERS):
        raise DataError(source, line, "options", f"expected 2..{len(LETTERS)} options, got {len(raw)}")
    options = []
    for i, opt in enumerate(raw):
        m = re.fullmatch(r"\s*([A-J])\s*\)(.*)", opt, re.S) if isinstance(opt, str) else None
        if m is None or m.group(1) != LETTERS[i]:
            raise DataError(source, line, "options", f"option {i + 1} {opt!r} is not '{LETTERS[i]})<text>'")
        options.append(m.group(2).strip())
    _check_options(options, "options", source, line)
    answer = _check_gold(_get(row, "correct", str, source, line).strip(), len(options), "correct", source, line)
    rationale = _optional_text(row, "rationale", source, line)
    return MCRecord(f"{prefix}-{line}", question.strip(), tuple(options), answer, rationale, "aqua")


def load_aqua(path: str | None = None, hub_id: str | None = None, split: str = "train") -> list[MCRecord]:
    """AQuA-RAT: `question`, `options` ("A)32400", ...), `rationale`, `correct`. Keeps the rationale."""
    if path is not None:
        source, rows, prefix = path, _jsonl_rows(path), f"aqua-{Path(path).stem}"
    else:
        source = hub_id or "deepmind/aqua_rat"
        rows, prefix = _hub_rows(source, split, "raw" if hub_id is None else None), f"aqua-{split}"
    return _collect(source, rows, lambda row, src, line: _aqua_row(row, src, line, prefix))


def _commonsenseqa_row(row: Row, source: str, line: int) -> MCRecord:
    rid = _get(row, "id", str, source, line)
    q = row.get("question")
    if isinstance(q, dict):  # the original JSONL: question.{stem, choices, question_concept}
        stem = _get(q, "stem", str, source, line, "question.stem")
        field = "question.choices"
        choices = _get(q, "choices", list, source, line, field)
        labels, texts = [], []
        for i, ch in enumerate(choices):
            if not (isinstance(ch, dict) and isinstance(ch.get("label"), str) and isinstance(ch.get("text"), str)):
                raise DataError(source, line, field, f"choice {i + 1} is not an object with string 'label' and 'text'")
            labels.append(ch["label"].strip())
            texts.append(ch["text"].strip())
        concept = q.get("question_concept")
    else:  # the hub layout (tau/commonsense_qa): question str, choices {label: [...], text: [...]}
        stem = _get(row, "question", str, source, line)
        field = "choices"
        choices = _get(row, "choices", dict, source, line)
        labels, texts = choices.get("label"), choices.get("text")
        if not (isinstance(labels, list) and isinstance(texts, list) and len(labels) == len(texts)
                and all(isinstance(x, str) for x in labels + texts)):
            raise DataError(source, line, field, "expected equal-length string lists 'label' and 'text'")
        concept = row.get("question_concept")
    if labels != list(LETTERS[: len(labels)]):
        raise DataError(source, line, field, f"labels {''.join(labels)!r} are not {LETTERS[: len(labels)]!r}")
    _check_options(texts, field, source, line)
    answer = _check_gold(_get(row, "answerKey", str, source, line).strip(), len(texts), "answerKey", source, line)
    domain = concept.strip() if isinstance(concept, str) and concept.strip() else "commonsenseqa"
    return MCRecord(rid, stem.strip(), tuple(texts), answer, None, domain)


def load_commonsenseqa(path: str | None = None, hub_id: str | None = None, split: str = "train") -> list[MCRecord]:
    """CommonsenseQA: `id`, `question.stem`, `question.choices[{label,text}]`, `answerKey`.

    domain = the question concept. No rationale.
    """
    if path is not None:
        return _collect(path, _jsonl_rows(path), _commonsenseqa_row)
    source = hub_id or "tau/commonsense_qa"
    return _collect(source, _hub_rows(source, split), _commonsenseqa_row)


_ANSWER_CHOICES = re.compile(r"Answer Choices\s*:?", re.I)
_THE_ANSWER_IS = "the answer is"


def _mathinstruct_row(row: Row, source: str, line: int) -> MCRecord | str:
    instruction = _get(row, "instruction", str, source, line)
    output = _get(row, "output", str, source, line, empty_ok=True)
    m = _ANSWER_CHOICES.search(instruction)
    if m is None:
        return "without answer choices"
    run = _letter_run(instruction[m.end():], _PAREN)
    if run is None:
        raise DataError(source, line, "instruction", "'Answer Choices' not followed by options '(A) … (B) …'")
    options = run[2]
    _check_options(options, "instruction", source, line)
    question = instruction[: m.start()].strip()
    if not question:
        raise DataError(source, line, "instruction", "no question before 'Answer Choices'")
    at = output.lower().rfind(_THE_ANSWER_IS)
    tail = output[at + len(_THE_ANSWER_IS):].strip() if at >= 0 else ""
    if at < 0 or "\n" in tail:  # no final "The answer is X" (e.g. program-of-thought code)
        return "with choices but no final 'The answer is X'"
    tail = tail.lstrip(":").strip()
    if not tail:
        raise DataError(source, line, "output", "empty answer after 'The answer is'")
    answer = _gold_letter(tail, options, True, "output", source, line)
    domain = row.get("source")
    domain = Path(domain).stem if isinstance(domain, str) and domain.strip() else "mathinstruct"
    return MCRecord(f"mathinstruct-{line}", question, tuple(options), answer, output[:at].strip() or None, domain)


def load_mathinstruct(path: str | None = None, hub_id: str | None = None, split: str = "train") -> list[MCRecord]:
    """TIGER-Lab/MathInstruct, multiple-choice items only.

    `instruction` holds "Answer Choices: (A) … (E) …", `output` ends with
    "The answer is X": question = instruction before "Answer Choices",
    rationale = output before "The answer is", gold = X. domain = the `source` file's stem.
    """
    source = path or hub_id or "TIGER-Lab/MathInstruct"
    rows = _json_rows(path) if path is not None else _hub_rows(source, split)
    return _collect(source, rows, _mathinstruct_row)


def _cot_row(row: Row, source: str, line: int) -> MCRecord | str:
    text = _get(row, "source", str, source, line)
    parsed = parse_options(text)
    if parsed is None:
        return "without an option list"
    question, options, lettered = parsed
    _check_options(options, "source", source, line)
    if not question:
        raise DataError(source, line, "source", "no question text besides the options")
    target = _get(row, "target", str, source, line)
    answer = _gold_letter(target, options, lettered, "target", source, line)
    task = _get(row, "task", str, source, line).strip()
    rationale = _optional_text(row, "rationale", source, line)
    return MCRecord(f"cot-{line}", question, tuple(options), answer, rationale, task)


def load_cot_collection(path: str | None = None, hub_id: str | None = None, split: str = "train") -> list[MCRecord]:
    """kaist-ai/CoT-Collection, multiple-choice items only.

    Fields `source`, `target`, `rationale`, `task`, `type`; the options are listed
    in `source` (see `parse_options`); `target` is the gold letter or the gold
    option's text. domain = `task`.
    """
    source = path or hub_id or "kaist-ai/CoT-Collection"
    rows = _json_rows(path) if path is not None else _hub_rows(source, split)
    return _collect(source, rows, _cot_row)


LOADERS: dict[str, Callable[..., list[MCRecord]]] = {
    "aqua": load_aqua,
    "commonsenseqa": load_commonsenseqa,
    "mathinstruct": load_mathinstruct,
    "cot_collection": load_cot_collection,
}


def load_records(name: str, path: str | None = None, hub_id: str | None = None, split: str = "train") -> list[MCRecord]:
    """Load data set `name` (a key of LOADERS) from a local `path` or the hub."""
    if name not in LOADERS:
        raise ValueError(f"unknown data set {name!r}; choose one of: {', '.join(sorted(LOADERS))}")
    return LOADERS[name](path, hub_id, split)
