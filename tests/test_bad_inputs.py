"""A table of bad inputs: each goes through the CLI's `main(argv)` in-process and must end with exit 2,
at most 3 lines on stderr, no traceback, and a message naming the key, file or line. A few real
subprocesses prove the exit codes (2, and 130 for SIGINT)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from ladalit.reporting import report

from ladalit import run
from ladalit.core.config import ParticipantConfig, RunConfig, load_config
from ladalit.core.run_identity import CHECKPOINT, FINGERPRINT

BASE = ["conf=smoke.yaml", "quiet=true", "rounds=1", "eval.shots=[0]", "output_dir={tmp}/runs", "run_name=r"]
AQUA_ROW = {"question": "What is 1 + {n}?", "options": ["A)1", "B)2", "C)3", "D)4", "E)5"], "rationale": "r",
            "correct": "B"}
CSQA_ROW = {"answerKey": "A", "id": "q1", "question": {"question_concept": "fish", "stem": "Where do fish live?",
            "choices": [{"label": L, "text": t} for L, t in zip("ABCDE", ("sea", "sky", "sand", "shop", "moon"))]}}


def aqua_lines(n: int) -> str:
    return "".join(json.dumps({**AQUA_ROW, "question": f"What is 1 + {i}?"}) + "\n" for i in range(n))


@dataclass
class Case:
    name: str
    args: list[str]  # "{tmp}" is the case's tmp_path
    expect: str  # a substring of the one error line ("{tmp}" formatted)
    files: dict[str, str | bytes] = field(default_factory=dict)
    setup: Callable | None = None  # setup(tmp_path, monkeypatch, finished_run_dir)
    base: bool = True  # prepend BASE
    cli: str = "run"  # run | report


def finished(tmp, mp, done):
    shutil.copytree(done, tmp / "runs" / "r")


def finished_then(fn):
    def setup(tmp, mp, done):
        finished(tmp, mp, done)
        fn(tmp / "runs" / "r")
    return setup


def truncate_checkpoint(d):
    data = (d / CHECKPOINT).read_bytes()
    (d / CHECKPOINT).write_bytes(data[: len(data) // 2])


def reshape_a_weight(d):
    ckpt = torch.load(d / CHECKPOINT, weights_only=False)
    sd = ckpt["state"]["participants"]["client1"]
    key = next(k for k, v in sd.items() if v.dim() == 2)
    sd[key] = torch.zeros(sd[key].shape[0] + 1, sd[key].shape[1])
    torch.save(ckpt, d / CHECKPOINT)


def drop_a_participant(d):
    ckpt = torch.load(d / CHECKPOINT, weights_only=False)
    del ckpt["state"]["participants"]["client2"]
    torch.save(ckpt, d / CHECKPOINT)


def not_a_checkpoint(d):
    torch.save({"hello": 1}, d / CHECKPOINT)


def change_code_version(d):
    fp = json.loads((d / FINGERPRINT).read_text())
    fp["code"] = "0000000000000000"
    (d / FINGERPRINT).write_text(json.dumps(fp))


def hub_dataset_unreachable(tmp, mp, done):
    import datasets

    def unreachable(*a, **kw):
        raise ConnectionError("Couldn't reach 'deepmind/aqua_rat' on the Hub (LocalEntryNotFoundError)")
    mp.setattr(datasets, "load_dataset", unreachable)


def hub_model_unreachable(tmp, mp, done):
    from ladalit.core import experiment
    def unreachable(*a, **kw):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them "
                      "in the cached files.\nCheck your internet connection")
    mp.delenv("HF_HUB_OFFLINE", raising=False)
    mp.setattr(experiment, "build_model", unreachable)


def no_gpu(mp):
    from lightning.fabric.accelerators import CUDAAccelerator
    mp.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))


def results_file(content):
    def setup(tmp, mp, done):
        (tmp / "run").mkdir()
        (tmp / "run" / "results.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return setup


GOOD_ACC = {"round": 1, "participant": "c", "role": "client", "shots": 0, "accuracy": 0.5, "invalid_rate": 0.0}

CASES = [
    # ------------------------------------------------------------------ keys, types, ranges, choices
    Case("unknown key", ["foo=1"], "unknown config key 'foo'"),
    Case("typo in a section", ["reward.alph=0.5"], "unknown config key 'reward.alph'"),
    Case("typo inside a client", ["clients.client1.modle.arch=llama"], "unknown config key 'clients.client1.modle'"),
    Case("not an integer", ["rounds=abc"], "config key 'rounds'"),
    Case("float for an int", ["seed=1.5"], "config key 'seed'"),
    Case("not a bool", ["quiet=maybe"], "config key 'quiet'"),
    Case("empty value", ["rounds="], "config key 'rounds'"),
    Case("no =", ["rounds"], "argument 'rounds': expected key=value"),
    Case("rounds 0", ["rounds=0"], "config key 'rounds': value 0 out of range [1, inf]"),
    Case("negative seed", ["seed=-1"], "config key 'seed': value -1 out of range"),
    Case("alpha above 1", ["reward.alpha=1.5"], "config key 'reward.alpha': value 1.5 out of range [0.0, 1.0]"),
    Case("moved key beta", ["beta=0.5"], "config key 'beta' moved to 'lada.beta'"),
    Case("moved key filter (an old ablation)", ["filter=none"], "config key 'filter' moved to 'lada.filter'"),
    Case("moved key in a config file", ["conf={tmp}/c.yaml"], "config key 'n_c' moved to 'lada.n_c'",
         files={"c.yaml": "rounds: 1\nn_c: 8\n"}, base=False),
    Case("unknown LaDa loss", ["lada.loss=kl"], "config key 'lada.loss': unknown value 'kl' (allowed: mard, ce)"),
    Case("zero candidate batch", ["lada.n_c=0"], "config key 'lada.n_c': value 0 out of range [1, inf]"),
    Case("prototype fraction above 1", ["lada.init_fraction=1.5"], "config key 'lada.init_fraction': value 1.5"),
    Case("nan learning rate", ["server.train.lr=nan"], "config key 'server.train.lr': value nan is not a finite"),
    Case("negative learning rate", ["clients.client1.train.lr=-1"], "config key 'clients.client1.train.lr'"),
    Case("unknown method", ["method=fedavg"], "config key 'method': unknown value 'fedavg'"),
    Case("unknown data set", ["data.name=mnist"], "config key 'data.name': unknown value 'mnist'"),
    Case("unknown arch", ["clients.client1.model.arch=gpt2"], "config key 'clients.client1.model.arch'"),
    Case("tpu accelerator", ["fabric.accelerator=tpu"], "config key 'fabric.accelerator': unknown value 'tpu'"),
    Case("unknown precision", ["fabric.precision=8-bit"], "config key 'fabric.precision': unknown value '8-bit'"),
    Case("zero devices", ["fabric.devices=0"], "config key 'fabric.devices': value 0 out of range"),
    Case("cuda without a GPU", ["fabric.accelerator=cuda"], "config key 'fabric.accelerator': accelerator=cuda",
         setup=lambda tmp, mp, done: no_gpu(mp)),
    Case("zero records", ["data.synthetic.num_records=0"], "config key 'data.synthetic.num_records': value 0"),
    Case("negative records", ["data.synthetic.num_records=-5"], "config key 'data.synthetic.num_records': value -5"),
    Case("min_steps > max_steps", ["data.synthetic.min_steps=3"], "config key 'data.synthetic.min_steps': 3 is above"),
    Case("zero hidden size", ["server.model.hidden_size=0"], "config key 'server.model.hidden_size': value 0"),
    Case("negative hidden size", ["clients.client2.model.hidden_size=-8"], "config key 'clients.client2.model.hidden_size'"),
    Case("zero layers", ["server.model.num_layers=0"], "config key 'server.model.num_layers': value 0"),
    Case("zero heads", ["server.model.num_heads=0"], "config key 'server.model.num_heads': value 0"),
    Case("hidden not a multiple of heads", ["server.model.hidden_size=63"],
         "config key 'server.model.hidden_size': 63 is not a multiple of num_heads 4"),
    Case("heads not a multiple of kv heads", ["server.model.num_kv_heads=3"],
         "config key 'server.model.num_heads': 4 is not a multiple of num_kv_heads 3"),
    Case("zero MLP width", ["clients.client1.model.intermediate_size=0"], "'clients.client1.model.intermediate_size'"),
    Case("LoRA dropout 2", ["clients.client2.model.lora.dropout=2"], "'clients.client2.model.lora.dropout': value 2.0"),
    Case("zero max_length", ["server.train.max_length=0"], "config key 'server.train.max_length': value 0"),
    Case("zero train batch", ["server.train.batch_size=0"], "config key 'server.train.batch_size': value 0"),
    Case("zero filter hidden", ["filter_net.hidden=0"], "config key 'filter_net.hidden': value 0"),
    Case("zero filter batch", ["filter_net.batch_size=0"], "config key 'filter_net.batch_size': value 0"),
    Case("zero replay buffer", ["filter_net.buffer_size=0"], "config key 'filter_net.buffer_size': value 0"),
    Case("max_select below min", ["filter_net.max_select=0"], "config key 'filter_net.max_select'"),
    Case("zero eval batch", ["eval.batch_size=0"], "config key 'eval.batch_size': value 0"),
    Case("negative eval batch", ["eval.batch_size=-1"], "config key 'eval.batch_size': value -1"),
    Case("zero eval limit", ["eval.limit=0"], "config key 'eval.limit': value 0"),
    Case("zero generation batch", ["generation.batch_size=0"], "config key 'generation.batch_size': value 0"),
    Case("zero generation tokens", ["generation.max_new_tokens=0"], "config key 'generation.max_new_tokens'"),
    Case("five shots", ["eval.shots=[5]"], "config key 'eval.shots': [5]"),
    Case("no shots", ["eval.shots=[]"], "config key 'eval.shots': []"),
    Case("repeated shots", ["eval.shots=[0,0]"], "config key 'eval.shots': [0, 0]"),
    Case("shots not a list", ["eval.shots=3"], "config key 'eval.shots'"),
    Case("zero per client", ["data.train_per_client=0"], "config key 'data.train_per_client': value 0"),
    Case("one option", ["data.num_options=1"], "config key 'data.num_options': value 1"),
    Case("a client as a number", ["clients.client1=5"], "config key 'clients.client1'"),
    Case("clients as a list", ["clients=[a]"], "config key 'clients'"),
    Case("a section as a number", ["server.model=3"], "config key 'server.model'"),
    Case("hub without a name", ["server.model.source=hub"], "config key 'server.model.name_or_path': required"),
    Case("fsdp2 without LoRA", ["fabric.strategy=fsdp2"], "config key 'server.model.lora.enabled'"),
    Case("unimportable encoder", ["filter_net.encoder=nosuch.module:Enc"], "config key 'filter_net.encoder'"),
    Case("class path of the wrong kind", ["filter_net.class_path=ladalit.core.encoder:HashingEncoder"],
         "config key 'filter_net.class_path'"),
    Case("data.path with synthetic data", ["data.path={tmp}/x.jsonl"], "config key 'data.path': not used"),
    Case("run_name a path", ["run_name=../elsewhere"], "config key 'run_name'"),
    Case("resume without run_name", ["conf=smoke.yaml", "resume=true"], "config key 'run_name'", base=False),
    Case("resume and overwrite", ["resume=true", "overwrite=true"], "config key 'overwrite'"),
    # ------------------------------------------------------------------ config files
    Case("no such conf file", ["conf=nope.yaml"], "conf=nope.yaml: no such file", base=False),
    Case("YAML syntax error", ["conf={tmp}/c.yaml"], "{tmp}/c.yaml:3:1: not valid YAML",
         files={"c.yaml": "rounds: 2\nseed: [1\n"}, base=False),
    Case("YAML duplicate key", ["conf={tmp}/c.yaml"], "{tmp}/c.yaml:2:1: not valid YAML: found duplicate key rounds",
         files={"c.yaml": "rounds: 2\nrounds: 3\n"}, base=False),
    Case("YAML list file", ["conf={tmp}/c.yaml"], "{tmp}/c.yaml: expected a mapping of config keys",
         files={"c.yaml": "- rounds: 2\n- seed: 1\n"}, base=False),
    Case("YAML scalar file", ["conf={tmp}/c.yaml"], "{tmp}/c.yaml: expected a mapping of config keys",
         files={"c.yaml": "just a string\n"}, base=False),
    Case("YAML clients list", ["conf={tmp}/c.yaml"], "{tmp}/c.yaml: config key 'clients': expected a mapping",
         files={"c.yaml": "clients:\n  - a\n  - b\n"}, base=False),
    Case("YAML client a scalar", ["conf={tmp}/c.yaml"], "{tmp}/c.yaml: config key 'clients.a': expected a mapping",
         files={"c.yaml": "clients:\n  a: 5\n"}, base=False),
    Case("YAML unknown key", ["conf={tmp}/c.yaml"], "unknown config key 'roundz'",
         files={"c.yaml": "roundz: 2\n"}, base=False),
    Case("YAML not UTF-8", ["conf={tmp}/c.yaml"], "{tmp}/c.yaml: not UTF-8 text",
         files={"c.yaml": b"rounds: 2\nrun_name: caf\xe9\n"}, base=False),
    # ------------------------------------------------------------------ data files
    Case("data file missing", ["data.name=aqua", "data.path={tmp}/none.jsonl"], "{tmp}/none.jsonl: field 'data.path': no such file"),
    Case("data path a directory", ["data.name=aqua", "data.path={tmp}"], "{tmp}: field 'data.path': is a directory"),
    Case("data file empty", ["data.name=aqua", "data.path={tmp}/d.jsonl"], "{tmp}/d.jsonl: field '(records)': no multiple-choice",
         files={"d.jsonl": ""}),
    Case("data file only blank lines", ["data.name=commonsenseqa", "data.path={tmp}/d.jsonl"], "{tmp}/d.jsonl: field '(records)'",
         files={"d.jsonl": "\n\n  \n"}),
    Case("data file bad JSON", ["data.name=aqua", "data.path={tmp}/d.jsonl"], "{tmp}/d.jsonl:2: field '(json)': invalid JSON",
         files={"d.jsonl": aqua_lines(1) + "{not json\n"}),
    Case("data row missing a field", ["data.name=aqua", "data.path={tmp}/d.jsonl"], "{tmp}/d.jsonl:3: field 'correct': missing",
         files={"d.jsonl": aqua_lines(2) + json.dumps({k: v for k, v in AQUA_ROW.items() if k != "correct"}) + "\n"}),
    Case("data row a list", ["data.name=mathinstruct", "data.path={tmp}/d.json"], "{tmp}/d.json:1: field '(json)'",
         files={"d.json": "[[1, 2]]"}),
    Case("data file not UTF-8", ["data.name=aqua", "data.path={tmp}/d.jsonl"], "{tmp}/d.jsonl:2: field '(file)': not UTF-8",
         files={"d.jsonl": aqua_lines(1).encode() + b'{"question": "caf\xe9"}\n'}),
    Case("too few records for the split", ["data.name=aqua", "data.path={tmp}/d.jsonl"],
         "config keys 'data.train_per_client', 'data.test_per_client', 'data.public_size': the split needs 80 records",
         files={"d.jsonl": aqua_lines(5)}),
    Case("duplicate ids", ["data.name=commonsenseqa", "data.path={tmp}/d.jsonl"],
         "{tmp}/d.jsonl:2: field 'id': duplicate id 'q1' (first at line 1)",
         files={"d.jsonl": json.dumps(CSQA_ROW) + "\n" + json.dumps({**CSQA_ROW, "answerKey": "B"}) + "\n"}),
    Case("more options than the data has", ["data.num_options=5"], "config key 'data.num_options': 5"),
    Case("hub data set unreachable", ["data.name=aqua"], "deepmind/aqua_rat: field 'data.hub_id': cannot load",
         setup=hub_dataset_unreachable),
    Case("hub model unreachable", ["server.model.source=hub", "server.model.name_or_path=Qwen/Qwen3-0.6B"],
         "config key 'server.model.name_or_path': 'Qwen/Qwen3-0.6B' could not be loaded", setup=hub_model_unreachable),
    Case("local model path missing", ["server.model.source=hub", "server.model.name_or_path={tmp}/no/model"],
         "config key 'server.model.name_or_path': local path '{tmp}/no/model' does not exist"),
    # ------------------------------------------------------------------ output and run directories
    Case("output_dir a file", ["output_dir={tmp}/f"], "config key 'output_dir': {tmp}/f is a file", files={"f": "x"}),
    Case("output_dir below a file", ["output_dir={tmp}/f/runs"], "config key 'output_dir': {tmp}/f is a file",
         files={"f": "x"}),
    Case("run dir a file", [], "config key 'run_name': {tmp}/runs/r is a file", files={"runs/r": "x"}),
    Case("reused run name", [], "{tmp}/runs/r already holds a run: resume=true continues it, overwrite=true replaces it",
         setup=finished),
    Case("overwrite a directory that is not a run", ["overwrite=true"], "{tmp}/runs/r is not a ladalit run directory",
         files={"runs/r/notes.txt": "mine"}),
    Case("resume a run that does not exist", ["resume=true"], "resume=true: {tmp}/runs/r has no run"),
    Case("resume without a checkpoint", ["resume=true", "rounds=2"], "{tmp}/runs/r has no checkpoint.pt",
         setup=finished_then(lambda d: (d / CHECKPOINT).unlink())),
    Case("resume a complete run", ["resume=true"], "{tmp}/runs/r is complete (1 of 1 rounds)", setup=finished),
    Case("resume with another seed", ["resume=true", "rounds=2", "seed=5"], "seed: 0 -> 5", setup=finished),
    # every method checkpoints (ladalit/registry.py), so resuming with another method is a config difference
    Case("resume with another method", ["resume=true", "rounds=2", "method=fedmkt"], "method: 'lada' -> 'fedmkt'",
         setup=finished),
    Case("resume with another data set", ["resume=true", "rounds=2", "data.name=commonsenseqa"],
         "data.name: 'synthetic' -> 'commonsenseqa'", setup=finished),
    Case("resume with another architecture", ["resume=true", "rounds=2", "server.model.hidden_size=32"],
         "server.model.hidden_size: 64 -> 32", setup=finished),
    Case("resume with a client added", ["resume=true", "rounds=2", "clients.client3.model.hidden_size=32"],
         "clients.client3: added", setup=finished),
    Case("resume with other code", ["resume=true", "rounds=2"], "code version: 0000000000000000 ->",
         setup=finished_then(change_code_version)),
    Case("resume without a fingerprint", ["resume=true", "rounds=2"], f"{{tmp}}/runs/r/{FINGERPRINT} is missing",
         setup=finished_then(lambda d: (d / FINGERPRINT).unlink())),
    Case("truncated checkpoint", ["resume=true", "rounds=2"], "{tmp}/runs/r/checkpoint.pt: cannot be read, truncated or corrupt",
         setup=finished_then(truncate_checkpoint)),
    Case("not a checkpoint", ["resume=true", "rounds=2"], "{tmp}/runs/r/checkpoint.pt: not a ladalit checkpoint",
         setup=finished_then(not_a_checkpoint)),
    Case("checkpoint of another architecture", ["resume=true", "rounds=2"],
         "{tmp}/runs/r/checkpoint.pt: participant 'client1' weight", setup=finished_then(reshape_a_weight)),
    Case("checkpoint missing a participant", ["resume=true", "rounds=2"],
         "{tmp}/runs/r/checkpoint.pt: holds participants ['client1', 'server']", setup=finished_then(drop_a_participant)),
    # ------------------------------------------------------------------ python -m ladalit.reporting.report
    Case("report: no results.json", ["{tmp}"], "{tmp}: no results.json", base=False, cli="report"),
    Case("report: not JSON", ["{tmp}/run"], "{tmp}/run/results.json: not valid JSON", base=False, cli="report",
         setup=results_file("{oops")),
    Case("report: a list", ["{tmp}/run"], "{tmp}/run/results.json: expected a JSON object", base=False, cli="report",
         setup=results_file([1, 2])),
    Case("report: accuracy not a list", ["{tmp}/run"], "field 'accuracy': expected a list", base=False, cli="report",
         setup=results_file({"accuracy": {"round": 1}})),
    Case("report: accuracy row without shots", ["{tmp}/run"], "field 'accuracy[1].shots': expected int",
         base=False, cli="report",
         setup=results_file({"accuracy": [GOOD_ACC, {k: v for k, v in GOOD_ACC.items() if k != "shots"}]})),
    Case("report: bytes a string", ["{tmp}/run"], "field 'communication[0].bytes': expected a number",
         base=False, cli="report",
         setup=results_file({"communication": [{"round": 1, "client": "c", "direction": "up", "bytes": "9"}]})),
]



def schema_float_keys(cls: type, prefix: str = "") -> list[str]:
    """Every float field of the config dataclasses (Optional[float] too), read from their type hints here, so
    that a float key added to ladalit/core/config.py gets its NaN and inf cases below without anyone listing it.
    A participant's keys (ParticipantConfig: server, clients.NAME) come as "server.X"."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if typing.get_origin(tp) is dict:  # clients (ParticipantConfig, as server), data.mixture's share maps, a
            # class's own settings (checked against its __init__, NaN and inf too: tests/method/test_filter.py), or a
            # map of whole numbers (no float can enter it: OmegaConf refuses one for an int)
            assert typing.get_args(tp)[1] is ParticipantConfig or f"{prefix}{f.name}" in MAP_FLOAT_KEYS \
                or f"{prefix}{f.name}" in CLASS_SETTINGS or typing.get_args(tp)[1] is int, f.name
            continue
        if dataclasses.is_dataclass(tp):
            keys += schema_float_keys(tp, f"{prefix}{f.name}.")
        elif tp is float or float in typing.get_args(tp):
            keys.append(f"{prefix}{f.name}")
    return keys


