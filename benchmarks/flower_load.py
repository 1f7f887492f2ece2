"""Load on one host: smoke with K clients on Flower on localhost (a SuperLink, K SuperNodes and their site
workers) against the same run in-process; wall time per round, peak memory per process and in total, and the
messages that went through the SuperLink.

    python -m benchmarks.flower_load                  # K = 8 clients, 2 rounds
    python -m benchmarks.flower_load --clients 4 --rounds 1

The K clients are smoke's two (client1: llama, client2: gemma2 with LoRA) repeated: clientN copies client1
for odd N and client2 for even N; data.synthetic.num_records grows to fit K clients' splits. The in-process
run (the default engine) goes first in this process; then the federation, every process with
OMP_NUM_THREADS=1. While the federation runs, a sampler reads every process of it (found by the marker in its
environment, launch.local_federation) every `--sample-s` seconds: VmRSS and VmHWM (the kernel's peak RSS of
that process) from /proc/PID/status, and Pss from /proc/PID/smaps_rollup (shared pages divided among their
sharers: the torch and Python libraries mapped by every process are counted once in the sum of Pss, K times
in the sum of RSS). Reported: peak RSS per site worker, per SuperNode with everything it started, per
SuperLink side; the peak of the sum of RSS and of Pss over all processes at one sample.

The message count is the ladalit messages that crossed (the ServerApp's audit): each is one Flower Message
pushed to the SuperLink and pulled from it (Flower's own heartbeats and polls are not counted).
Results: benchmarks/results/flower_load_k<K>.json (with the date and the command).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.common import machine_info, table, write_result  # noqa: E402

SMOKE_CLIENT = {  # conf/smoke.yaml's two clients
    1: {"model.source": "tiny", "model.arch": "llama", "model.hidden_size": 32, "model.num_layers": 1,
        "model.num_heads": 2, "model.num_kv_heads": 1, "model.intermediate_size": 64, "train.batch_size": 8},
    0: {"model.source": "tiny", "model.arch": "gemma2", "model.hidden_size": 32, "model.num_layers": 1,
        "model.num_heads": 2, "model.num_kv_heads": 1, "model.intermediate_size": 64, "model.lora.enabled": True,
        "model.lora.r": 4, "train.batch_size": 8},
}
KIB = 1024


def overrides_for(k: int, rounds: int) -> list[str]:
    out = [f"rounds={rounds}", f"data.synthetic.num_records={max(200, k * 24 + 32 + 50)}", "quiet=true"]
    for n in range(3, k + 1):
        out += [f"clients.client{n}.{key}={str(v).lower()}" for key, v in SMOKE_CLIENT[n % 2].items()]
    return out


def kind_of(cmd: list[str]) -> str:
    names = [Path(c).name for c in cmd[:3]]
    for exe in ("flower-superlink", "flower-superexec", "flwr-serverapp", "flower-supernode", "flwr-clientapp"):
        if exe in names:
            return exe
    if "ladalit.federation.worker" in cmd:
        return "site-worker"
    if "flwr" in names:
        return "flwr-cli"
    return names[0] if names else "?"


def read_proc(pid: int) -> dict | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmd = [c.decode(errors="replace") for c in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if c]
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    fields = {line.split(":")[0]: line.split(":")[1].split() for line in status.splitlines() if ":" in line}
    pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    role = next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"LADALIT_FLWR_ROLE=")), "?")
    return {"rss_kib": int(fields.get("VmRSS", [0])[0]), "hwm_kib": int(fields.get("VmHWM", [0])[0]),
            "pss_kib": pss, "kind": kind_of(cmd), "role": role}


class Sampler(threading.Thread):
    """Every process of the federation every `every_s` seconds (see the module docstring)."""

    def __init__(self, tag: str, every_s: float):
        super().__init__(daemon=True)
        self.tag, self.every_s = tag, every_s
        self.procs: dict[int, dict] = {}  # pid -> kind, role, peak hwm
        self.samples: list[dict] = []  # time, rss total, pss total, per role rss
        self.halt = threading.Event()

    def run(self) -> None:
        from launch.local_federation import find_tagged
        t0 = time.time()
        while not self.halt.is_set():
            rss = pss = 0
            by_role: dict[str, int] = defaultdict(int)
            pss_role: dict[str, int] = defaultdict(int)
            for pid in find_tagged(self.tag):
                p = read_proc(pid)
                if p is None:
                    continue
                rss, pss = rss + p["rss_kib"], pss + p["pss_kib"]
                by_role[p["role"]] += p["rss_kib"]
                pss_role[p["role"]] += p["pss_kib"]
                seen = self.procs.setdefault(pid, {"kind": p["kind"], "role": p["role"], "hwm_kib": 0})
                seen["hwm_kib"] = max(seen["hwm_kib"], p["hwm_kib"])
            self.samples.append({"t": round(time.time() - t0, 1), "rss_kib": rss, "pss_kib": pss,
                                 "by_role_rss_kib": dict(by_role), "by_role_pss_kib": dict(pss_role)})
            self.halt.wait(self.every_s)


def in_process(conf: str, overrides: list[str]) -> dict:
    import torch
    torch.set_num_threads(1)
    from benchmarks.run import load, run_method
    rec = run_method(load(conf, overrides))
    return {"round_s": rec.round_s, "build_s": rec.build_s, "total_s": rec.total_s,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB}


def on_flower(conf: str, overrides: list[str], work: Path, sample_s: float) -> dict:
    from ladalit.core.messages import decode
    from ladalit.federation.flower import read_audit
    from launch.flower_local import local_run
    from launch.local_federation import APP_DIR, FAST_POLL, LocalFederation
    from ladalit.federation.prepare import prepare_sites
    cfg, run_dir, fed_dir, run_config = local_run([conf, f"output_dir={work}", "run_name=flower", *overrides])
    nodes = prepare_sites(cfg, fed_dir / "sites")
    audit = fed_dir / "flower.audit"
    t0 = time.perf_counter()
    with LocalFederation(fed_dir, APP_DIR, list(nodes.values()), env=FAST_POLL) as fed:
        sampler = Sampler(fed.tag, sample_s)
        sampler.start()
        try:
            fed.start(timeout_s=600)
            start_s = time.perf_counter() - t0
            outcome = fed.run({**run_config, "audit": str(audit)}, timeout_s=3 * 3600)
        finally:
            sampler.halt.set()
            sampler.join()
    if outcome.rc != 0 or not (run_dir / "results.json").is_file():
        raise RuntimeError(f"the Flower run failed (rc {outcome.rc}):\n{outcome.log[-3000:]}")
    out = json.loads((run_dir / "results.json").read_text())
    messages = [decode(p) for p in read_audit(audit)]
    per = Counter((getattr(m, "round", -1), m.kind) for m in messages)
    return {"round_s": [r["seconds"] for r in out["timing"]["rounds"]], "exchanges": out["timing"]["exchanges"],
            "start_s": start_s, "flwr_run_s": outcome.wall_s, "failed_clients": out["failed_clients"],
            "messages": len(messages),
            "messages_by_round_kind": [{"round": r, "kind": k, "n": n} for (r, k), n in sorted(per.items())],
            "procs": sampler.procs, "samples": sampler.samples}


def summarise(procs: dict, samples: list[dict], k: int) -> dict:
    mib = lambda kib: round(kib / KIB, 1)  # noqa: E731
    workers = [p["hwm_kib"] for p in procs.values() if p["kind"] == "site-worker"]
    by_kind = defaultdict(list)
    for p in procs.values():
        by_kind[p["kind"]].append(p["hwm_kib"])
    node_peak = [max((s["by_role_rss_kib"].get(f"node{i}", 0) for s in samples), default=0) for i in range(k)]
    node_pss = [max((s["by_role_pss_kib"].get(f"node{i}", 0) for s in samples), default=0) for i in range(k)]
    server_roles = lambda s, m: sum(v for r, v in s[m].items() if not r.startswith("node"))  # noqa: E731
    return {
        "site_worker_peak_rss_mib": {"n": len(workers), "max": mib(max(workers, default=0)),
                                     "min": mib(min(workers, default=0))},
        "peak_rss_mib_by_kind": {kd: {"n": len(v), "max": mib(max(v))} for kd, v in sorted(by_kind.items())},
        "per_node_peak_rss_mib": [mib(v) for v in node_peak],  # a SuperNode and all it started, summed RSS
        "per_node_peak_pss_mib": [mib(v) for v in node_pss],  # the same, Pss (shared pages divided)
        "server_side_peak_rss_mib": mib(max((server_roles(s, "by_role_rss_kib") for s in samples), default=0)),
        "server_side_peak_pss_mib": mib(max((server_roles(s, "by_role_pss_kib") for s in samples), default=0)),
        "total_peak_rss_mib": mib(max((s["rss_kib"] for s in samples), default=0)),
        "total_peak_pss_mib": mib(max((s["pss_kib"] for s in samples), default=0)),
    }


def compact(samples: list[dict]) -> list[list[float]]:
    """The samples as [seconds, total RSS MiB, total Pss MiB] (the per-role detail is in the summary)."""
    return [[s["t"], round(s["rss_kib"] / KIB, 1), round(s["pss_kib"] / KIB, 1)] for s in samples]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sample-s", type=float, default=1.0)
    ap.add_argument("--no-in-process", action="store_true", help="skip the in-process run")
    args = ap.parse_args(argv)
    command = "python -m benchmarks.flower_load " + " ".join(sys.argv[1:] if argv is None else argv)
    overrides = overrides_for(args.clients, args.rounds)
    local = None if args.no_in_process else in_process("smoke.yaml", overrides)
    with tempfile.TemporaryDirectory() as d:
        flower = on_flower("smoke.yaml", overrides, Path(d), args.sample_s)
    mem = summarise(flower["procs"], flower["samples"], args.clients)
    if local:
        rows = [[t + 1, f"{a:.1f}", f"{b:.1f}", f"{b / a:.2f}x"]
                for t, (a, b) in enumerate(zip(local["round_s"], flower["round_s"]))]
        print(table(rows, ["round", "in-process s", "Flower s", "ratio"]))
    print(json.dumps(mem, indent=1))
    print(f"{args.clients} clients: messages through the SuperLink {flower['messages']}; federation start "
          f"{flower['start_s']:.1f} s; flwr run {flower['flwr_run_s']:.1f} s")
    payload = {"command": command, "date": time.strftime("%Y-%m-%d"), "clients": args.clients,
               "overrides": overrides, "in_process": local,
               "flower": {k: v for k, v in flower.items() if k not in ("procs", "samples")}, "memory": mem,
               "samples_t_rss_pss_mib": compact(flower["samples"])}
    path = write_result(f"flower_load_k{args.clients}", payload)
    print(f"written: {path}")
    return payload


if __name__ == "__main__":
    main()
