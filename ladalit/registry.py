"""Every method, registered once: name -> "module:function" of its runner.

The import is lazy (`runner(name)` imports the module), so `ladalit.core.config` takes its allowed
`method=` values from here without importing any model code. A runner has the signature of
`ladalit.method.lada.run`:

    run(exp, channel, results, tracker=None, start_round=1, state=None, on_round_end=None,
        progress=None) -> dict

It runs rounds start_round..cfg.rounds, restores what it carries from `state` (a checkpoint's
snapshot) when given, calls `on_round_end(t, snapshot)` at the end of every round with everything it
needs to continue after round t (`ladalit.core.checkpoint`), and returns the extra entries of
results.json. Adding a method: docs/extending.md, "A new method (baseline)" (a worked example: docs/examples/decay.py).
"""
from __future__ import annotations

import importlib

METHODS: dict[str, str] = {
    "lada": "ladalit.method.lada:run",
    "standalone": "ladalit.baselines.standalone:run_standalone",
    "fedkd": "ladalit.baselines.fedkd:run_fedkd",
    "fedmkt": "ladalit.baselines.fedmkt:run_fedmkt",
    "wasp": "ladalit.baselines.wasp:run_wasp",
    "sft_cot": "ladalit.baselines.reasoning:run_sft_cot",
    "socratic_cot": "ladalit.baselines.reasoning:run_socratic_cot",
    "rstar": "ladalit.baselines.reasoning:run_rstar",
}


def runner(name: str):
    """The runner function of method `name` (a key of METHODS)."""
    module, function = METHODS[name].split(":")
    return getattr(importlib.import_module(module), function)
