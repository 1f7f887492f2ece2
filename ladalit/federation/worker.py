"""A client site that outlives the messages: one long-lived process per node, beside its SuperNode.

Flower starts a fresh ClientApp process for every message. Building the client (imports, Fabric, its
model, its state from disk) in each would cost seconds per message, and minutes with a real SLM. So the
ClientApp (ladalit.federation.client_app) only forwards the message's bytes to this worker over a Unix
socket in the site's state directory, and starts the worker when none answers. The worker holds the
site (ladalit.federation.site) and its role between messages; the site still writes its state to disk
after every message, so a worker that dies, or a SuperNode restarted on another worker, goes on from
there. It exits after `worker_idle_s` seconds (node config; default 900) without a message.

    python -m ladalit.federation.worker NODE_CONFIG_JSON
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

IDLE_S = 900.0


def state_root(node_config: dict) -> Path:
    return Path(str(node_config.get("state") or Path(str(node_config["data"])) / ".ladalit-state"))


def socket_path(node_config: dict) -> Path:
    """STATE/worker.sock; a Unix socket's path is limited to about 100 bytes, so a longer one is in the
    temp directory, named by a hash of STATE."""
    path = state_root(node_config).absolute() / "worker.sock"
    if len(str(path).encode()) <= 100:
        return path
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ladalit-worker-{digest}.sock"


def send_frame(sock: socket.socket, data: bytes) -> None:
    sock.sendall(len(data).to_bytes(8, "big") + data)


def recv_frame(sock: socket.socket) -> bytes:
    head = _recv(sock, 8)
    return _recv(sock, int.from_bytes(head, "big"))


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("the site's worker closed the connection")
        buf += chunk
    return bytes(buf)


def forward(node_config: dict, data: bytes, start_timeout_s: float = 120.0) -> bytes:
    """The ClientApp's side: the message to this node's worker (started if none answers), its reply back."""
    path = socket_path(node_config)
    for attempt in range(2):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(str(path))
                send_frame(sock, data)
                return recv_frame(sock)
        except (FileNotFoundError, ConnectionRefusedError):
            if attempt:
                raise
            start_worker(node_config, start_timeout_s)
    raise AssertionError("unreachable")


def start_worker(node_config: dict, timeout_s: float) -> None:
    """Start the worker in its own session (it outlives this ClientApp process) and wait for its socket."""
    root = state_root(node_config)
    root.mkdir(parents=True, exist_ok=True)
    path = socket_path(node_config)
    path.unlink(missing_ok=True)
    with open(root / "worker.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ladalit.federation.worker", json.dumps(node_config)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    end = time.time() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the site's worker exited with {proc.returncode}; see {root / 'worker.log'}")
        if time.time() > end:
            raise TimeoutError(f"the site's worker did not start within {timeout_s:g} s; see {root / 'worker.log'}")
        time.sleep(0.1)


def serve(node_config: dict) -> None:
    """Answer messages on the socket, one at a time, until `worker_idle_s` passes without one."""
    from ladalit.federation.site import ClientSite  # in here: `forward` runs in the torch-free ClientApp
    site = ClientSite(node_config)
    idle = float(node_config.get("worker_idle_s", IDLE_S))
    path = socket_path(node_config)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        tmp = path.with_name(f"{path.name}.{os.getpid()}")
        server.bind(str(tmp))
        server.listen(1)
        inode = os.stat(tmp).st_ino
        os.replace(tmp, path)  # the socket appears once it listens
        server.settimeout(idle)
        print(f"worker {os.getpid()} for client '{site.name}' on {path}", flush=True)
        try:
            while True:
                try:
                    conn, _ = server.accept()
                except socket.timeout:
                    return
                with conn:
                    conn.settimeout(None)
                    try:
                        send_frame(conn, site.handle_bytes(recv_frame(conn)))
                    except Exception:  # the role failed in mid-message: no reply; the next one reloads from disk
                        traceback.print_exc()
        finally:
            try:
                if os.stat(path).st_ino == inode:  # still ours, not a newer worker's
                    path.unlink()
            except FileNotFoundError:
                pass


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))


class Forwarder:
    """A site reached through its worker, for ladalit.federation.transport.LocalSites (tests)."""

    def __init__(self, node_config: dict):
        self.node_config = node_config

    def handle_bytes(self, data: bytes) -> bytes:
        return forward(self.node_config, data)
