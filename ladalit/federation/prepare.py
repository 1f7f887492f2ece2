"""Write the sites of a local federation from a config: the split the in-process run makes, one directory per
side, so that a deployment and the in-process run see the same data.

    SITES/server/public.jsonl   D_p (no answers)
    SITES/server/eval.jsonl     the server's evaluation set: the union of the clients' test sets (each cut to
                                eval.limit), as the in-process run scores the server; the experimenter's choice
                                for comparing the engines: a real server scores on a held-out set of its own
    SITES/<client>/train.jsonl, test.jsonl   that client's private data, for its node config `data=`

`python -m ladalit.federation.prepare SITES conf=NAME.yaml [key=value ...]` prints one node config a line.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import ladalit.components  # noqa: F401  registers data sets, model sources, class-path checks
from ladalit.core.config import ConfigError, load_config
from ladalit.data.records import DataError
from ladalit.federation.site import write_records
from ladalit.core.experiment import load_data


def prepare_sites(cfg, sites: Path) -> dict[str, dict]:
    """Write every side's files; returns each client's node config (name, data)."""
    data = load_data(cfg)
    sites = Path(sites)
    tests = [c.test[: cfg.eval.limit] for c in data.clients]
    write_records(sites / "server" / "public.jsonl", data.public)
    write_records(sites / "server" / "eval.jsonl", [x for t in tests for x in t])
    nodes = {}
    for (name, _), client in zip(cfg.clients.items(), data.clients):
        write_records(sites / name / "train.jsonl", client.train)
        write_records(sites / name / "test.jsonl", client.test)
        nodes[name] = {"name": name, "data": str((sites / name).resolve())}
    return nodes


def node_config_arg(node: dict) -> str:
    """flower-supernode --node-config's value: TOML key="value" pairs."""
    return " ".join(f'{k}="{v}"' for k, v in node.items())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        print("usage: python -m ladalit.federation.prepare SITES conf=NAME.yaml [key=value ...]", file=sys.stderr)
        return 2
    try:
        nodes = prepare_sites(load_config(argv[1:]), Path(argv[0]))
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for node in nodes.values():
        print(shlex.quote(node_config_arg(node)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
