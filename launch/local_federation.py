"""Run a Flower (1.42) federation on one host: one SuperLink, N SuperNodes, `flwr run`.

    with LocalFederation(workdir, app_dir, [{"name": "a"}, {"name": "b"}]) as fed:
        fed.start(timeout_s=60)
        outcome = fed.run({"out": str(workdir / "echo.json")}, timeout_s=120)

Every process is started in its own session (so it and the children it spawns without a
new session share one process group), with its stdout/stderr in `workdir/logs/<name>.log`,
and with a per-federation marker in its environment. Flower starts some children in their
own sessions (the SuperLink's `flower-superexec`), so `stop()` finds every process that
carries the marker (children inherit the environment) and ends those too: SIGTERM, a grace
period, then SIGKILL.

Offline: the SuperLink gets `--disable-runtime-dependency-installation` (the SuperNode
installs nothing unless given `--allow-runtime-dependency-installation`, which we never
pass), plus FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1, FLWR_TELEMETRY_ENABLED=0,
FLWR_DISABLE_UPDATE_CHECK=1. The venv's bin/ goes first on PATH (the SuperLink and
SuperNode spawn `flower-superexec`, `flwr-serverapp` and `flwr-clientapp` by name). Each
process gets a private FLWR_HOME under workdir; the CLI's connection is written to
`<workdir>/home/cli/config.toml` as `[superlink.ladalit]`.
"""
from __future__ import annotations

import atexit
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

TAG_ENV = "LADALIT_FLWR_TAG"  # marker inherited by every descendant process
ROLE_ENV = "LADALIT_FLWR_ROLE"  # superlink / node<i> / run<k> / cli
CONNECTION = "ladalit"  # name of the SuperLink connection in the CLI's config.toml
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NODE_ID = re.compile(r"SuperNode ID: (\d+)")
_RUN_ID = re.compile(r"Successfully started run (\d+)")
_KEY = re.compile(r"[A-Za-z0-9_.-]+")


class FederationError(RuntimeError):
    """A process of the federation failed to start, died, or did not get ready in time."""


@dataclass
class RunOutcome:
    rc: int  # exit status of `flwr run`
    run_id: int | None
    log: str  # what `flwr run --stream` printed: the ServerApp's log (ANSI codes removed)
    wall_s: float  # submit to `flwr run` exit
    log_path: Path


@dataclass
class _Proc:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen
    logf: Any

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 40) -> str:
        return log_tail(self.log_path, n)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it; racy by nature)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost: do not assume it stays on this host


def log_tail(path: Path, n: int = 40) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "<no log>"
    return "\n".join(_ANSI.sub("", line) for line in lines[-n:])


def toml_value(v: Any) -> str:
    """One value in Flower's `key=value` config syntax (TOML; strings quoted)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        if "\n" in v or "\r" in v:
            raise ValueError(f"config value {v!r}: newlines are not supported")
        if '"' not in v and "\\" not in v:
            return f'"{v}"'
        if "'" not in v:
            return f"'{v}'"  # TOML literal string: backslashes and double quotes verbatim
        raise ValueError(f"config value {v!r}: holds both ' and \"/\\, which flwr's parser cannot take")
    raise TypeError(f"config value {v!r}: only bool, int, float and str are supported")


def config_arg(config: dict[str, Any]) -> str:
    """`--node-config` / `--run-config` string for a flat dict, checked by flwr's own parser."""
    for k in config:
        if not _KEY.fullmatch(str(k)):
            raise ValueError(f"config key {k!r}: use letters, digits, '_', '-', '.'")
    arg = " ".join(f"{k}={toml_value(v)}" for k, v in config.items())
    from flwr.common.config import parse_config_args

    back = parse_config_args([arg]) if arg else {}
    if back != dict(config):
        raise ValueError(f"config {config!r} does not survive flwr's parser (got {back!r})")
    return arg


def _bin_dir() -> Path:
    """The bin/ that holds the flwr executables: next to this interpreter (not resolved, so a
    venv's python keeps the venv's bin/), else the one on PATH."""
    here = Path(sys.executable).parent
    if (here / "flower-superlink").exists():
        return here
    import shutil

    found = shutil.which("flower-superlink")
    if not found:
        raise FederationError("flower-superlink not found next to sys.executable nor on PATH")
    return Path(found).parent


