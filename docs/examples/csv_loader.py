"""A new data set loader: multiple-choice questions in a CSV file with a header
`id,question,A,B,C,D,answer` (any number of option columns, named by their letters).

Register it in three places: its function in LOADERS (ladalit/data/loaders.py), its name in
CHOICES["data.name"] (ladalit/core/config.py), and its task family in DATA_FAMILY (ladalit/core/prompts.py:
which worked example the one-shot prompts show, "math" or "commonsense"):

    LOADERS["csv"] = load_csv             # ladalit/data/loaders.py
    "data.name": (..., "csv"),            # ladalit/core/config.py, CHOICES
    DATA_FAMILY["csv"] = "math"           # ladalit/core/prompts.py

then `python -m ladalit.run conf=smoke.yaml data.name=csv data.path=questions.csv` runs on the file.
"""
import csv

from ladalit.data.records import DataError, MCRecord


def load_csv(path, hub_id=None, split="train") -> list[MCRecord]:
    if path is None:
        raise DataError(hub_id or "csv", None, "data.path", "the csv loader reads a local file only")
    records = []
    with open(path, newline="") as f:
        rows = csv.DictReader(f)
        letters = [c for c in rows.fieldnames or [] if len(c) == 1 and c.isupper()]
        if len(letters) < 2:
            raise DataError(path, 1, "header", "needs at least two option columns A, B, ...")
        for line, row in enumerate(rows, start=2):
            options = tuple(row[c].strip() for c in letters)
            answer = (row.get("answer") or "").strip()
            if answer not in letters:
                raise DataError(path, line, "answer", f"{answer!r} is not one of {''.join(letters)}")
            if not row.get("question", "").strip() or not all(options):
                raise DataError(path, line, "question", "empty question or option")
            records.append(MCRecord(row.get("id") or f"csv-{line}", row["question"].strip(), options, answer,
                                    None, "csv"))
    return records
