"""Evaluation (SPEC §7): greedy generation, answer parsing, accuracy via torchmetrics."""
from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassAccuracy

from ladalit.data.records import LETTERS, MCRecord
from ladalit.prompts import make_prompt, parse_answer


def score_answers(generations: list[str], records: list[MCRecord], num_options: int) -> dict:
    """Accuracy (an unparseable answer counts as wrong) and the invalid-answer rate."""
    invalid = num_options  # an extra class that is never the gold one
    preds = []
    for g in generations:
        letter = parse_answer(g, num_options)
        preds.append(invalid if letter is None else LETTERS.index(letter))
    gold = torch.tensor([r.gold_index for r in records])
    pred = torch.tensor(preds)
    acc = MulticlassAccuracy(num_classes=num_options + 1, average="micro")(pred, gold).item()
    return {"accuracy": acc, "invalid_rate": (pred == invalid).float().mean().item(), "n": len(records)}


def evaluate(participant, records: list[MCRecord], shots: int, example: MCRecord | None,
             max_new_tokens: int, batch_size: int, predictions: list | None = None) -> dict:
    """Accuracy and invalid rate of greedy generations; `predictions`, when given, receives one
    {"id", "gold", "parsed", "text"} per record."""
    prompts = [make_prompt(r, shots, example) for r in records]
    gens = participant.generate_text(prompts, max_new_tokens, batch_size)
    num_options = len(records[0].options)
    if predictions is not None:
        predictions += [{"id": r.id, "gold": r.answer, "parsed": parse_answer(g, num_options), "text": g}
                        for r, g in zip(records, gens)]
    return score_answers(gens, records, num_options)