CLASS_SETTINGS = {"filter_net.init_args"}
# float maps, with the overrides that make a case of one share (every client needs a train mixture)
MAP_FLOAT_KEYS = {
    "data.mixture.train": ("data.mixture.train.client1.shared={v}", "data.mixture.train.client2.shared=1.0"),
    "data.mixture.test": ("data.mixture.train.client1.shared=1.0", "data.mixture.train.client2.shared=1.0",
                          "data.mixture.test.client1.shared={v}"),
    "data.mixture.public": ("data.mixture.train.client1.shared=1.0", "data.mixture.train.client2.shared=1.0",
                            "data.mixture.public.shared={v}"),
}
FLOAT_KEYS = schema_float_keys(RunConfig)


def float_cases() -> list[Case]:
    """NaN, inf and -inf for every float key, each refused before anything is written. A participant's key is
    tried on the server (nan) and on a client (the infinities), to cover both places it lives."""
    cases = []
    for key in FLOAT_KEYS:
        for value in ("nan", "inf", "-inf"):
            where = "clients.client1." + key.removeprefix("server.") if key.startswith("server.") and value != "nan" \
                else key
            cases.append(Case(f"{where}={value}", [f"{where}={value}"],
                              f"config key '{where}': value {value} is not a finite number"))
    for key, overrides in MAP_FLOAT_KEYS.items():
        for value in ("nan", "inf", "-inf"):
            args = [o.format(v=value) for o in overrides]
            bad = next(a for a in args if a.endswith(f"={value}")).split("=")[0]
            cases.append(Case(f"{bad}={value}", args, f"config key '{bad}': share {value} is not a number in [0, 1]"))
    return cases


