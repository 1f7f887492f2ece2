"""The command behind launch/flower_local.sh: LaDa on a local Flower federation, a SuperLink and one SuperNode
per client of CONF on this host, each with its own private data written from CONF's split
(`python -m launch.flower_local [--host H] [--tls [--no-auth]] [--insecure] CONF N [key=value ...]`, from the
repository root). The processes are handled by `launch.local_federation.LocalFederation`.
"""
from __future__ import annotations

import os
import sys

from ladalit.core.config import ConfigError, load_config, resolve_conf_path
from ladalit.data.records import DataError
from ladalit.federation.prepare import prepare_sites
from ladalit.run import run_dir_for
from launch.local_federation import APP_DIR, FAST_POLL, LocalFederation, is_loopback

USAGE = ("usage: launch/flower_local.sh [--host H] [--tls [--no-auth]] [--insecure] CONF N [key=value ...]: a "
         "SuperLink and N SuperNodes on this host (127.0.0.1 unless --host), one per client of CONF; --tls also "
         "authenticates the SuperNodes (a key pair each, registered), unless --no-auth")
NO_AUTH = ("federation: SuperNode authentication is off (--no-auth): any SuperNode that reaches the SuperLink "
           "can join the run")


def local_run(argv: list[str], nodes: int | None = None):
    """The config, the work directory and the ServerApp's run config of `CONF [key=value ...]` on a local
    federation; the run directory gets its name now (run_name), so that the sites sit beside it in
    RUN_DIR.flower/. Raises ConfigError / DataError before anything is written."""
    conf, overrides = argv[0], list(argv[1:])
    cfg = load_config([f"conf={conf}", *overrides, "federation.protocol=per_round"])
    if nodes is not None and nodes != len(cfg.clients):
        raise ConfigError(f"config key 'clients': {len(cfg.clients)} clients ({', '.join(cfg.clients)}), "
                          f"but N={nodes} SuperNodes: one SuperNode per client")
    run_dir = run_dir_for(cfg)
    overrides = [a for a in overrides if not a.startswith(("run_name=", "output_dir="))] + [
        f"output_dir={run_dir.parent.absolute()}", f"run_name={run_dir.name}"]  # the ServerApp runs elsewhere
    work = run_dir.with_name(run_dir.name + ".flower").absolute()
    run_config = {"conf": str(resolve_conf_path(conf).absolute()), "server-data": str(work / "sites" / "server"),
                  "overrides": " ".join(overrides)}
    return cfg, run_dir.absolute(), work, run_config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    opts = {"host": "127.0.0.1", "tls": False, "insecure_ok": False}
    no_auth = False
    while argv and argv[0].startswith("--"):
        flag = argv.pop(0)
        if flag == "--host" and argv:
            opts["host"] = argv.pop(0)
        elif flag in ("--tls", "--insecure"):
            opts["tls" if flag == "--tls" else "insecure_ok"] = True
        elif flag == "--no-auth":
            no_auth = True
        else:
            argv = []
    if len(argv) < 2 or not argv[1].isdigit():
        print(USAGE, file=sys.stderr)
        return 2
    if not opts["tls"] and not opts["insecure_ok"] and not is_loopback(opts["host"]):
        print(f"error: --host {opts['host']} is not a loopback address: serve it with --tls, or pass --insecure "
              "to accept plaintext on the network", file=sys.stderr)
        return 2
    if no_auth and not opts["tls"]:
        print("error: --no-auth is for --tls (without TLS there is no SuperNode authentication to turn off)",
              file=sys.stderr)
        return 2
    try:
        cfg, run_dir, work, run_config = local_run([argv[0], *argv[2:]], int(argv[1]))
        if run_dir.exists() and not cfg.resume and not cfg.overwrite:
            raise ConfigError(f"{run_dir} already holds a run: resume=true continues it, overwrite=true replaces it")
        nodes = prepare_sites(cfg, work / "sites")
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if no_auth:
        print(NO_AUTH, file=sys.stderr, flush=True)
    with LocalFederation(work, APP_DIR, list(nodes.values()), env=FAST_POLL, supernode_auth=opts["tls"] and not no_auth,
                         **opts) as fed:
        fed.start(timeout_s=120)
        auth = ", authenticated (keys: " + str(fed.workdir / "keys") + ")" if fed.supernode_auth else ""
        print(f"federation: SuperLink {fed.address}, {len(nodes)} SuperNodes{auth} (logs: {fed.log_dir})", flush=True)
        outcome = fed.run(run_config, timeout_s=float(os.environ.get("LADALIT_FLOWER_RUN_TIMEOUT_S", 86400)))
        status = fed.run_status(outcome.run_id)["runs"][0]["status"] if outcome.run_id is not None else "?"
    print(outcome.log.rstrip())
    if not status.startswith("finished:completed"):
        print(f"error: the Flower run ended {status} (ServerApp log: {outcome.log_path}); the federation is stopped",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
