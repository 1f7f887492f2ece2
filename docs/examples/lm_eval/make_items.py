"""Writes ladalit_mc.jsonl: 40 of the project's own multiple-choice items (the demo world's generator, a seed
of their own), each with its direct-answer prompt, for the lm-evaluation-harness task ladalit_mc.yaml.

    python docs/examples/lm_eval/make_items.py      # from the repository root; tests/test_lm_eval.py checks the file
"""
import json
from pathlib import Path

from ladalit.core.prompts import direct_prompt
from ladalit.data.records import LETTERS
from ladalit.demo.synthetic import SyntheticConfig, generate

HERE = Path(__file__).resolve().parent


def items(n: int = 40, seed: int = 2026) -> list[dict]:
    records = generate(SyntheticConfig(num_records=n, seed=seed, min_steps=1, max_steps=2))[:n]
    return [{"id": r.id, "prompt": direct_prompt(r), "options": list(r.options), "answer": r.answer,
             "label": LETTERS.index(r.answer)} for r in records]


def text() -> str:
    return "".join(json.dumps(row) + "\n" for row in items())


if __name__ == "__main__":
    (HERE / "ladalit_mc.jsonl").write_text(text())
