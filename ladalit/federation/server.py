"""The server's side of a deployment: the usual run directory, the server role and its checkpoints, with the
clients reached only through a transport of bytes (ladalit.federation.transport) — other processes or hosts.

It is `ladalit.run.execute` with the clients elsewhere. The server holds ψ, D_p and its own evaluation set,
read from SERVER_DATA (public.jsonl, eval.jsonl; `ladalit.federation.prepare` writes them for a local
federation); no client's private path or record is here. Around the method's protocol it sends, per client:

    Join(config, D_p) ⇒ RoundReport   (to every node: which client it is, from the node's own config;
                                       round 0: the client evaluates itself, before any transfer)
    ... the method's rounds (its roles, ladalit/registry.py, over the one round loop; LaDa's needs
    federation.protocol=per_round; ladalit.core.messages); the client's last reply of a round is its
    RoundReport: its rows of results of round t, and its scores ...

Every crossing is counted on the channel; results.json adds `failed_clients` and `engine`, and on the demo world
the oracle's analysis as `ladalit.run` writes it (ladalit.demo.oracle; the clients' `accuracy_by_domain` cells
come from their reports, computed where their predictions stay).
A resumed server (resume=true) sends Join again and goes on from its checkpoint's round; each site starts
that round from its own copy of the round before (ladalit.federation.site).
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from ladalit import registry
from ladalit.core.channel import Channel
from ladalit.core.config import ConfigError, to_yaml
from ladalit.core.evaluation import evaluate
from ladalit.core.experiment import build_participant, make_fabric, one_shot_example, setup_participant
from ladalit.core.messages import Join
from ladalit.demo.oracle import oracle_report  # the run's analysis on the demo world, as ladalit.run's
from ladalit.core.run_identity import check_run_dir, prepare_run_dir, save_checkpoint
from ladalit.federation.site import read_records
from ladalit.reporting.plots import write_plots
from ladalit.core.progress import Progress, quiet_transformers
from ladalit.core import rounds
from ladalit.core.results import Results, log_round
from ladalit.core.rounds import RoundLoop, add_rows, gather_rows, run_rounds
from ladalit.reporting.tracker import Tracker
from ladalit.run import run_dir_for


def method_roles(cfg):
    """The method's roles (ladalit/registry.py); ConfigError for a setting it cannot run with on a deployment."""
    roles = registry.roles(cfg.method)
    roles.check_deployment(cfg)
    return roles


def join(transport, cfg, run_name: str, public, evaluate: bool) -> dict:
    """Join every node to the run; each says which client it is. Every configured client must be there,
    once; the transport then addresses them by name, in config order. A node that comes up while the others
    join (a SuperNode just restarted: the old one is still listed until its heartbeat expires) is joined
    too, until federation.join_timeout_s."""
    msg = Join(0, run_name, to_yaml(cfg), [asdict(x) for x in public], evaluate)
    end, joined, names = time.time() + cfg.federation.join_timeout_s, {}, {}
    new = list(transport.names)
    while new:
        transport.enough = len(set(cfg.clients) - set(names.values()))
        try:
            got = transport.request_all({k: msg for k in new}, unknown_ok=True, timeout_s=max(end - time.time(), 1))
        finally:
            transport.enough = None
        joined |= got
        names |= {k: r.client for k, r in got.items()}
        new = [] if set(cfg.clients) <= set(names.values()) or time.time() >= end else transport.discover(end)
    transport.rename(names)
    missing = sorted(set(cfg.clients) - set(transport.names))
    if missing:
        raise ConfigError(f"config key 'clients': no node is {', '.join(missing)} (nodes: {sorted(transport.names)})")
    transport.keep(list(cfg.clients))
    return transport.take_reports(0)


