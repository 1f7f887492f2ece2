"""A client's site in a deployment: it answers the server's messages with the method's client role
(ladalit/registry.py; LaDa's: ladalit.method.client), holding its own private data, model and local state.

The client learns who it is and where its data are from its own node config, never from the server:

    name   the client's name, a key of the config's `clients`
    data   a directory with its private train.jsonl and test.jsonl (ladalit records, one JSON object a line)
    model  optional: a local Hugging Face model directory, instead of the config's model spec
    state  optional: where its local state lives (default DATA/.ladalit-state), one directory per run

A Flower ClientApp is a fresh process for every message, so the site keeps the role's whole local state
on its own disk (`current.pt`, after every message) and a copy at every round's end (`round-T.pt`). A
client round starts from the copy of the round before: a server that resumed from its last checkpoint
and a site that went on after it agree again; any other mismatch of rounds is refused (ProtocolError).
Its predictions on its private test set stay here (`predictions.jsonl`); only their scores cross: the accuracy,
and on the demo world the accuracy per (domain, chain length) that results.json's `accuracy_by_domain` reports.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

import ladalit.components  # noqa: F401  registers data sets, model sources, class-path checks
from ladalit import registry
from ladalit.core.messages import (ROUND_ENDS, ROUND_STARTS, Join, ProtocolError, Refused, RoundReport, decode,
                                   encode)
from ladalit.data.records import DataError, MCRecord, validate_record
from ladalit.data.split import ClientData
from ladalit.core.config import load_config
from ladalit.core.experiment import build_participant, make_fabric, one_shot_example, setup_participant
from ladalit.core.evaluation import evaluate
from ladalit.core.results import Results
from ladalit.demo.oracle import accuracy_by_domain, world_oracle

STATE_VERSION = 1


def write_records(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(r)) + "\n" for r in records))


def read_records(path: Path, require_answer: bool = True) -> list[MCRecord]:
    """ladalit records, one JSON object a line; a malformed one is a DataError naming the file and line."""
    if not path.is_file():
        raise DataError(str(path), None, "file", "not found")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = record_of(json.loads(line))
        except (json.JSONDecodeError, TypeError, KeyError) as err:
            raise DataError(str(path), n, "record", f"not a ladalit record ({err})") from None
        out.append(validate_record(rec, str(path), n, require_answer=require_answer))
    return out


def record_of(row: dict) -> MCRecord:
    return MCRecord(**{**row, "options": tuple(row["options"])})


def records_of(rows: list[dict]) -> list[MCRecord]:
    return [record_of(r) for r in rows]


class ClientSite:
    def __init__(self, node_config: dict):
        missing = [k for k in ("name", "data") if not node_config.get(k)]
        if missing:
            raise ValueError(f"node config: missing {', '.join(missing)} (flower-supernode --node-config "
                             "'name=\"client1\" data=\"/path/to/private\"')")
        self.node_config = dict(node_config)
        self.name, self.data = str(node_config["name"]), Path(str(node_config["data"]))
        self.model = str(node_config["model"]) if node_config.get("model") else None
        self.root = Path(str(node_config.get("state") or self.data / ".ladalit-state"))
        self.dir: Path | None = None
        # a long-lived site (ladalit.federation.worker) keeps its role between messages: (dir, role, the round
        # it ended, or None in mid-round); the state on disk is written all the same
        self.held: tuple | None = None

    # ----------------------------------------------------------------------- the entry point
    def handle_bytes(self, data: bytes) -> bytes:
        """One message in, its reply out; a message the role refuses comes back as Refused (one line)."""
        msg = decode(data)
        try:
            return encode(self.handle(msg))
        except (ProtocolError, DataError, ValueError) as err:
            return encode(Refused(msg.round, self.name, f"{type(err).__name__}: {err}"))

    def handle(self, msg):
        held, self.held = self.held, None
        if isinstance(msg, Join):
            return self.join(msg)
        self.dir = self.run_dir_of(msg)
        role = self.load(msg, held)
        reply = role.handle(msg)
        ended = isinstance(msg, ROUND_ENDS)
        if ended:  # the round's rows go back with its last reply
            cfg = role.cfg
            reply = self.report(role, msg.round, cfg.eval.every_round or msg.round == cfg.rounds)
        self.save(role, "current.pt")
        if ended:
            shutil.copyfile(self.dir / "current.pt", self.dir / f"round-{msg.round}.pt")
        self.held = (self.dir, role, msg.round if ended else None)
        return reply

    # ----------------------------------------------------------------------- the run
    def join(self, msg: Join) -> RoundReport:
        """Keep the run's config and D_p (a resumed run keeps its state); round 0: evaluate, when asked."""
        from omegaconf import OmegaConf
        cfg = OmegaConf.create(msg.config)
        if self.name not in cfg.clients:
            raise ProtocolError(f"client '{self.name}' is not in the run's clients {sorted(cfg.clients)}")
        self.dir = self.root / str(msg.run)
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.dir / "config.yaml", msg.config.encode())
        _atomic_write(self.dir / "public.json", json.dumps(msg.public).encode())
        _atomic_write(self.root / "active", str(msg.run).encode())
        if not msg.evaluate:
            return RoundReport(0, self.name, {}, {})
        return self.report(self.build(), 0, True)

    def run_dir_of(self, msg) -> Path:
        """The directory of the run this site joined last (STATE/active names it)."""
        active = self.root / "active"
        if not active.is_file():
            raise ProtocolError(f"client '{self.name}' got {msg.kind!r} before joining a run")
        return self.root / active.read_text().strip()

    def config(self):
        cfg = load_config([f"conf={self.dir / 'config.yaml'}"])
        if self.model is not None:  # the site's own copy of its model
            cfg.clients[self.name].model.source = "hub"
            cfg.clients[self.name].model.name_or_path = self.model
        return cfg

    def build(self):
        """The client role, as the process starts: config, private data, its model (Fabric-wrapped), D_p."""
        cfg = self.config()
        fabric = make_fabric(cfg)
        fabric.launch()
        fabric.seed_everything(cfg.seed, verbose=False)
        participant = setup_participant(fabric, build_participant(cfg, self.name, "client", cfg.clients[self.name]))
        private = ClientData(read_records(self.data / "train.jsonl"), read_records(self.data / "test.jsonl"))
        public = records_of(json.loads((self.dir / "public.json").read_text()))
        return client_role(cfg, fabric, self.name, participant, private, public)

    # ----------------------------------------------------------------------- local state
    def load(self, msg, held=None):
        """The role with its local state: a client round starts from the end of the round before. A role
        held in memory is used where it is exactly that state (else the state is read from disk)."""
        if held is not None and held[0] == self.dir:
            _, role, ended = held
            if isinstance(msg, ROUND_STARTS) and ended == msg.round - 1:
                return role
            if not isinstance(msg, ROUND_STARTS) and ended is None and role.round == msg.round:
                return role
        role = self.build()
        if isinstance(msg, ROUND_STARTS):
            if msg.round == 1:
                return role
            path = self.dir / f"round-{msg.round - 1}.pt"
            if not path.is_file():
                raise ProtocolError(f"client '{self.name}' has no state of round {msg.round - 1} "
                                    f"(in {self.dir}), the server starts round {msg.round}")
        else:
            path = self.dir / "current.pt"
            if not path.is_file():
                raise ProtocolError(f"client '{self.name}' got {msg.kind!r} of round {msg.round} before any round")
        role.load_state_dict(torch.load(path, weights_only=False)["role"])
        return role

    def save(self, role, name: str) -> None:
        path = self.dir / name
        torch.save({"version": STATE_VERSION, "role": role.state_dict()}, path.with_name(name + ".tmp"))
        os.replace(path.with_name(name + ".tmp"), path)

    # ----------------------------------------------------------------------- reports
    def report(self, role, round: int, evaluated: bool) -> RoundReport:
        """The round's rows of results (then forgotten here), after evaluating on the private test set when
        `evaluated`; the predictions are kept in this site's predictions.jsonl, only their scores are sent."""
        cfg = role.cfg
        if evaluated:
            test, scored = role.private.test[: cfg.eval.limit], []
            for shots in cfg.eval.shots:
                preds: list[dict] = []
                m = evaluate(role.participant, test, shots, one_shot_example(cfg), cfg.eval.max_new_tokens,
                             cfg.eval.batch_size, preds)
                role.results.add_eval(round, self.name, "client", shots, m)
                scored += [{"round": round, "participant": self.name, "shots": shots, **p} for p in preds]
                with open(self.dir / "predictions.jsonl", "a") as f:
                    f.writelines(json.dumps({"round": round, "shots": shots, **p}) + "\n" for p in preds)
            role.results.domain_scores += domain_scores(cfg, scored)
        rows = role.results.state_dict()
        role.results = Results()
        return RoundReport(round, self.name, rows, role.counters())


def domain_scores(cfg, predictions: list[dict]) -> list[dict]:
    """On the demo world, the predictions' accuracy per (domain, steps) of the test items, from the world's truth
    (ladalit.demo.oracle, regenerated once from the config, as the server's analysis does): scores, which cross
    where the predictions do not; none on other data."""
    oracle = world_oracle(cfg)
    return [] if oracle is None else accuracy_by_domain(oracle.truth, predictions)


def client_role(cfg, fabric, name: str, participant, private, public):
    """The method's client role (ladalit/registry.py)."""
    roles = registry.roles(cfg.method)
    return roles.client(cfg, fabric, name, list(cfg.clients).index(name), participant, private,
                        roles.public(cfg, public), None, None)


def _atomic_write(path: Path, data: bytes) -> None:
    path.with_name(path.name + ".tmp").write_bytes(data)
    os.replace(path.with_name(path.name + ".tmp"), path)
