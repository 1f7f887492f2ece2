"""A class named by a config string, e.g. `filter_net.class_path: "pkg.mod:Class"`, and the settings a config
gives its `__init__` (`filter_net.init_args`)."""
from __future__ import annotations

import importlib
import inspect
import math
import types
from typing import Any, Union, get_args, get_origin, get_type_hints


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


class InitArgError(ValueError):
    """A setting, `name`, that a class's `__init__` does not take as given."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


def init_params(cls: type, base: type) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    """The named parameters a config may set on `cls.__init__` (with `base.__init__`'s where it passes
    **kwargs on) and their type hints (those that resolve)."""
    params, hints = {}, {}
    for c in (base, cls):  # the subclass's own win
        sig = inspect.signature(c.__init__)
        if c is base and not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values()):
            continue
        params.update({n: p for n, p in list(sig.parameters.items())[1:]
                       if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)})
        try:
            hints.update(get_type_hints(c.__init__))
        except Exception:  # an annotation that does not resolve: no type check for that class's arguments
            pass
    return params, hints


def fits(value: Any, hint: Any) -> bool:
    """`value` fits a plain hint (int, float, str, bool, or Optional of one); other hints are not checked."""
    union = get_origin(hint) in (Union, types.UnionType)
    options = [a for a in get_args(hint) if a is not type(None)] if union else [hint]
    if value is None:
        return (union and type(None) in get_args(hint)) or hint is Any
    if len(options) != 1 or options[0] not in (int, float, str, bool):
        return True
    t = options[0]
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, t)


def check_init_args(path: str, cls: type, base: type, args: dict, passed: tuple[str, ...]) -> None:
    """`args` (a config's settings for `cls`, named `path` there) are settings of `cls.__init__`: each a parameter
    it takes, of its type, finite, none that its caller passes itself; every parameter without a default is given.
    Raises InitArgError naming the setting."""
    params, hints = init_params(cls, base)
    own = sorted(n for n in params if n not in passed)
    for name, value in args.items():
        if name in passed:
            raise InitArgError(name, "passed by the loop from its own config key, not init_args")
        if name not in params:
            raise InitArgError(name, f"not a parameter of {path}.__init__ (its settings: {', '.join(own) or 'none'})")
        if isinstance(value, float) and not math.isfinite(value):
            raise InitArgError(name, f"value {value} is not a finite number")
        if name in hints and not fits(value, hints[name]):
            want = getattr(hints[name], "__name__", str(hints[name]))
            raise InitArgError(name, f"{value!r} is not of type {want} ({path}.__init__)")
    for name in own:
        if params[name].default is inspect.Parameter.empty and name not in args:
            raise InitArgError(name, f"required by {path}.__init__ (it has no default)")
