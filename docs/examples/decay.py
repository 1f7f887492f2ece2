"""A new method: a client-only baseline that repeats private SFT with a decaying number of epochs.

Register it with one line in ladalit/registry.py's RUNNERS (here the module is docs/examples/decay.py;
in the package it would be ladalit/baselines/decay.py, registered as "ladalit.baselines.decay:run_decay"):

    "decay": "decay:run_decay",

The config reads its allowed `method=` values from the registry when it is imported.

then `PYTHONPATH=docs/examples python -m ladalit.run conf=smoke.yaml method=decay` runs it.
"""
from ladalit.baselines.standalone import end_round, private_sft, resume_state, round_state
from ladalit.core.training import NonFiniteGuard


def run_decay(exp, channel, results, tracker=None, start_round=1, state=None, on_round_end=None,
              progress=None) -> dict:
    guard, optimizers, epochs = NonFiniteGuard(exp.cfg.on_nonfinite), {}, 4
    if state is not None:                                   # resume: generic state + what we carry
        resume_state(exp, state, guard, optimizers, results, channel)
        epochs = state["epochs"]
    for t in range(start_round, exp.cfg.rounds + 1):
        private_sft(exp, guard, results, optimizers, lambda c: epochs, t)
        epochs = max(1, epochs // 2)
        end_round(exp, results, channel, tracker, progress, t, on_round_end,
                  lambda: round_state(exp, guard, optimizers, results, channel, epochs=epochs))
    return {"nonfinite_skipped": guard.skipped}
