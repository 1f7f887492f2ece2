"""The deployment tier (marker `deployment`: not in the default test command; `.ci/run` runs it after the suite;
`pytest -m deployment` runs it alone). One federation on 127.0.0.1 with TLS and, by default with TLS, SuperNode
authentication: a SuperLink and 2 SuperNodes whose keys were registered (smoke, 2 rounds).

- Who may join: a SuperNode with a key nobody registered, and one with no key, are refused by the SuperLink and
  never receive a ladalit message; the run completes with the registered nodes.
- Restarts: the ServerApp's run SIGKILLed after round 1, then resumed (resume=true); a SuperNode SIGKILLed in
  round 2, restarted (same key, so the same node id), and the server resumed. Both give the results of the
  uninterrupted run.
Every process is stopped at the end.
"""
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from ladalit.core.config import load_config  # noqa: E402
from ladalit.core.messages import decode  # noqa: E402
from ladalit.federation.flower import read_audit  # noqa: E402
from launch.flower_local import local_run  # noqa: E402
from launch.local_federation import APP_DIR, FAST_POLL, LocalFederation, find_tagged, log_tail, make_node_key  # noqa: E402
from ladalit.federation.prepare import prepare_sites  # noqa: E402

pytestmark = pytest.mark.deployment

SAME = ("accuracy", "selection", "selected_per_round", "train", "reward_scale", "bound_hits", "nonfinite_skipped")
TIMEOUT = ["federation.client_timeout_s=90"]  # an exchange takes 5-9 s here, many times that on a loaded host;
# a killed node is noticed sooner anyway: the SuperLink reports it offline once its heartbeat expires (60 s)


def argv(out, name, *extra):
    return ["smoke.yaml", f"output_dir={out}", f"run_name={name}", "quiet=true", *TIMEOUT, *extra]


def same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def checkpoint_round(run_dir) -> int:
    """The last round results.json holds (written with the checkpoint at every round's end); -1: none."""
    try:
        return max(r["round"] for r in json.loads((Path(run_dir) / "results.json").read_text())["accuracy"])
    except (OSError, ValueError):
        return -1


def serverapp_pids(fed) -> list[int]:
    """The ServerApp processes of the federation (flwr-serverapp, spawned by the SuperLink's SuperExec)."""
    out = []
    for pid in find_tagged(fed.tag):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(Path(c.decode(errors="replace")).name == "flwr-serverapp" for c in cmd):
            out.append(pid)
    return out


def flower_run(fed, args, during=None, timeout_s=300):
    """`flwr run` of the app with `args`; `during(run_dir)` runs in a thread meanwhile. Returns (outcome, its
    status, results.json or None, run_dir)."""
    cfg, run_dir, work, run_config = local_run(args)
    if during is not None:
        threading.Thread(target=during, args=(run_dir,), daemon=True).start()
    outcome = fed.run({**run_config, "server-data": str(fed.workdir / "sites" / "server"),
                       "audit": str(fed.workdir / f"{run_dir.name}.audit")}, timeout_s=timeout_s)
    status = fed.run_status(outcome.run_id)["runs"][0]["status"]
    results = run_dir / "results.json"
    return outcome, status, json.loads(results.read_text()) if results.is_file() else None, run_dir


def wait_for(pred, timeout_s, what):
    end = time.time() + timeout_s
    while not pred():
        assert time.time() < end, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deployment")
    cfg = load_config(["conf=smoke.yaml"])
    nodes = prepare_sites(cfg, tmp / "fed" / "sites")
    f = LocalFederation(tmp / "fed", APP_DIR, list(nodes.values()), tls=True, env=FAST_POLL)
    with f:
        f.start(timeout_s=120)
        yield f, tmp, nodes
    assert find_tagged(f.tag) == [] and f.alive_pids() == []


@pytest.fixture(scope="module")
def uninterrupted(fed):
    """The uninterrupted run, with two SuperNodes trying to join as client1 once its ServerApp is up (while it
    joins the nodes): one with a key nobody registered, one with no key (each with its own copy of client1's
    site). Each intruder's exit time is recorded, to compare with the run's end."""
    f, tmp, nodes = fed
    intruders, exited = {}, {}

    def intrude(run_dir):
        wait_for(lambda: serverapp_pids(f), 120, "the ServerApp to start")
        for name, key in (("unregistered", True), ("nokey", False)):
            site = tmp / name / "site"
            shutil.copytree(nodes["client1"]["data"], site)
            priv = make_node_key(tmp / name / "key")[0] if key else None
            intruders[name] = (f.start_extra_node(name, {**nodes["client1"], "data": str(site)}, priv), site,
                               sorted(p.name for p in site.iterdir()))
        end = time.time() + 120
        while len(exited) < len(intruders) and time.time() < end:
            exited.update({k: time.time() for k, v in intruders.items() if k not in exited and not v[0].alive()})
            time.sleep(0.2)

    outcome, status, out, run_dir = flower_run(f, argv(tmp, "uninterrupted"), during=intrude)
    return outcome, status, out, run_dir, intruders, exited, time.time()


