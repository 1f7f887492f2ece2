"""Every method, registered once: name -> "module:NAME" of its roles (a `ladalit.core.roles.MethodRoles`: how to
build its server role and a client role).

The import is lazy (`roles(name)` imports the module), so `ladalit.core.config` takes its allowed `method=`
values from here without importing any model code. The one round loop (`ladalit.core.rounds`) runs a method's
roles in this process (`ladalit.run`) and on a deployment (`ladalit.federation`), with its evaluation,
checkpoints and resume. Adding a method: docs/extending.md, "A new method" (a worked example:
docs/examples/decay.py).
"""
from __future__ import annotations

import importlib

METHODS: dict[str, str] = {
    "lada": "ladalit.method.lada:ROLES",
    "standalone": "ladalit.baselines.standalone:ROLES",
    "fedkd": "ladalit.baselines.fedkd:ROLES",
    "fedmkt": "ladalit.baselines.fedmkt:ROLES",
    "wasp": "ladalit.baselines.wasp:ROLES",
    "sft_cot": "ladalit.baselines.reasoning:SFT_COT",
    "socratic_cot": "ladalit.baselines.reasoning:SOCRATIC_COT",
    "rstar": "ladalit.baselines.reasoning:RSTAR",
}


def roles(name: str):
    """The MethodRoles of method `name` (a key of METHODS)."""
    module, attr = METHODS[name].split(":")
    return getattr(importlib.import_module(module), attr)