def _proc_environ(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return None


def find_tagged(tag: str, role: str | None = None) -> list[int]:
    """Live (non-zombie) processes whose environment carries the federation marker."""
    want = f"{TAG_ENV}={tag}".encode()
    want_role = f"{ROLE_ENV}={role}".encode() if role else None
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        env = _proc_environ(int(d))
        if not env:
            continue
        entries = env.split(b"\0")
        if want not in entries or (want_role and want_role not in entries):
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            if stat[stat.rindex(")") + 2] in "ZX":
                continue
        except (OSError, ValueError, IndexError):
            continue
        out.append(int(d))
    return out


def group_members(pgids: set[int] | list[int], zombies: bool = False) -> list[int]:
    """Processes whose process group is one of `pgids` (zombies only if asked)."""
    pgids = set(pgids)
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
        except (OSError, ValueError):
            continue
        if int(fields[2]) in pgids and (zombies or fields[0] not in "ZX"):
            out.append(int(d))
    return out


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def make_certs(certdir: Path, hosts: list[str]) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `hosts` (IPs and names), signed by it. Returns
    (ca.pem, server.pem, server.key)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    certdir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(days=1), now + dt.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ladalit local CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    sans: list[x509.GeneralName] = []
    for h in dict.fromkeys(["127.0.0.1", "localhost", *hosts]):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = certdir / "ca.pem", certdir / "server.pem", certdir / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    key_pem.chmod(0o600)
    return ca_pem, cert_pem, key_pem


def make_node_key(path_stem: Path) -> tuple[Path, Path]:
    """An EC P-384 key pair for SuperNode authentication, in the OpenSSH formats flwr reads:
    (<stem>.key private, <stem>.pub public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path_stem.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    priv, pub = path_stem.with_suffix(".key"), path_stem.with_suffix(".pub")
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    priv.chmod(0o600)
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                  serialization.PublicFormat.OpenSSH))
    return priv, pub


class LocalFederation:
    """One SuperLink and one SuperNode per node config, on `host`; see the module docstring."""

    def __init__(self, workdir: Path, app_dir: Path, node_configs: list[dict], tls: bool = False,
                 insecure_ok: bool = False, host: str = "127.0.0.1", supernode_auth: bool | None = None,
                 env: dict[str, str] | None = None):
        """`supernode_auth` (default: on with TLS, off without; it needs TLS): SuperLink
        `--enable-supernode-auth`; each node gets a key pair, registered with `flwr supernode register`
        before it starts, and is started with `--auth-supernode-private-key` (its node id then comes from
        the registration and survives restarts); a SuperNode whose key nobody registered is refused.
        `env`: extra environment for every process (e.g. FLWR_SUPEREXEC_TASK_POLL_INTERVAL)."""
        supernode_auth = tls if supernode_auth is None else supernode_auth
        if not tls and not insecure_ok and not is_loopback(host):
            raise ValueError(f"refusing to serve Flower on non-loopback host {host!r} without TLS: "
                             "pass tls=True, or insecure_ok=True to accept plaintext on the network")
        if supernode_auth and not tls:
            raise ValueError("supernode_auth needs tls=True (flower-superlink refuses it otherwise)")
        self.workdir = Path(workdir).absolute()
        self.app_dir = Path(app_dir).absolute()
        self.node_configs = [dict(c) for c in node_configs]
        self._node_args = [config_arg(c) for c in self.node_configs]  # validate before starting
        self.tls, self.host, self.supernode_auth = tls, host, supernode_auth
        self.extra_env = dict(env or {})
        self.node_keys: list[tuple[Path, Path] | None] = [None] * len(self.node_configs)
        self.tag = uuid.uuid4().hex
        self.bin_dir = _bin_dir()
        self.port: int | None = None
        self.superlink: _Proc | None = None
        self.nodes: list[_Proc | None] = [None] * len(self.node_configs)
        self.extra_nodes: list[_Proc] = []  # start_extra_node
        self.node_ids: list[int | None] = [None] * len(self.node_configs)
        self.started_pids: list[int] = []  # every pid this object spawned directly
        self.certs: tuple[Path, Path, Path] | None = None
        self._runs = 0
        self._restarts = [0] * len(self.node_configs)
        self._started = self._stopped = False

    # ------------------------------------------------------------------ plumbing
    @property
    def address(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{h}:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def _env(self, role: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["PATH"] = str(self.bin_dir) + os.pathsep + env.get("PATH", "")
        home = self.workdir / "home" / ("cli" if role.startswith(("run", "cli")) else role)
        home.mkdir(parents=True, exist_ok=True)
        env.update({
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "200",
            TAG_ENV: self.tag,
            ROLE_ENV: role,
        })
        return env

    def _spawn(self, name: str, role: str, argv: list[str]) -> _Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        logf = open(log_path, "ab")
        logf.write(f"$ {' '.join(argv)}\n".encode())
        logf.flush()
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                 env=self._env(role), cwd=self.workdir, start_new_session=True)
        self.started_pids.append(popen.pid)
        return _Proc(name, argv, log_path, popen, logf)

    def _cli(self, args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin_dir / "flwr"), *args], capture_output=True, text=True,
                              env=self._env("cli"), cwd=self.workdir, timeout=timeout_s,
                              start_new_session=True)

    def _wait(self, what: str, ready: Callable[[], bool], watch: list[_Proc], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            for p in watch:
                if not p.alive():
                    raise FederationError(f"{p.name} exited (rc {p.popen.returncode}) while waiting for "
                                          f"{what}; log {p.log_path}:\n{p.tail()}")
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {p.name} ({p.log_path}):\n{p.tail(15)}" for p in watch)
                raise FederationError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tails}")
            time.sleep(0.2)

    def _write_cli_config(self) -> Path:
        conn: list[str] = [f'address = "{self.address}"']
        if self.tls:
            assert self.certs is not None
            conn.append(f'root-certificates = "{self.certs[0]}"')
        else:
            conn.append("insecure = true")
        path = self.workdir / "home" / "cli" / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                        + "\n".join(conn) + "\n")
        return path

    def _tls_args_server(self) -> list[str]:
        if not self.tls:
            return ["--insecure"]
        ca, cert, key = self.certs
        return ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]

    def _tls_args_client(self) -> list[str]:
        return ["--root-certificates", str(self.certs[0])] if self.tls else ["--insecure"]

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float = 90, verify: bool = True) -> "LocalFederation":
        """Start the SuperLink and all SuperNodes; return once every node has registered (its
        log prints `SuperNode ID: <id>`), and, with `verify`, `flwr supernode list` shows all
        of them online. On any failure everything is stopped and FederationError raised."""
        if self._started:
            raise FederationError("start() called twice")
        self._started = True
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            if self.tls:
                self.certs = make_certs(self.workdir / "certs", [self.host])
            self.port = free_port(self.host)
            self._write_cli_config()
            self.superlink = self._spawn("superlink", "superlink", [
                str(self.bin_dir / "flower-superlink"), *self._tls_args_server(),
                "--host", self.host, "--port", str(self.port),
                "--disable-runtime-dependency-installation",
                *(["--enable-supernode-auth"] if self.supernode_auth else [])])
            self._wait("the SuperLink to listen",
                       lambda: "Uvicorn running on" in log_tail(self.superlink.log_path, 200),
                       [self.superlink], deadline - time.monotonic())
            if self.supernode_auth:
                for i in range(len(self.node_configs)):
                    self._register_node(i, deadline - time.monotonic())
            for i in range(len(self.node_configs)):
                self._start_node(i)
            self._wait_nodes(range(len(self.node_configs)), deadline - time.monotonic())
            if verify:
                self._verify_online(deadline - time.monotonic())
        except BaseException:
            self.stop()
            raise
        return self

    def _register_node(self, i: int, timeout_s: float) -> None:
        self.node_keys[i] = make_node_key(self.workdir / "keys" / f"node{i}")
        res = self._cli(["supernode", "register", str(self.node_keys[i][1]), CONNECTION], max(timeout_s, 10))
        if res.returncode != 0:
            raise FederationError(f"`flwr supernode register` for node{i} rc {res.returncode}:\n"
                                  f"{_ANSI.sub('', res.stdout + res.stderr)[-3000:]}")

    def start_extra_node(self, name: str, node_config: dict, private_key: Path | None = None) -> _Proc:
        """A SuperNode outside `node_configs` (e.g. one started with a key nobody registered), with its log in
        logs/<name>.log; not waited for, stopped with the federation."""
        auth = ["--auth-supernode-private-key", str(private_key)] if private_key else []
        p = self._spawn(name, name, [
            str(self.bin_dir / "flower-supernode"), *self._tls_args_client(), *auth,
            "--superlink", self.address, "--host", "127.0.0.1", "--port", str(free_port()),
            "--node-config", config_arg(node_config)])
        self.extra_nodes.append(p)
        return p

    def _start_node(self, i: int) -> None:
        name = f"node{i}" if not self._restarts[i] else f"node{i}.r{self._restarts[i]}"
        self.node_ids[i] = None
        auth = ["--auth-supernode-private-key", str(self.node_keys[i][0])] if self.node_keys[i] else []
        self.nodes[i] = self._spawn(name, f"node{i}", [
            str(self.bin_dir / "flower-supernode"), *self._tls_args_client(), *auth,
            "--superlink", self.address, "--host", "127.0.0.1", "--port", str(free_port()),
            "--node-config", self._node_args[i]])

    def _wait_nodes(self, idx, timeout_s: float) -> None:
        idx = list(idx)

        def ready() -> bool:
            for i in idx:
                if self.node_ids[i] is None:
                    m = _NODE_ID.search(_ANSI.sub("", self.nodes[i].log_path.read_text(errors="replace")))
                    if m:
                        self.node_ids[i] = int(m.group(1))
            return all(self.node_ids[i] is not None for i in idx)

        watch = [self.superlink] + [self.nodes[i] for i in idx]
        self._wait(f"{len(idx)} SuperNode(s) to register", ready, watch, timeout_s)

    def _verify_online(self, timeout_s: float) -> None:
        online = {int(n["node-id"]) for n in self.list_nodes(max(timeout_s, 10)) if n["status"] == "online"}
        missing = [i for i, nid in enumerate(self.node_ids) if self.nodes[i] and nid not in online]
        if missing:
            raise FederationError(f"nodes {missing} registered but `flwr supernode list` does not show "
                                  f"them online (online: {sorted(online)})")

    def list_nodes(self, timeout_s: float = 30) -> list[dict]:
        """`flwr supernode list --format json`: node-id, status (online/offline/...), times."""
        res = self._cli(["supernode", "list", CONNECTION, "--format", "json"], timeout_s)
        try:
            data = json.loads(res.stdout[res.stdout.index("{"):])
        except ValueError as e:
            raise FederationError(f"`flwr supernode list` rc {res.returncode}: {res.stdout}{res.stderr}") from e
        if not data.get("success"):
            raise FederationError(f"`flwr supernode list` failed: {data}")
        return data["nodes"]

    def run_status(self, run_id: int, timeout_s: float = 30) -> dict:
        """`flwr ls --run-id ID --format json` (status, e.g. 'finished:completed')."""
        res = self._cli(["ls", CONNECTION, "--run-id", str(run_id), "--format", "json"], timeout_s)
        return json.loads(res.stdout[res.stdout.index("{"):])

    def run(self, run_config: dict, timeout_s: float = 300) -> RunOutcome:
        """`flwr run <app_dir> ladalit --run-config ... --stream`; waits for it to end. Over
        `timeout_s`: `flwr stop <run_id>`, kill the CLI, raise TimeoutError."""
        if not self.superlink or not self.superlink.alive():
            raise FederationError("the SuperLink is not running")
        self._runs += 1
        argv = [str(self.bin_dir / "flwr"), "run", str(self.app_dir), CONNECTION, "--stream"]
        if run_config:
            argv += ["--run-config", config_arg(run_config)]
        t0 = time.monotonic()
        p = self._spawn(f"run{self._runs}", f"run{self._runs}", argv)
        try:
            p.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            run_id = self._run_id(p)
            stopped = ""
            if run_id is not None:
                try:
                    r = self._cli(["stop", str(run_id), CONNECTION], 30)
                    stopped = f"; `flwr stop {run_id}` rc {r.returncode}"
                except subprocess.TimeoutExpired:
                    stopped = f"; `flwr stop {run_id}` timed out"
            self._kill_group(p, signal.SIGKILL)
            p.logf.close()
            raise TimeoutError(f"flwr run (run id {run_id}) over {timeout_s:.0f} s{stopped}; "
                               f"log {p.log_path}:\n{p.tail()}") from None
        wall = time.monotonic() - t0
        p.logf.close()
        return RunOutcome(p.popen.returncode, self._run_id(p),
                          _ANSI.sub("", p.log_path.read_text(errors="replace")), wall, p.log_path)

    @staticmethod
    def _run_id(p: _Proc) -> int | None:
        m = _RUN_ID.search(_ANSI.sub("", p.log_path.read_text(errors="replace")))
        return int(m.group(1)) if m else None

    def _kill_group(self, p: _Proc, sig: int) -> None:
        if p.popen.poll() is None:  # leader not reaped: its pgid is still ours
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if sig == signal.SIGKILL:
            try:
                p.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def kill_node(self, i: int) -> None:
        """SIGKILL SuperNode i with everything it started (its SuperExec, ClientApps). Its
        node id stays in `node_ids[i]`; the SuperLink keeps it online until its heartbeat
        expires (2 x 30 s in 1.42)."""
        p = self.nodes[i]
        if p is None:
            return
        self._kill_group(p, signal.SIGKILL)
        for pid in find_tagged(self.tag, f"node{i}"):
            _signal(pid, signal.SIGKILL)
        p.logf.close()

    def restart_node(self, i: int, timeout_s: float = 90) -> int:
        """Kill SuperNode i if alive and start it again with the same node config. Without
        supernode_auth it registers as a new node; with it, it keeps its node id, but the
        SuperLink refuses to activate it again (exit 305, 'Failed to activate SuperNode')
        until the old session's heartbeat expires (up to 2 x 30 s after a SIGKILL), so the
        start is retried every few seconds within `timeout_s`. Returns the node id."""
        self.kill_node(i)
        deadline = time.monotonic() + timeout_s
        while True:
            self._restarts[i] += 1
            self._start_node(i)
            try:
                self._wait_nodes([i], deadline - time.monotonic())
                return self.node_ids[i]
            except FederationError:
                self.kill_node(i)
                if not self.supernode_auth or self.nodes[i].popen.returncode != 1 \
                        or time.monotonic() > deadline - 5:
                    raise
                time.sleep(3)
            except BaseException:
                self.kill_node(i)
                raise

    def alive_pids(self) -> list[int]:
        """Live (non-zombie) processes of this federation: every process that carries the
        federation's marker, plus any member of a process group this object started."""
        return sorted(set(find_tagged(self.tag)) | set(group_members(self.started_pids)))

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop every process of the federation (idempotent): SIGTERM to each process group and
        each marked process, wait up to `grace_s`, then SIGKILL what is left."""
        procs = [p for p in [*self.nodes, *self.extra_nodes, self.superlink] if p is not None]
        for p in procs:
            self._kill_group(p, signal.SIGTERM)
        for pid in find_tagged(self.tag):
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while find_tagged(self.tag) and time.monotonic() < deadline:
            time.sleep(0.2)
        for _ in range(50):
            left = find_tagged(self.tag)
            for p in procs:
                if p.popen.poll() is None:
                    self._kill_group(p, signal.SIGKILL)
            if not left:
                break
            for pid in left:
                _signal(pid, signal.SIGKILL)
            time.sleep(0.1)
        for p in procs:
            try:
                p.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            if not p.logf.closed:
                p.logf.close()
        # orphans that died are reaped by init a moment later; wait (bounded) for that too
        deadline = time.monotonic() + 3.0
        while group_members(self.started_pids, zombies=True) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not self._stopped:
            self._stopped = True
            atexit.unregister(self.stop)

    def __enter__(self) -> "LocalFederation":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ----------------------------------------------------------------------------- ladalit on a local federation
APP_DIR = Path(__file__).resolve().parent / "flower_app"
FAST_POLL = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.5"}  # the SuperExec's wait for a task (default 1 s)