def test_tls_turns_on_supernode_authentication_by_default(fed):
    f, _, _ = fed
    assert f.tls and f.supernode_auth
    assert "--enable-supernode-auth" in f.superlink.argv
    for i, p in enumerate(f.nodes):
        assert p.argv[p.argv.index("--auth-supernode-private-key") + 1] == str(f.node_keys[i][0])
    registered = {int(n["node-id"]) for n in f.list_nodes()}
    assert registered == set(f.node_ids) and len(registered) == 2


def test_an_unregistered_supernode_never_receives_a_message_and_the_run_completes(fed, uninterrupted):
    f, tmp, _ = fed
    outcome, status, out, run_dir, intruders, exited, run_end = uninterrupted
    assert status.startswith("finished:completed"), outcome.log[-4000:]
    assert out["failed_clients"] == [] and {r["participant"] for r in out["accuracy"]} == {"client1", "client2",
                                                                                           "server"}
    refusal = {"unregistered": "Failed to activate SuperNode",
               "nokey": "SuperNode authentication is enabled. All SuperNodes must be registered"}
    assert set(intruders) == {"unregistered", "nokey"}
    for name, (proc, site, files) in intruders.items():
        assert exited.get(name, run_end + 1) < run_end, f"{name} was still trying to join when the run ended"
        log = log_tail(proc.log_path, 400)
        assert proc.popen.returncode != 0 and refusal[name] in log, log
        assert "SuperNode ID" not in log and "Receiving:" not in log, log  # never activated, never pulled a message
        assert sorted(p.name for p in site.iterdir()) == files  # its site worker never started
    for p in f.nodes:  # what receiving looks like in a SuperNode's log
        assert "Receiving: query.ladalit message" in log_tail(p.log_path, 100000)
    # the SuperLink lists only the registered nodes, and every message that crossed was to or from them
    assert {int(n["node-id"]) for n in f.list_nodes()} == set(f.node_ids)
    kinds = [type(decode(m)).__name__ for m in read_audit(f.workdir / "uninterrupted.audit")]
    assert kinds.count("Join") == 2  # the ServerApp joined the two registered nodes, no third
    assert {r["client"] for r in out["communication"]} == {"client1", "client2"}


def test_serverapp_sigkilled_after_round_1_then_resumed_gives_the_uninterrupted_results(fed, uninterrupted):
    f, tmp, _ = fed
    ref = uninterrupted[2]
    killed = {}

    def kill_serverapp(run_dir):
        wait_for(lambda: checkpoint_round(run_dir) >= 1, 240, "round 1's checkpoint")
        pids = serverapp_pids(f)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed.update(pids=pids, at=time.time())

    outcome, status, out, run_dir = flower_run(f, argv(tmp, "server-killed"), during=kill_serverapp)
    assert len(killed["pids"]) == 1, killed
    assert not status.startswith("finished:completed"), status
    assert checkpoint_round(run_dir) == 1
    outcome, status, out, _ = flower_run(f, argv(tmp, "server-killed", "resume=true"))
    assert status.startswith("finished:completed"), outcome.log[-4000:]
    assert out["failed_clients"] == []
    for key in SAME:
        assert same(out[key], ref[key]), key


def test_supernode_sigkilled_in_round_2_restarted_and_resumed_gives_the_uninterrupted_results(fed, uninterrupted):
    f, tmp, _ = fed
    ref = uninterrupted[2]
    node_id = f.node_ids[1]

    def kill_node(run_dir):
        wait_for(lambda: checkpoint_round(run_dir) >= 1, 240, "round 1's checkpoint")
        f.kill_node(1)

    outcome, status, out, run_dir = flower_run(f, argv(tmp, "node-killed"), during=kill_node)
    assert not status.startswith("finished:completed"), status
    assert "error: client 'client2' failed in round 2" in outcome.log, outcome.log[-4000:]
    assert checkpoint_round(run_dir) == 1
    assert f.restart_node(1, timeout_s=120) == node_id  # its registered key: the same node id
    outcome, status, out, _ = flower_run(f, argv(tmp, "node-killed", "resume=true"))
    assert status.startswith("finished:completed"), outcome.log[-4000:]
    assert out["failed_clients"] == []
    for key in SAME:
        assert same(out[key], ref[key]), key


def test_the_federation_stops_every_process(fed):
    f, _, _ = fed
    f.stop()
    assert f.alive_pids() == [] and find_tagged(f.tag) == []
