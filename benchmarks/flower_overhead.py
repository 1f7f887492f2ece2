"""Flower on localhost against the in-process run: wall time per round, as a ratio, in one run.

    python -m benchmarks.flower_overhead                 # conf/smoke.yaml
    python -m benchmarks.flower_overhead --conf demo.yaml --rounds 1

The in-process run (the default engine, per_batch) and the Flower run (a SuperLink and one SuperNode
per client on 127.0.0.1, launch/flower_app, per_round, the clients' sites held by their workers) use
the same config and seed, one after the other, every process with OMP_NUM_THREADS=1 (set before torch
is imported). A round's wall time includes its evaluation in both. Also reported: Flower's time per
exchange (one message to every client and every reply back), by message kind, and the start-up
(SuperLink + SuperNodes, `flwr run`'s submit) that the round times leave out.
Target: Flower <= 1.5x in-process on the demo world. Results: benchmarks/results/flower_overhead.json.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.common import machine_info, table, write_result  # noqa: E402


def in_process(conf: str, overrides: list[str]) -> dict:
    import torch
    torch.set_num_threads(1)
    from benchmarks.run import load, run_method
    rec = run_method(load(conf, overrides))
    return {"round_s": rec.round_s, "build_s": rec.build_s, "total_s": rec.total_s, "out": rec.out}


def on_flower(conf: str, overrides: list[str], work: Path) -> dict:
    from launch.flower_local import local_run
    from launch.local_federation import APP_DIR, FAST_POLL, LocalFederation
    from ladalit.federation.prepare import prepare_sites
    cfg, run_dir, fed_dir, run_config = local_run([conf, f"output_dir={work}", "run_name=flower", "quiet=true",
                                                   *overrides])
    nodes = prepare_sites(cfg, fed_dir / "sites")
    t0 = time.perf_counter()
    with LocalFederation(fed_dir, APP_DIR, list(nodes.values()), env=FAST_POLL) as fed:
        fed.start(timeout_s=180)
        start_s = time.perf_counter() - t0
        outcome = fed.run(run_config, timeout_s=6 * 3600)
    out = json.loads((run_dir / "results.json").read_text())
    return {"round_s": [r["seconds"] for r in out["timing"]["rounds"]], "exchanges": out["timing"]["exchanges"],
            "start_s": start_s, "flwr_run_s": outcome.wall_s, "out": out}


def same_results(a: dict, b: dict) -> dict:
    """Rounds 1.. (the in-process runner here does not score round 0; the Flower run does, at Join)."""
    keys = ("accuracy", "selection", "train")
    return {k: json.dumps([r for r in a[k] if r["round"] >= 1], sort_keys=True)
            == json.dumps([r for r in b[k] if r["round"] >= 1], sort_keys=True) for k in keys}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conf", default="smoke.yaml")
    ap.add_argument("--rounds", type=int, default=None, help="override the config's rounds")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args(argv)
    overrides = list(args.overrides) + ([f"rounds={args.rounds}"] if args.rounds else [])
    local = in_process(args.conf, overrides)
    with tempfile.TemporaryDirectory() as d:
        flower = on_flower(args.conf, overrides, Path(d))
    per_kind = defaultdict(list)
    for e in flower["exchanges"]:
        per_kind[e["kind"]].append(e["seconds"])
    ratio = sum(flower["round_s"]) / sum(local["round_s"])
    rows = [[t + 1, f"{a:.1f}", f"{b:.1f}", f"{b / a:.2f}x"] for t, (a, b) in
            enumerate(zip(local["round_s"], flower["round_s"]))]
    print(table(rows, ["round", "in-process s", "Flower s", "ratio"]))
    print(table([[k, len(v), f"{statistics.median(v):.2f}", f"{max(v):.2f}"] for k, v in per_kind.items()],
                ["exchange", "n", "median s", "max s"]))
    same = same_results(local["out"], flower["out"])
    print(f"Flower / in-process, all rounds: {ratio:.2f}x (target <= 1.5x on the demo); start-up outside the "
          f"rounds: federation {flower['start_s']:.1f} s, flwr run {flower['flwr_run_s'] - sum(flower['round_s']):.1f} s "
          f"beyond its rounds; same results: {same}")
    payload = {"conf": args.conf, "overrides": overrides, "in_process_round_s": local["round_s"],
               "flower_round_s": flower["round_s"], "ratio": ratio, "exchanges": flower["exchanges"],
               "start_s": flower["start_s"], "flwr_run_s": flower["flwr_run_s"], "same_results": same,
               "machine": machine_info()}
    path = write_result(f"flower_overhead_{Path(args.conf).stem}", payload)
    print(f"written: {path}")
    return payload


if __name__ == "__main__":
    main()
