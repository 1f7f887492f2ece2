"""Hooks of the experimenter's harness into a method's roles, for the demo world's controls (analysis only).

No method builds these: the harness (`ladalit.run`) does, from the `analysis:` switches
(`ladalit.demo.controls`), and hands them to the roles through `Experiment.hooks`. Whatever a control needs
from the truth stays inside the hook; a role only calls it. With every field None (the default) a method
runs as it does without them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Hooks:
    # (round, public ids) -> the answers that replace y^s, the server's answers a client learns from
    teacher: Callable[[int, list[str]], list[str]] | None = None
    # (round, client, public ids) -> the answers that replace y^k, client k's answers the server learns from
    client_teacher: Callable[[int, str, list[str]], list[str]] | None = None
    # (round, pair, candidate batch, candidate ids) -> the ids to select instead of the filter's choice
    selector: Callable[[int, str, int, list[str]], list[str]] | None = None
    # (round, pair, candidate ids, selected ids): told after every selection; returns nothing
    selected: Callable[[int, str, list[str], list[str]], None] | None = None
