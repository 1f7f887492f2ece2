"""LaDa on Flower (pip install 'ladalit[flower]'): the ServerApp runs the server's side
(ladalit.federation.server), the ClientApp (ladalit.federation.client_app) hands every message to the
client's site (ladalit.federation.site, held by a long-lived worker: ladalit.federation.worker). They talk only by Flower Messages of type "query.ladalit", whose content is
one ConfigRecord holding the ladalit message's bytes; the channel counts the size of that content as
Flower serialises it (per round, direction and client).

The ServerApp's run config (`flwr run APP CONNECTION --run-config '...'`):

    conf          the ladalit config file, on the server's host
    overrides     key=value overrides, space-separated (output_dir=..., rounds=..., resume=true, ...)
    server-data   the server's directory: public.jsonl and eval.jsonl (ladalit.federation.prepare)
    audit         optional: a file to write every ladalit message that crossed into (4-byte length, bytes;
                  `read_audit`), for checking what left each side

A SuperNode's node config names its client (`name`, `data`, and optionally `model`, `state`: see
ladalit.federation.site). A node that does not answer within federation.client_timeout_s counts as failed
(federation.on_client_failure).
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.common.serde import recorddict_to_proto
from flwr.serverapp import Grid, ServerApp

from ladalit.federation.client_app import content_of
from ladalit.federation.transport import Crossed, Lost, SiteTransport

MESSAGE_TYPE = "query.ladalit"


def content_bytes(content: RecordDict) -> int:
    """The size of the content as Flower serialises it (what crosses, before gRPC/HTTP framing)."""
    return recorddict_to_proto(content).ByteSize()


class FlowerTransport(SiteTransport):
    """The clients are SuperNodes, reached through the ServerApp's Grid; addressed by node id until they
    say who they are (ladalit.federation.server.name_nodes)."""

    def __init__(self, grid: Grid, channel, clients: int, timeout_s: float, on_failure: str = "raise"):
        super().__init__(channel, {str(n): n for n in wait_for_nodes(grid, clients, timeout_s)}, on_failure)
        self.grid, self.timeout_s = grid, timeout_s

    def discover(self, until: float) -> list[str]:
        """Nodes listed now that were not before, polled every second for up to 30 s (and not past `until`)."""
        end = min(until, time.time() + 30)
        while True:
            new = [str(n) for n in sorted(self.grid.get_node_ids()) if str(n) not in self.address]
            if new or time.time() >= end:
                break
            time.sleep(1.0)
        self.address |= {k: int(k) for k in new}
        self.names += new
        return new

    def carry(self, requests: dict[str, bytes], timeout_s: float | None = None) -> dict[str, Crossed | Lost]:
        timeout_s = timeout_s or self.timeout_s
        contents = {k: content_of(data) for k, data in requests.items()}
        msgs = [Message(contents[k], dst_node_id=self.address[k], message_type=MESSAGE_TYPE, ttl=timeout_s)
                for k in requests]
        replies = {r.metadata.src_node_id: r for r in send_and_receive(self.grid, msgs, timeout_s, self.enough)}
        out: dict[str, Crossed | Lost] = {}
        for k in requests:
            down, r = content_bytes(contents[k]), replies.get(self.address[k])
            if r is None:
                out[k] = Lost(f"no reply within {timeout_s:g} s (federation.client_timeout_s / join_timeout_s)", down)
            elif r.has_error():
                out[k] = Lost(f"its ClientApp failed: {first_line(r.error.reason)}", down)
            else:
                out[k] = Crossed(r.content["ladalit"]["message"], down, content_bytes(r.content))
        return out


def send_and_receive(grid: Grid, msgs: list, timeout_s: float, enough: int | None = None,
                     poll_s: float = 0.2) -> list:
    """Grid.send_and_receive, polling every `poll_s` instead of every 3 s (a round is a few exchanges, each
    waiting for its slowest client); `enough`: stop once that many replies are in (Join: as many as the
    config has clients; a node that died and was restarted stays listed under its old id for a while). Only
    replies without an error count toward `enough`: the SuperLink answers a message to a node it knows is
    offline with an error reply, and that must not end the wait before the restarted node has answered."""
    pending, replies, end = set(grid.push_messages(msgs)), [], time.time() + timeout_s
    answered = 0
    while pending and time.time() < end and (enough is None or answered < enough):
        got = list(grid.pull_messages(pending))
        replies += got
        answered += sum(not r.has_error() for r in got)
        pending -= {r.metadata.reply_to_message_id for r in got}
        if pending:
            time.sleep(poll_s)
    return replies


def wait_for_nodes(grid: Grid, clients: int, timeout_s: float, poll_s: float = 1.0) -> list[int]:
    """The connected nodes, once there are as many as the config has clients (or whatever is there at the
    timeout: the clients that are missing are named when the nodes say who they are)."""
    end = time.time() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= clients or time.time() >= end:
            return nodes
        time.sleep(poll_s)


def first_line(text: str | None) -> str:
    lines = [x for x in (text or "").strip().splitlines() if x.strip()]
    return lines[-1][:300] if lines else "no reason given"


# ----------------------------------------------------------------------------- the apps
server_app = ServerApp()


class RunFailed(RuntimeError):
    """The ServerApp's run failed (its one line is already on stderr); Flower marks the run failed."""


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    code = serve_main(grid, dict(context.run_config))
    if code:  # an Exception, not SystemExit: Flower then records the failure and flushes the log
        raise RunFailed(f"ladalit exit status {code}")


def serve_main(grid: Grid, run_config: dict) -> int:
    """The ServerApp's body: exit status 0, 1 (a client failed under raise) or 2 (bad config or input),
    with one line on stderr."""
    # deferred to the run: loading this module (the ServerApp component) imports flwr, not torch
    from ladalit.core.channel import Channel
    from ladalit.core.config import ConfigError, load_config
    from ladalit.core.messages import ProtocolError
    from ladalit.core.run_identity import RunError
    from ladalit.core.transport import ClientFailure
    from ladalit.data.records import DataError
    from ladalit.federation.server import serve
    try:
        argv = [f"conf={run_config['conf']}", *shlex.split(str(run_config.get("overrides", ""))),
                "federation.protocol=per_round"]
        cfg = load_config(argv)
        fed, audit = cfg.federation, str(run_config.get("audit", ""))
        transport = FlowerTransport(grid, Channel(keep_payloads=bool(audit)), len(cfg.clients), fed.client_timeout_s,
                                    fed.on_client_failure)
        try:
            run_dir, out = serve(cfg, transport, Path(str(run_config["server-data"])), quiet=cfg.quiet)
        finally:
            if audit:
                write_audit(Path(audit), transport.channel.payloads)
    except KeyError as err:
        print(f"error: the ServerApp's run config has no {err} (conf, overrides, server-data)", file=sys.stderr)
        return 2
    except (ConfigError, DataError, RunError, ProtocolError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ClientFailure as err:
        print(f"error: {err}; the run stopped (federation.on_client_failure=raise), its last complete round is "
              "checkpointed: resume=true continues it", file=sys.stderr)
        return 1
    print(f"results: {run_dir} ({out['communication_mb_total']:.3f} MB)", flush=True)
    return 0


def write_audit(path: Path, payloads: list[bytes]) -> None:
    path.write_bytes(b"".join(len(p).to_bytes(4, "big") + p for p in payloads))


def read_audit(path: Path) -> list[bytes]:
    data, out, i = Path(path).read_bytes(), [], 0
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    return out
