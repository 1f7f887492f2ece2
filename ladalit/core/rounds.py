"""The round loop, once for every method and both engines: rounds start..T of the server role
(ladalit.core.roles), the round's rows gathered, evaluation, the round's log, then the end of the round
(a checkpoint) — and the checkpoint's content, and resuming from it.

    for t = start..T:
      server.run_round(t)                 the method, through its transport
      gather(t)                           every role's rows of the round into the run's results
      evaluate(t)                         every round (eval.every_round) or the last
      log the round; end(t, seconds)      the tracker and the summary line; the checkpoint

What differs between the engines is what the caller passes: `in_process` (ladalit.run) gathers from the
roles in this process and evaluates every participant (`evaluate_all`); a deployment
(ladalit.federation.server) gathers the clients' RoundReports and adds the server's own evaluation.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

from ladalit.core.channel import Channel
from ladalit.core.evaluation import evaluate_all
from ladalit.core.progress import Progress
from ladalit.core.results import Results, log_round
from ladalit.core.roles import MethodRoles, ServerRole
from ladalit.core.transport import InProcess


@dataclass
class RoundLoop:
    cfg: object
    server: ServerRole
    results: Results
    channel: Channel
    gather: Callable[[int], None]  # the round's rows into `results`
    evaluate: Callable[[int], None]  # the round's scores into `results`
    end: Callable[[int, float], None] | None = None  # (round, its wall seconds up to evaluation): the checkpoint
    tracker: object = None
    progress: Progress | None = None


def evaluated(cfg, t: int) -> bool:
    """Whether round t is evaluated: every round with eval.every_round, else the last."""
    return cfg.eval.every_round or t == cfg.rounds


def run_rounds(loop: RoundLoop, start: int) -> None:
    """Rounds start..cfg.rounds."""
    loop.progress = loop.progress or Progress(quiet=True)
    bar = loop.progress.task("rounds", loop.cfg.rounds - start + 1)
    for t in range(start, loop.cfg.rounds + 1):
        one_round(loop, t)
        bar.advance()


def one_round(loop: RoundLoop, t: int) -> None:
    began = time.perf_counter()
    loop.server.run_round(t)
    loop.gather(t)
    if evaluated(loop.cfg, t):
        loop.evaluate(t)
    seconds = time.perf_counter() - began
    log_round(loop.tracker, loop.results, loop.channel, t)
    loop.progress.summary(loop.results, t, loop.channel)
    if loop.end is not None:
        loop.end(t, seconds)


# ----------------------------------------------------------------------------- rows and counters
def add_rows(results: Results, rows: dict) -> None:
    """Rows of `Results.state_dict()` form appended to `results`."""
    for key, got in rows.items():
        getattr(results, key).extend(got)


def gather_rows(results: Results, roles) -> None:
    """Every role's rows of the round appended to the run's results, in the order given (clients, then the
    server); each role starts the next round with none."""
    for role in roles:
        add_rows(results, role.results.state_dict())
        role.results = Results()


def merge_counters(clients: dict, own: dict) -> dict:
    """results.json's counters: the clients' (by name, in config order), then the server role's own; any other
    counter of a role is a dict, merged over the clients and the server."""
    out = {"nonfinite_skipped": [s for c in clients.values() for s in c.get("nonfinite_skipped", [])]
           + list(own["nonfinite_skipped"])}
    if "responses_generated" in own:
        out["responses_generated"] = sum(c.get("responses_generated", 0) for c in clients.values()) + \
            own["responses_generated"]
    if "bound_hits" in own:
        out["bound_hits"] = {**{f"client:{k}": c["bound_hits"] for k, c in clients.items()
                                if c.get("bound_hits") is not None},
                             **{f"server:{k}": v for k, v in own["bound_hits"].items()}}
    for c in [*clients.values(), own]:  # a method's own counters (dicts: rStar's per round and client) merged
        merge_into(out, {k: v for k, v in c.items() if k not in ("nonfinite_skipped", "responses_generated",
                                                                  "bound_hits")})
    return out


def merge_into(out: dict, more: dict) -> None:
    """`more` merged into `out`, dicts key by key at every depth (FedMKT's {"teacher_chosen": {"t:name": ..}})."""
    for key, v in more.items():
        if isinstance(v, dict) and isinstance(out.get(key), dict):
            merge_into(out[key], v)
        else:
            out[key] = copy.deepcopy(v)


# ----------------------------------------------------------------------------- checkpoints
def snapshot(roles: dict, results: Results, channel: Channel, counters: dict) -> dict:
    """The checkpoint after a round: every role's local state (its participant's weights apart, under
    "participants"), the run's results, the channel's ledger and the counters so far."""
    local = {n: r.state_dict() for n, r in roles.items()}
    return {"participants": {n: st.pop("participant", {}) for n, st in local.items()}, "roles": local,
            "results": results.state_dict(), "channel": channel.state_dict(), "counters": counters}


def restore(state: dict, roles: dict, results: Results, channel: Channel) -> None:
    """Put `snapshot`'s state back into the roles, the results and the channel."""
    for n, role in roles.items():
        role.load_state_dict(state["roles"][n] | {"participant": state["participants"][n]})
    results.load_state_dict(state["results"])
    channel.load_state_dict(state["channel"])


# ----------------------------------------------------------------------------- the in-process harness
def build_in_process(roles: MethodRoles, exp, channel: Channel, progress: Progress | None = None):
    """Every role of a method in this process: (server, clients by name); the server reaches the clients only
    behind an InProcess transport on `channel`."""
    cfg, hooks = exp.cfg, getattr(exp, "hooks", None)
    public = roles.public(cfg, exp.data.public)
    clients = {k: roles.client(cfg, exp.fabric, k, i, p, exp.data.clients[i], public, progress, hooks)
               for i, (k, p) in enumerate(exp.clients.items())}
    server = roles.server(cfg, exp.fabric, exp.server, public, InProcess(channel, clients), progress, hooks)
    return server, clients


def run_in_process(roles: MethodRoles, exp, channel: Channel, results: Results, tracker=None,
                   start_round: int = 1, state: dict | None = None, on_round_end=None,
                   progress: Progress | None = None) -> dict:
    """A method's roles built in this process (`build_in_process`), run by `in_process`."""
    progress = progress or Progress(quiet=True)
    server, clients = build_in_process(roles, exp, channel, progress)
    return in_process(exp, server, clients, channel, results, tracker, start_round, state, on_round_end, progress)


def in_process(exp, server: ServerRole, clients: dict, channel: Channel, results: Results, tracker=None,
               start_round: int = 1, state: dict | None = None, on_round_end=None,
               progress: Progress | None = None) -> dict:
    """Every role in this process (the server reaches the clients through an InProcess transport): restore
    from `state` when given, run the rounds, evaluate every participant (the server on the union of the
    clients' test sets, which no federated server could see), and call `on_round_end(t, snapshot)`.
    Returns results.json's counters."""
    roles = {**clients, "server": server}
    if state is not None:  # resume
        restore(state, roles, results, channel)

    def counters() -> dict:
        return merge_counters({k: c.counters() for k, c in clients.items()}, server.counters())

    def end(t: int, seconds: float) -> None:
        if on_round_end is not None:
            kept = {k: v for k, v in counters().items() if k != "bound_hits"}
            on_round_end(t, snapshot(roles, results, channel, kept))

    loop = RoundLoop(exp.cfg, server, results, channel, lambda t: gather_rows(results, roles.values()),
                     lambda t: evaluate_all(exp, results, t, progress), end, tracker, progress)
    run_rounds(loop, start_round)
    for role in roles.values():
        role.close()
    return counters()
