"""Evaluation (SPEC §7): greedy generation, answer parsing, accuracy via torchmetrics."""
from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassAccuracy

from ladalit.data.records import LETTERS, MCRecord
from ladalit.core.progress import Progress
from ladalit.core.prompts import make_prompt, parse_answer, stated_answer


def score_answers(generations: list[str], records: list[MCRecord], num_options: int) -> dict:
    """Accuracy, lenient and strict (SPEC §7), and their invalid rates. Lenient (`accuracy`, `invalid_rate`):
    the parser's letter, with its fallback to the last option letter (`prompts.parse_answer`); strict
    (`accuracy_strict`, `invalid_strict`): only an answer statement "answer is (X)" counts
    (`prompts.stated_answer`). An answer without a letter counts as wrong in both."""
    invalid = num_options  # an extra class that is never the gold one
    preds = []
    for g in generations:
        letter = parse_answer(g, num_options)
        preds.append(invalid if letter is None else LETTERS.index(letter))
    gold = torch.tensor([r.gold_index for r in records])
    pred = torch.tensor(preds)
    acc = MulticlassAccuracy(num_classes=num_options + 1, average="micro")(pred, gold).item()
    stated = [stated_answer(g, num_options) for g in generations]
    strict_pred = torch.tensor([invalid if x is None else LETTERS.index(x) for x in stated])
    acc_strict = MulticlassAccuracy(num_classes=num_options + 1, average="micro")(strict_pred, gold).item()
    return {"accuracy": acc, "accuracy_strict": acc_strict, "invalid_rate": (pred == invalid).float().mean().item(),
            "invalid_strict": (strict_pred == invalid).float().mean().item(), "n": len(records)}


def evaluate(participant, records: list[MCRecord], shots: int, example: MCRecord | None,
             max_new_tokens: int, batch_size: int, predictions: list | None = None) -> dict:
    """Accuracy and invalid rates of greedy generations, and how many prompts lost their start to the
    prompt budget (`prompts_cut`) and answers reached max_new_tokens (`answers_cut`); `predictions`,
    when given, receives one {"id", "gold", "parsed", "stated", "prompt_cut", "answer_cut", "text"} per
    record ("stated": the letter of an answer statement, without the parser's fallback)."""
    prompts = [make_prompt(r, shots, example) for r in records]
    cut: list[bool] = []
    gens = participant.generate_text(prompts, max_new_tokens, batch_size, cut=cut)
    _, prompt_cut = participant.prompt_ids(prompts, max_new_tokens)
    num_options = len(records[0].options)
    if predictions is not None:
        predictions += [{"id": r.id, "gold": r.answer, "parsed": parse_answer(g, num_options),
                         "stated": stated_answer(g, num_options), "prompt_cut": pc, "answer_cut": ac, "text": g}
                        for r, g, pc, ac in zip(records, gens, prompt_cut, cut)]
    return {**score_answers(gens, records, num_options), "prompts_cut": sum(prompt_cut), "answers_cut": sum(cut)}


def evaluate_all(exp, results, round: int, progress: Progress | None = None) -> None:
    cfg = exp.cfg
    tests = {k: exp.data.clients[i].test[: cfg.eval.limit] for i, k in enumerate(exp.clients)}
    union = [x for v in tests.values() for x in v]
    bar = (progress or Progress(quiet=True)).task(f"round {round}: evaluation", len(cfg.eval.shots) * (len(tests) + 1))
    for shots in cfg.eval.shots:
        for k, client in exp.clients.items():
            preds: list[dict] = []
            m = evaluate(client, tests[k], shots, exp.example, cfg.eval.max_new_tokens, cfg.eval.batch_size, preds)
            results.add_eval(round, k, "client", shots, m, preds)
            bar.advance()
        preds = []
        m = evaluate(exp.server, union, shots, exp.example, cfg.eval.max_new_tokens, cfg.eval.batch_size, preds)
        results.add_eval(round, "server", "server", shots, m, preds)
        bar.advance()
    bar.done()
