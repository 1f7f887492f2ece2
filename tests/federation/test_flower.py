"""LaDa (and SFT-CoT, a method beside it) on Flower: a SuperLink and 3 SuperNodes on 127.0.0.1 (free ports), each with only its own client's
private data; `flwr run` of launch/flower_app on smoke (3 clients, 2 rounds). Its results equal the
in-process run's; no private text or id is in any message that crossed. A SuperNode killed during round 2:
`skip` goes on without it; `raise` stops with round 1 checkpointed (the resumed server and its sites:
tests/federation/test_sites.py, where they agree on the uninterrupted results). Every process is stopped
at the end.
"""
import json
import threading
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("flwr")

from ladalit.core.config import load_config  # noqa: E402
from ladalit.federation.flower import read_audit, send_and_receive  # noqa: E402
from launch.flower_local import local_run  # noqa: E402
from launch.local_federation import APP_DIR, FAST_POLL, LocalFederation, find_tagged, group_members  # noqa: E402
from ladalit.federation.prepare import prepare_sites  # noqa: E402
from ladalit.federation.site import read_records  # noqa: E402
from ladalit.run import execute  # noqa: E402

CLIENT3 = ["clients.client3.model.source=tiny", "clients.client3.model.arch=qwen2", "clients.client3.model.hidden_size=32",
           "clients.client3.model.num_layers=1", "clients.client3.model.num_heads=2",
           "clients.client3.model.num_kv_heads=1", "clients.client3.model.intermediate_size=64",
           "clients.client3.train.batch_size=8"]
SAME = ("accuracy", "selection", "selected_per_round", "train", "reward_scale", "bound_hits", "nonfinite_skipped",
        "accuracy_by_domain")


def argv(out, name, *extra):
    return ["smoke.yaml", f"output_dir={out}", f"run_name={name}", "quiet=true", *CLIENT3, *extra]


def same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def flower_run(fed, args, kill=None, timeout_s=400):
    """`flwr run` of the app with `args`; `kill`: (node index, round) to SIGKILL that SuperNode once the
    run's checkpoint of the round before exists. Returns (outcome, its status, results.json or None)."""
    cfg, run_dir, work, run_config = local_run(args)
    if kill is not None:
        def killer():
            end = time.time() + timeout_s
            while time.time() < end and checkpoint_round(run_dir) < kill[1] - 1:
                time.sleep(0.5)
            fed.kill_node(kill[0])
        threading.Thread(target=killer, daemon=True).start()
    outcome = fed.run({**run_config, "server-data": str(fed.workdir / "sites" / "server"),
                       "audit": str(fed.workdir / f"{run_dir.name}.audit")}, timeout_s=timeout_s)
    status = fed.run_status(outcome.run_id)["runs"][0]["status"]
    results = run_dir / "results.json"
    return outcome, status, json.loads(results.read_text()) if results.is_file() else None


def checkpoint_round(run_dir) -> int:
    """The last round results.json holds (it is written with the checkpoint at every round's end); -1: none."""
    try:
        return max(r["round"] for r in json.loads((run_dir / "results.json").read_text())["accuracy"])
    except (OSError, ValueError):
        return -1


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flower")
    cfg = load_config(["conf=smoke.yaml", *CLIENT3])
    nodes = prepare_sites(cfg, tmp / "fed" / "sites")
    f = LocalFederation(tmp / "fed", APP_DIR, list(nodes.values()), env=FAST_POLL)
    with f:
        f.start(timeout_s=120)
        yield f, tmp
    assert find_tagged(f.tag) == [] and f.alive_pids() == []


@pytest.fixture(scope="module")
def inproc(fed):
    _, tmp = fed
    _, out = execute(load_config(["conf=smoke.yaml", f"output_dir={tmp}", "run_name=inproc", "quiet=true", *CLIENT3]),
                     quiet=True)
    return out


def test_flower_run_gives_the_in_process_results_and_no_private_text_crosses(fed, inproc):
    f, tmp = fed
    outcome, status, out = flower_run(f, argv(tmp, "flower"))
    assert status.startswith("finished:completed"), outcome.log
    assert out["engine"] == "FlowerTransport" and out["failed_clients"] == []
    for key in SAME:
        assert same(out[key], inproc[key]), key
    crossed = {(r["round"], r["direction"], r["client"]) for r in out["communication"]}
    assert {c for _, _, c in crossed} == {"client1", "client2", "client3"} and {r for r, _, _ in crossed} == {0, 1, 2}
    wire = b"".join(read_audit(f.workdir / "flower.audit"))
    private = [x for k in ("client1", "client2", "client3") for name in ("train.jsonl", "test.jsonl")
               for x in read_records(f.workdir / "sites" / k / name)]
    for x in private:
        assert json.dumps(x.id).encode() not in wire, x.id
        assert json.dumps(x.question, ensure_ascii=False)[1:-1].encode() not in wire, x.id
    public = read_records(f.workdir / "sites" / "server" / "public.jsonl", require_answer=False)
    assert json.dumps(public[0].id).encode() in wire


