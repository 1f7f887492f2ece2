"""Every method, registered once: name -> "module:NAME" of its roles, or (for a method not yet split into
roles) of its runner.

The import is lazy (`roles(name)` / `runner(name)` import the module), so `ladalit.core.config` takes its
allowed `method=` values from here without importing any model code.

A method with roles (`ROLES`) is a `ladalit.core.roles.MethodRoles`: how to build its server role and a client
role. The one round loop (`ladalit.core.rounds`) runs them in this process (`ladalit.run`) and on a deployment
(`ladalit.federation`): a method is deployable when it has roles.

A runner (`RUNNERS`, the methods still to split into roles, issue 36) has the signature

    run(exp, channel, results, tracker=None, start_round=1, state=None, on_round_end=None,
        progress=None) -> dict

It runs rounds start_round..cfg.rounds, restores what it carries from `state` (a checkpoint's
snapshot) when given, calls `on_round_end(t, snapshot)` at the end of every round with everything it
needs to continue after round t (`ladalit.core.checkpoint`), and returns the extra entries of
results.json. Adding a method: docs/extending.md, "A new method (baseline)" (a worked example: docs/examples/decay.py).
"""
from __future__ import annotations

import importlib

ROLES: dict[str, str] = {
    "lada": "ladalit.method.lada:ROLES",
    "standalone": "ladalit.baselines.standalone:ROLES",
    "fedkd": "ladalit.baselines.fedkd:ROLES",
    "sft_cot": "ladalit.baselines.reasoning:SFT_COT",
    "socratic_cot": "ladalit.baselines.reasoning:SOCRATIC_COT",
    "rstar": "ladalit.baselines.reasoning:RSTAR",
    "wasp": "ladalit.baselines.wasp:ROLES",
    "fedmkt": "ladalit.baselines.fedmkt:ROLES",
}
RUNNERS: dict[str, str] = {
}
ORDER = ("lada", "standalone", "fedkd", "fedmkt", "wasp", "sft_cot", "socratic_cot", "rstar")
METHODS: dict[str, str] = {m: {**ROLES, **RUNNERS}[m] for m in ORDER}


def _load(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def roles(name: str):
    """The MethodRoles of method `name`, None for a method that has a runner instead."""
    return _load(ROLES[name]) if name in ROLES else None


def runner(name: str):
    """The runner function of method `name` (a method of METHODS without roles)."""
    return _load(METHODS[name])
