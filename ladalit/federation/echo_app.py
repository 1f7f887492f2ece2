"""Probe Flower app: ask every SuperNode its `name` (node config), then echo payloads.

ServerApp (`app`), run config (defaults in launch/flower_echo/pyproject.toml):
  out            JSON written here (absolute path; it is the SuperLink host's file system)
  num-messages   M echo rounds; each round sends one message to every node at once
  payload-bytes  size of the bytes payload (in a ConfigRecord)
  timeout        seconds to wait for the replies of one round
  poll-interval  0: use `grid.send_and_receive(msgs, timeout=...)` (it polls every 3 s, so
                 its times are multiples of ~3 s); > 0: push, then pull every poll-interval
                 s, timing every reply on its own
  max-nodes      0: all nodes; k: only the first k node ids (sorted)
  probe-errors   also send one message whose handler raises, and record the error reply

ClientApp (`client`): `query.name` replies the node's `name`; `query.echo` imports torch
(once per ClientApp process, which Flower starts afresh for every message) and echoes
the bytes; `query.fail` raises.

Reply errors, as flwr 1.42 gives them (`msg.has_error()`, `msg.error.code/.reason`,
codes in `flwr.common.constant.ErrorCode`): the handler raised: 2
CLIENT_APP_RAISED_EXCEPTION (reason holds the exception); the ClientApp process died: 8
CLIENT_APP_CRASHED; the destination node missed its heartbeats (2 x 30 s after it died):
5 NODE_UNAVAILABLE, made by the SuperLink; reply expired: 4 REPLY_MESSAGE_UNAVAILABLE.
A node that has not answered when `timeout` passes simply has no reply in what
`send_and_receive` returns (fewer replies than messages; no error message for it).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

app = ServerApp()
client = ClientApp()


def _exchange(grid: Grid, msgs: list[Message], timeout: float, poll: float) -> dict[int, dict]:
    """Send `msgs` at once; per destination node: {ok, rtt_s, reply|error}."""
    dst = [m.metadata.dst_node_id for m in msgs]
    t0 = time.perf_counter()
    results: dict[int, dict] = {}
    if poll <= 0:
        replies = list(grid.send_and_receive(msgs, timeout=timeout))
        t = time.perf_counter() - t0
        by_id = {m.metadata.message_id: n for m, n in zip(msgs, dst)}
        for r in replies:
            results[by_id.get(r.metadata.reply_to_message_id, r.metadata.src_node_id)] = _result(r, t)
    else:
        ids = list(grid.push_messages(msgs))
        by_id = dict(zip(ids, dst))
        pending = set(ids)
        while pending and time.perf_counter() - t0 < timeout:
            for r in grid.pull_messages(list(pending)):
                mid = r.metadata.reply_to_message_id
                if mid in pending:
                    pending.discard(mid)
                    results[by_id[mid]] = _result(r, time.perf_counter() - t0)
            if pending:
                time.sleep(poll)
    for n in dst:
        results.setdefault(n, {"ok": False, "rtt_s": None,
                               "error": {"code": None, "reason": f"no reply within {timeout} s"}})
    return results


def _result(r: Message, t: float) -> dict:
    if r.has_error():
        return {"ok": False, "rtt_s": t, "error": {"code": r.error.code, "reason": r.error.reason}}
    return {"ok": True, "rtt_s": t, "reply": r}


def _msg(node: int, action: str, cfg: dict) -> Message:
    return Message(RecordDict({"q": ConfigRecord(cfg)}), dst_node_id=node, message_type=f"query.{action}")


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    out = Path(str(cfg["out"]))
    m, nbytes = int(cfg["num-messages"]), int(cfg["payload-bytes"])
    timeout, poll = float(cfg["timeout"]), float(cfg["poll-interval"])
    nodes = sorted(grid.get_node_ids())
    if int(cfg["max-nodes"]) > 0:
        nodes = nodes[: int(cfg["max-nodes"])]
    print(f"echo: nodes {nodes}", flush=True)

    t_start = time.perf_counter()
    names_res = _exchange(grid, [_msg(n, "name", {"x": 0}) for n in nodes], timeout, poll)
    names, failed, names_rtt = {}, {}, {}
    for n, r in names_res.items():
        names_rtt[str(n)] = r["rtt_s"]
        if r["ok"]:
            names[str(n)] = str(r["reply"].content["r"]["name"])
        else:
            failed[str(n)] = r["error"]
    print(f"echo: names {names} failed {failed}", flush=True)

    payload = os.urandom(nbytes)
    rounds = []
    live = [n for n in nodes if str(n) in names]
    for k in range(m if live else 0):
        res = _exchange(grid, [_msg(n, "echo", {"data": payload, "k": k}) for n in live], timeout, poll)
        row = {}
        for n, r in res.items():
            if r["ok"]:
                rec = r["reply"].content["p"]
                ok = bytes(rec["data"]) == payload
                row[str(n)] = {"ok": ok, "rtt_s": r["rtt_s"], "torch_import_s": float(rec["torch-import-s"]),
                               "pid": int(rec["pid"])}
            else:
                row[str(n)] = {"ok": False, "rtt_s": r["rtt_s"], "error": r["error"]}
                failed.setdefault(str(n), r["error"])
        rounds.append(row)
        print(f"echo: round {k}: " + ", ".join(f"{n}: {v['ok']} {v['rtt_s']}" for n, v in row.items()), flush=True)

    probe = None
    if bool(cfg["probe-errors"]) and live:
        r = _exchange(grid, [_msg(live[0], "fail", {"x": 0})], timeout, poll)[live[0]]
        probe = r.get("error")
        print(f"echo: probe error {probe}", flush=True)

    report = {"nodes": [str(n) for n in nodes], "names": names, "failed": failed, "names_rtt_s": names_rtt, "rounds": rounds,
              "payload_bytes": nbytes, "num_messages": m, "poll_interval": poll, "timeout": timeout,
              "handler_error": probe, "wall_s": time.perf_counter() - t_start}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(out)
    print(f"echo: wrote {out}", flush=True)


@client.query("name")
def name(msg: Message, context: Context) -> Message:
    rec = ConfigRecord({"name": str(context.node_config.get("name", ""))})
    return Message(RecordDict({"r": rec}), reply_to=msg)


@client.query("echo")
def echo(msg: Message, context: Context) -> Message:
    t0 = time.perf_counter()
    import torch  # the cost a real ladalit ClientApp pays in every fresh process

    assert torch.__version__

    dt = time.perf_counter() - t0
    rec = ConfigRecord({"data": msg.content["q"]["data"], "torch-import-s": dt, "pid": os.getpid()})
    return Message(RecordDict({"p": rec}), reply_to=msg)


@client.query("fail")
def fail(msg: Message, context: Context) -> Message:
    raise RuntimeError("echo_app: deliberate failure")