def test_sft_cot_on_flower_gives_the_in_process_results(fed):
    """A method beside LaDa through the same SuperNodes: its roles, registered once, run on Flower unchanged
    (round 1: ServerRationales ⇒ the client's report; round 2: LocalRound ⇒ the report)."""
    f, tmp = fed
    _, inproc = execute(load_config(["conf=smoke.yaml", f"output_dir={tmp}", "run_name=inproc-sft", "quiet=true",
                                     *CLIENT3, "method=sft_cot"]), quiet=True)
    outcome, status, out = flower_run(f, argv(tmp, "flower-sft", "method=sft_cot"))
    assert status.startswith("finished:completed"), outcome.log
    assert out["engine"] == "FlowerTransport" and out["failed_clients"] == [] and out["method"] == "sft_cot"
    for key in ("accuracy", "train", "nonfinite_skipped", "server_rationales"):
        assert same(out[key], inproc[key]), key
    assert {r["round"] for r in out["train"] if "cot_loss" in r} == {1, 2}
    assert {(r["round"], r["client"]) for r in out["communication"] if r["round"] > 0} == \
        {(t, k) for t in (1, 2) for k in ("client1", "client2", "client3")}


def test_a_supernode_killed_in_round_2_skip_goes_on_raise_stops(fed, inproc):
    f, tmp = fed
    # skip: the round goes on without client3
    timeout = ["federation.client_timeout_s=20"]  # an exchange takes 5-9 s here, under the suite's load
    outcome, status, out = flower_run(f, argv(tmp, "skip", "federation.on_client_failure=skip", *timeout), kill=(2, 2))
    assert status.startswith("finished:completed"), outcome.log
    assert [(r["round"], r["client"]) for r in out["failed_clients"]] == [(2, "client3")]
    assert "client 'client3' failed in round 2" in outcome.log, outcome.log[-4000:]
    assert {r["participant"] for r in out["accuracy"] if r["round"] == 2} == {"client1", "client2", "server"}
    # raise: the run stops, round 1 checkpointed
    f.restart_node(2)
    outcome, status, out = flower_run(f, argv(tmp, "raise", *timeout), kill=(2, 2))
    assert not status.startswith("finished:completed")
    assert "error: client 'client3' failed in round 2" in outcome.log, outcome.log[-4000:]  # the cause, if not
    assert checkpoint_round(tmp / "raise") == 1  # a resumed server and its sites: tests/federation/test_sites.py


class FakeGrid:
    """push_messages/pull_messages of a Grid whose replies come in `batches`, one batch per pull:
    (message index, error?) pairs."""
    def __init__(self, batches):
        self.batches = list(batches)

    def push_messages(self, msgs):
        return [f"m{i}" for i in range(len(msgs))]

    def pull_messages(self, ids):
        batch = self.batches.pop(0) if self.batches else []
        return [SimpleNamespace(has_error=lambda e=err: e, metadata=SimpleNamespace(reply_to_message_id=f"m{i}"))
                for i, err in batch if f"m{i}" in ids]


def test_error_replies_do_not_count_toward_enough():
    # 4 nodes listed (client3's dead old id among them), 3 clients wanted: the dead node's error reply comes
    # first; the wait must go on until 3 real replies are in, the restarted node's among them.
    grid = FakeGrid([[(2, True), (0, False)], [(1, False)], [], [(3, False)]])
    replies = send_and_receive(grid, [None] * 4, timeout_s=30, enough=3, poll_s=0)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2", "m3"]
    grid = FakeGrid([[(0, False), (1, False)], [(2, False)], [(3, False)]])
    replies = send_and_receive(grid, [None] * 4, timeout_s=30, enough=3, poll_s=0)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]  # stops at 3


def test_stop_leaves_no_process(fed):
    f, _ = fed
    assert f.alive_pids()
    f.stop()
    assert f.alive_pids() == [] and find_tagged(f.tag) == [] and group_members(f.started_pids) == []
    f.stop()  # idempotent
    assert f.alive_pids() == []
