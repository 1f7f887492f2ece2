"""Markdown configuration reference generated from the structured configs in `ladalit.core.config`.

    python -m ladalit.reporting.config_reference                                # print it
    python -m ladalit.reporting.config_reference --check docs/configuration.md  # exit 1 if the page is stale
    python -m ladalit.reporting.config_reference --write docs/configuration.md  # replace the page's section

The section is the text between `<!-- config-reference:start -->` and
`<!-- config-reference:end -->`. Descriptions are the comment lines directly
above each field in ladalit/core/config.py and in the modules that own a section (`ladalit.core.config.section`,
e.g. ladalit/method/filter.py's `Config`); allowed values come from CHOICES and RANGES.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import json
import re
import sys
import typing
from pathlib import Path

import ladalit.components  # noqa: F401  the config sections the components own
from ladalit.core import config as C
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
_FIELD = re.compile(r"^\s+(\w+)\s*:")


def field_comments(cls) -> dict[str, str]:
    """{field name: the comment line(s) directly above it in the class source}."""
    cls = getattr(cls, "__comments_from__", cls)  # the assembled RunConfig: BaseRunConfig's source
    out, pending = {}, []
    for line in inspect.getsource(cls).splitlines()[1:]:
        s = line.strip()
        if s.startswith("#"):
            pending.append(s.lstrip("#").strip())
            continue
        m = _FIELD.match(line)
        if m and pending:
            out[m.group(1)] = " ".join(pending)
        pending = []
    return out


def type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        return " | ".join(type_name(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (str, list, dict)):
        return json.dumps(v)
    return str(v)


def _pattern(path: str) -> str:
    """The CHOICES/RANGES key for a path: `server.x` and `clients.NAME.x` match `*.x`."""
    parts = path.split(".")
    if parts[0] == "server":
        return "*." + ".".join(parts[1:])
    if parts[0] == "clients" and len(parts) > 2:
        return "*." + ".".join(parts[2:])
    return path


def allowed(path: str) -> str:
    key = path if path in C.CHOICES or path in C.RANGES else _pattern(path)
    if key in C.CHOICES:
        return ", ".join(f"`{c}`" for c in C.CHOICES[key])
    if key in C.RANGES:
        lo, hi = C.RANGES[key]
        if lo is not None and hi is not None:
            return f"[{lo}, {hi}]"
        return f"≥ {lo}" if lo is not None else f"≤ {hi}"
    return ""


def walk(cls, prefix: str = "", first: dict | None = None):
    """Yield (section path, [(key, type, default, allowed, description)]) for every dataclass node."""
    if first is None:  # dataclass -> the first key path where it appears
        first = {}
        for c, p in _dataclass_paths(cls, prefix):
            first.setdefault(c, p)
    hints, comments = typing.get_type_hints(cls), field_comments(cls)
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        path, tp = f"{prefix}{f.name}", hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(tp):
            nested.append((tp, path))
            continue
        desc = comments.get(f.name, "")
        value = typing.get_args(tp)[-1] if typing.get_origin(tp) is dict else None
        if dataclasses.is_dataclass(value):
            same = f"the same keys as `{first[value]}.*`" if value in first else f"the keys of {value.__name__}"
            desc = (desc + " " if desc else "") + f"One entry per NAME; `{path}.NAME.*` takes {same}."
        rows.append((path, type_name(tp), _value(default), allowed(path), desc))
    yield prefix.rstrip("."), rows
    for tp, path in nested:
        yield from walk(tp, path + ".", first)


def _dataclass_paths(cls, prefix: str):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield hints[f.name], prefix + f.name
            yield from _dataclass_paths(hints[f.name], prefix + f.name + ".")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference(cls=None) -> str:
    cls, out = C.run_config() if cls is None else cls, []
    for section, rows in walk(cls):
        if not rows:
            continue
        out.append(f"## `{section}`" if section else "## Top level")
        out.append("")
        out.append("| key | type | default | allowed | description |")
        out.append("|---|---|---|---|---|")
        for key, tp, default, ok, desc in rows:
            out.append(f"| `{key}` | {_cell(tp)} | `{_cell(default)}` | {_cell(ok)} | {_cell(desc)} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _split(text: str, name: str) -> tuple[str, str, str]:
    i, j = text.find(START), text.find(END)
    if i < 0 or j < i:
        raise ValueError(f"{name}: markers {START} ... {END} not found")
    return text[: i + len(START)], text[i + len(START): j], text[j:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ladalit.reporting.config_reference", description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--check", metavar="FILE", help="exit 1 if FILE's reference section differs")
    group.add_argument("--write", metavar="FILE", help="replace FILE's reference section")
    args = ap.parse_args(argv)
    ref = reference()
    if not (args.check or args.write):
        print(ref, end="")
        return 0
    path = Path(args.check or args.write)
    try:
        head, current, tail = _split(path.read_text(), str(path))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.write:
        path.write_text(f"{head}\n{ref}{tail}")
        return 0
    if current.strip() == ref.strip():
        return 0
    diff = list(difflib.unified_diff(current.strip().splitlines(), ref.strip().splitlines(),
                                     f"{path} (current)", "generated", lineterm="", n=0))
    print(f"{path}: configuration reference is out of date; run "
          f"python -m ladalit.reporting.config_reference --write {path}", file=sys.stderr)
    print("\n".join(diff[:40]), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
