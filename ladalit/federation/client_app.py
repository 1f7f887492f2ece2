"""The ClientApp of LaDa on Flower: every message's bytes go to this node's site worker
(ladalit.federation.worker), which holds the client's role; the reply's bytes come back. This module imports
no torch: a ClientApp is a fresh process for every message.

Node config (flower-supernode --node-config): name, data, and optionally model, state (see
ladalit.federation.site), worker_idle_s (the worker's idle exit), worker = false (no worker: this process
handles the message itself, building the role from disk).
"""
from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

client_app = ClientApp()


def content_of(data: bytes) -> RecordDict:
    return RecordDict({"ladalit": ConfigRecord({"message": data})})


@client_app.query("ladalit")
def client_query(msg: Message, context: Context) -> Message:
    node = dict(context.node_config)
    data = msg.content["ladalit"]["message"]
    if str(node.get("worker", "true")).lower() in ("false", "0", "no"):
        from ladalit.federation.site import ClientSite  # in here: this process starts without torch
        reply = ClientSite(node).handle_bytes(data)
    else:
        from ladalit.federation.worker import forward  # in here: see the module docstring
        reply = forward(node, data)
    return Message(content_of(reply), reply_to=msg)