CASES += float_cases()

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished 1-round smoke run; cases copy it."""
    out = tmp_path_factory.mktemp("finished")
    run_dir, _ = run.execute(load_config([a.format(tmp=out) for a in BASE]), quiet=True)
    return run_dir


def digest(run_dir: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_clear_line_and_exit_2(case, tmp_path, capsys, monkeypatch, request):
    for name, content in case.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            (tmp_path / name).write_text(content)
    needs_run = case.setup is finished or getattr(case.setup, "__qualname__", "").startswith("finished_then")
    done = request.getfixturevalue("finished_run") if needs_run else None
    if case.setup is not None:
        case.setup(tmp_path, monkeypatch, done)
    run_dir = tmp_path / "runs" / "r"
    before = digest(run_dir) if run_dir.is_dir() else None
    existed = run_dir.exists()
    argv = [a.format(tmp=tmp_path) for a in ((BASE if case.base else []) + case.args)]
    main = run.main if case.cli == "run" else report.main
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert 1 <= len(lines) <= 3, err
    assert lines[-1].startswith("error: "), err
    assert case.expect.format(tmp=tmp_path) in lines[-1], err
    if before is not None:  # a refusal changes nothing in the run dir
        assert digest(run_dir) == before
    elif not existed:  # nor creates one
        assert not run_dir.exists()




def test_the_table_covers_every_category():
    assert len(CASES) >= 60
    assert len(FLOAT_KEYS) >= 20 and "filter_net.tau" in FLOAT_KEYS and "server.train.lr" in FLOAT_KEYS
    for key in FLOAT_KEYS:  # every float key: a NaN case and both infinities
        names = {c.name for c in CASES}
        other = "clients.client1." + key.removeprefix("server.") if key.startswith("server.") else key
        assert {f"{key}=nan", f"{other}=inf", f"{other}=-inf"} <= names, key
    text = " ".join(c.expect for c in CASES)
    for needle in ("unknown config key", "out of range", "unknown value", "not valid YAML", "expected a mapping",
                   "field '(json)'", "no such file", "is a directory", "duplicate id", "the split needs",
                   "hub", "already holds a run", "resume=true", "cannot be read", "weight", "results.json"):
        assert needle in text, needle


def test_a_utf8_bom_is_accepted_in_config_and_data(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_bytes(b"\xef\xbb\xbf" + Path("conf/smoke.yaml").read_bytes().replace(b"rounds: 2", b"rounds: 3"))
    assert load_config([f"conf={conf}"]).rounds == 3
    from ladalit.data.loaders import load_aqua
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + aqua_lines(2).encode())
    assert [r.question for r in load_aqua(str(data))] == ["What is 1 + 0?", "What is 1 + 1?"]


def test_duplicate_questions_are_dropped_with_a_counted_warning_and_never_split(tmp_path, caplog):
    """AQuA ids are line numbers, so a repeated row is caught by its question text."""
    from ladalit.core.experiment import load_data
    rows = aqua_lines(90).splitlines()
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(rows + rows[:7]) + "\n")  # rows 1..7 again as lines 91..97
    cfg = load_config(["conf=smoke.yaml", "data.name=aqua", f"data.path={data}"])
    with caplog.at_level("WARNING"):
        fed = load_data(cfg)
    assert f"{data}: dropped 7 of 97 records whose question repeats an earlier one" in caplog.text
    questions = [r.question for c in fed.clients for r in c.train + c.test] + [r.question for r in fed.public]
    assert len(questions) == len(set(questions)) == 80


# ------------------------------------------------------------------ real processes: exit codes
CLI = [sys.executable, "-m", "ladalit.run"]


def test_subprocess_bad_config_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([*CLI, "conf=smoke.yaml", "fabric.accelerator=tpu", f"output_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: config key 'fabric.accelerator': unknown value 'tpu' "
                                   "(allowed: auto, cpu, cuda)")
    assert not any(tmp_path.iterdir())


def test_subprocess_bad_data_exits_2_and_writes_nothing(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(aqua_lines(5))
    proc = subprocess.run([*CLI, "conf=smoke.yaml", "quiet=true", "data.name=aqua", f"data.path={data}",
                           f"output_dir={tmp_path}/runs", "run_name=r"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: config keys 'data.train_per_client'")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs" / "r").exists()


@pytest.mark.slow
def test_sigint_after_round_1_names_the_round_and_the_resume_command(tmp_path):
    args = ["conf=smoke.yaml", "rounds=3", "quiet=true", "eval.shots=[0]", f"output_dir={tmp_path}", "run_name=v"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # the child starts with SIGINT's default action, as from a terminal (a suite run as a shell's background
    # job passes it on ignored, and Python then installs no KeyboardInterrupt handler)
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ckpt = tmp_path / "v" / CHECKPOINT
    deadline = time.time() + 600
    while not ckpt.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # the round-1 results.json is written right after the checkpoint
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"interrupted after round 1 of 3 (the last complete round, in {tmp_path}/v); resume with: "
                           "python -m ladalit.run conf=smoke.yaml rounds=3 quiet=true")
    assert line.endswith("run_name=v resume=true")
    assert torch.load(ckpt, weights_only=False)["round"] == 1
