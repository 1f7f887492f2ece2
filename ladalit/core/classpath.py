"""A class named by a config string, e.g. `filter_net.class_path: "pkg.mod:Class"`."""
from __future__ import annotations

import importlib
from typing import Any


def import_class(path: str, base: type) -> type:
    """The class named by a config string ``"pkg.mod:Class"`` (or ``"pkg.mod.Class"``); it must subclass `base`."""
    if ":" in path:
        mod_name, _, attr = path.partition(":")
    else:
        mod_name, _, attr = path.rpartition(".")
    if not mod_name or not attr:
        raise ValueError(f"expected 'pkg.mod:Class', got {path!r}")
    obj: Any = importlib.import_module(mod_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise TypeError(f"{path} is not a subclass of {base.__module__}.{base.__name__}")
    return obj