def serve(cfg, transport, server_data: Path, quiet: bool = True) -> tuple[Path, dict]:
    """Run the method's roles with the clients behind `transport` (a SiteTransport), over the one round loop
    (ladalit.core.rounds); returns the run dir and results.json."""
    roles = method_roles(cfg)
    quiet_transformers(cfg.verbose)
    run_dir = run_dir_for(cfg)
    ckpt = check_run_dir(cfg, run_dir)
    public = read_records(Path(server_data) / "public.jsonl", require_answer=False)
    eval_set = read_records(Path(server_data) / "eval.jsonl")
    fabric = make_fabric(cfg)
    fabric.launch()
    fabric.seed_everything(cfg.seed, verbose=False)
    participant = setup_participant(fabric, build_participant(cfg, "server", "server", cfg.server))
    start = 1 if ckpt is None else ckpt["round"] + 1
    joined = join(transport, cfg, run_dir.name, public, start == 1)
    prepare_run_dir(cfg, run_dir, to_yaml(cfg))
    channel, results, tracker = transport.channel, Results(), Tracker(cfg, run_dir)
    with Progress(quiet=quiet) as progress:
        server = roles.server(cfg, fabric, participant, roles.public(cfg, public), transport, progress, None)
        counters = {k: r.counters for k, r in joined.items()}
        if ckpt is None:
            add_reports(results, joined)
            evaluate_reports(cfg, results, 0, joined, participant, eval_set)
            log_round(tracker, results, channel, 0)
        else:
            rejoined = list(channel.messages)  # this start's Join crossed too
            counters = restore(ckpt, server, results, channel, transport)
            channel.messages += rejoined
        run_rounds(deployment_loop(cfg, server, results, transport, counters, (participant, eval_set), run_dir,
                                   tracker, progress), start)
    server.close()
    oracle = oracle_report(cfg, [x.id for x in public], results, dict(cfg.analysis.learnable_steps) or None)
    out = results.save(run_dir, cfg, channel, extra=extras(server, counters, transport) | oracle)
    tracker.finish(results, write_plots(out, run_dir))
    return run_dir, out


def deployment_loop(cfg, server, results: Results, transport, counters: dict, evaluation, run_dir: Path, tracker,
                    progress) -> RoundLoop:
    """The round loop (ladalit.core.rounds) on a deployment: a round's rows are the clients' RoundReports (in
    config order) then the server role's, as the in-process run orders them; the scores the clients' and the
    server's own (`evaluation`: its participant and evaluation set); the end of a round its checkpoint."""
    reports: dict = {}
    channel = transport.channel

    def gather(t: int) -> None:
        reports.clear()
        reports.update(transport.take_reports(t))
        counters.update({k: r.counters for k, r in reports.items()})
        add_reports(results, reports)
        gather_rows(results, [server])

    def end(t: int, seconds: float) -> None:
        transport.round_seconds.append({"round": t, "seconds": seconds})
        save_checkpoint(run_dir, t, snapshot(server, results, channel, counters, transport))
        results.save(run_dir, cfg, channel, extra=extras(server, counters, transport))

    return RoundLoop(cfg, server, results, channel, gather,
                     lambda t: evaluate_reports(cfg, results, t, reports, *evaluation), end, tracker, progress)


def add_reports(results: Results, reports: dict) -> None:
    """The clients' rows of a round (in config order), their scores apart (`evaluate_reports` adds them)."""
    for r in reports.values():
        add_rows(results, {key: got for key, got in r.results.items() if key != "accuracy"})


def evaluate_reports(cfg, results: Results, t: int, reports: dict, participant, eval_set) -> None:
    """Per prompt setting, every client's score (from its report) and the server's own, on its evaluation set."""
    for shots in cfg.eval.shots:
        results.accuracy.extend(row for r in reports.values() for row in r.results.get("accuracy", [])
                                if row["shots"] == shots)
        preds: list[dict] = []
        m = evaluate(participant, eval_set, shots, one_shot_example(cfg), cfg.eval.max_new_tokens,
                     cfg.eval.batch_size, preds)
        results.add_eval(t, "server", "server", shots, m, preds)


def snapshot(server, results: Results, channel: Channel, counters: dict, transport) -> dict:
    """The round loop's checkpoint (ladalit.core.rounds.snapshot) of the server role, with the clients' counters
    and the deployment's own: failed clients, the clients' names, the timing."""
    return rounds.snapshot({"server": server}, results, channel, dict(counters)) | {
        "failed_clients": transport.failed, "names": transport.names, "timing": timing(transport)}


def restore(ckpt: dict, server, results: Results, channel: Channel, transport) -> dict:
    state = ckpt["state"]
    torch.set_rng_state(ckpt["torch_rng"])
    rounds.restore(state, {"server": server}, results, channel)
    transport.failed = list(state["failed_clients"])
    transport.round_seconds, transport.exchanges = state["timing"]["rounds"], state["timing"]["exchanges"]
    transport.keep([k for k in state["names"] if k in transport.names])
    return dict(state["counters"])


def extras(server, counters: dict, transport) -> dict:
    """results.json's counters, as the in-process run has them (ladalit.core.rounds.merge_counters), and the
    deployment's own: failed clients, the engine, wall seconds per round and per exchange."""
    return rounds.merge_counters(counters, server.counters()) | {
        "failed_clients": transport.failed, "engine": type(transport).__name__, "timing": timing(transport)}


def timing(transport) -> dict:
    """Wall seconds per round and per exchange (benchmarks.flower_overhead reads them)."""
    return {"rounds": transport.round_seconds, "exchanges": transport.exchanges}
