"""Baselines run through the same data split, evaluation and channel (SPEC §8)."""
from __future__ import annotations

import math

from ladalit.core.channel import DOWN, Channel
from ladalit.core.messages import ServerAnswers
from ladalit.core.evaluation import evaluate_all
from ladalit.core.responses import ResponseCache
from ladalit.reporting.results import log_round
from ladalit.reporting.progress import Progress
from ladalit.core.prompts import format_response, zero_shot_prompt
from ladalit.reporting.results import Results
from ladalit.core.training import NonFiniteGuard, supervised_finetune


def _private_sft(exp, guard, results, optimizers, epochs_of, round):
    """Every client fine-tunes on its private train set (short answer statements)."""
    for i, (k, client) in enumerate(exp.clients.items()):
        train = exp.data.clients[i].train
        if k not in optimizers:
            optimizers[k] = exp.fabric.setup_optimizers(client.configure_optimizers())
        ls = supervised_finetune(exp.fabric, client, optimizers[k], [zero_shot_prompt(x) for x in train],
                                 [format_response(None, x.answer) for x in train], epochs_of(client),
                                 exp.cfg.seed + round, guard, round=round)
        results.add_train(round, k, sft_loss=ls[-1] if ls else math.nan)


def run_standalone(exp, channel: Channel, results: Results, tracker=None, progress=None, **_) -> dict:
    """Clients train on private data only; nothing crosses the channel.

    Round 1 is the same SFT as LaDa's reference step (train.sft_epochs); every
    later round adds train.epochs more epochs on the private data.
    """
    guard, optimizers = NonFiniteGuard(exp.cfg.on_nonfinite), {}
    for t in range(1, exp.cfg.rounds + 1):
        _private_sft(exp, guard, results, optimizers,
                     (lambda c: c.train_cfg.sft_epochs) if t == 1 else (lambda c: c.train_cfg.epochs), t)
        if exp.cfg.eval.every_round or t == exp.cfg.rounds:
            evaluate_all(exp, results, t)
        log_round(tracker, results, channel, t)
        (progress or Progress(quiet=True)).summary(results, t, channel)
    return {"nonfinite_skipped": guard.skipped}


def run_fedkd(exp, channel: Channel, results: Results, tracker=None, progress=None, **_) -> dict:
    """Clients fine-tune on private train, then on the LLM's chain-of-thought answers for the
    whole public set. The LLM is not trained, so its answers are generated and sent once;
    each round every client fine-tunes train.epochs more epochs on them."""
    cfg = exp.cfg
    guard, optimizers = NonFiniteGuard(cfg.on_nonfinite), {}
    public = exp.data.public
    prompts = [zero_shot_prompt(x) for x in public]
    llm_answers = ResponseCache(cfg.generation.max_new_tokens, cfg.generation.batch_size, progress).get(1, exp.server, public)
    received: dict[str, list[str]] = {}
    for t in range(1, cfg.rounds + 1):
        if t == 1:
            _private_sft(exp, guard, results, optimizers, lambda c: c.train_cfg.sft_epochs, 0)
            received = {k: channel.send(t, DOWN, k, ServerAnswers(t, llm_answers)).texts for k in exp.clients}
        for k, client in exp.clients.items():
            ls = supervised_finetune(exp.fabric, client, optimizers[k], prompts, received[k],
                                     client.train_cfg.epochs, cfg.seed + t, guard, round=t)
            results.add_train(t, k, kd_loss=ls[-1] if ls else math.nan)
        if cfg.eval.every_round or t == cfg.rounds:
            evaluate_all(exp, results, t)
        log_round(tracker, results, channel, t)
        (progress or Progress(quiet=True)).summary(results, t, channel)
    return {"nonfinite_skipped": guard.skipped}
