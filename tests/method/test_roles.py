"""The roles: the server reaches the clients only through its transport, a client refuses messages of
another round, and LaDa's loop reads as Algorithm 1 (short functions, shallow nesting)."""
import ast
import gc
import types
from pathlib import Path

import pytest

from ladalit.core.channel import Channel
from ladalit.core.config import load_config
from ladalit.core.experiment import build_experiment
from ladalit.core.messages import BeginRound, ProtocolError, SelectCandidates
from ladalit.core.transport import InProcess
from ladalit.method import lada
from ladalit.method.client import LadaClient
from ladalit.core.progress import Progress

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def roles(tmp_path_factory):
    cfg = load_config(["conf=smoke.yaml", f"output_dir={tmp_path_factory.mktemp('runs')}"])
    exp = build_experiment(cfg)
    server, clients = lada.build_roles(exp, Channel(), Progress(quiet=True))
    return exp, server, clients


def reachable(root, stop) -> list:
    """Every object reachable from `root` through references, not walking into `stop`."""
    seen, todo, out = {id(stop)}, [root], []
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType, types.MethodType,
                                                types.BuiltinFunctionType)):
            continue  # code and modules lead everywhere; data is what the role holds
        seen.add(id(obj))
        out.append(obj)
        todo.extend(gc.get_referents(obj))
    return out


def test_the_server_role_reaches_no_client_object_and_no_private_record(roles):
    exp, server, clients = roles
    assert isinstance(server.transport, InProcess) and set(server.transport.names) == set(exp.clients)
    objects = reachable(server, stop=server.transport)
    ids = {id(o) for o in objects}
    assert not [o for o in objects if isinstance(o, LadaClient)]
    assert all(id(p) not in ids for p in exp.clients.values())  # no client participant (φ_k)
    private = [x for c in exp.data.clients for x in (*c.train, *c.test)]
    assert private and all(id(x) not in ids for x in private)
    assert id(exp) not in ids and id(exp.data) not in ids
    assert id(exp.server) in ids  # the walk does see what the server owns: the check can fail
    # ... and from the transport on, the clients are reachable: the walk would have found them
    assert any(isinstance(o, LadaClient) for o in reachable(server, stop=None))


def test_a_client_refuses_a_message_of_another_round(roles):
    _, _, clients = roles
    client = clients["client1"]
    with pytest.raises(ProtocolError, match=r"client 'client1' is in round 0, got 'select_candidates' for round 2"):
        client.handle(SelectCandidates(2, 0, []))
    with pytest.raises(ProtocolError, match=r"client 'client1' finished round 0, the server starts round 2"):
        client.handle(BeginRound(2))


def _depth(node, level=0) -> int:
    blocks = (ast.For, ast.While, ast.If, ast.With, ast.Try)
    deeper = [_depth(c, level + isinstance(c, blocks)) for c in ast.iter_child_nodes(node)
              if not isinstance(c, (ast.FunctionDef, ast.Lambda))]
    return max([level, *deeper])


@pytest.mark.parametrize("module", ["ladalit/method/lada.py", "ladalit/method/client.py", "ladalit/method/exchange.py"])
def test_the_loop_is_short_functions_with_at_most_three_levels_of_nesting(module):
    tree = ast.parse((ROOT / module).read_text())
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    assert len(functions) > 10
    long = {f.name: f.end_lineno - f.lineno + 1 for f in functions if f.end_lineno - f.lineno + 1 > 40}
    deep = {f.name: _depth(f) for f in functions if _depth(f) > 3}
    assert not long and not deep, (long, deep)


def test_the_module_docstring_maps_every_block_to_a_function_that_exists():
    import importlib
    doc = lada.__doc__
    assert all(block in doc for block in "❶❷❸❹❺❻❼")
    names = [n.strip() for part in doc.split("[")[1:] for n in part.split("]")[0].split(",")]
    assert len(names) >= 12
    for name in names:
        head, _, rest = name.partition(".")
        module = head if head in ("client", "pair", "distill", "exchange") else "lada"
        target = importlib.import_module(f"ladalit.method.{module}")
        for part in (rest if module != "lada" else name).split("."):
            target = getattr(target, part)  # AttributeError: the docstring names a function that is not there
        assert callable(target), name


def test_mard_updates_run_at_mard_lr_scale_times_train_lr_and_resume_so(tmp_path):
    """lada.mard_lr_scale: the reference SFT runs at train.lr, the MARD optimizer (made after the reference is
    frozen, and again when a checkpoint is loaded) at train.lr × the scale."""
    cfg = load_config(["conf=smoke.yaml", f"output_dir={tmp_path}", "lada.mard_lr_scale=0.25"])
    exp = build_experiment(cfg)
    _, clients = lada.build_roles(exp, Channel(), Progress(quiet=True))
    client = next(iter(clients.values()))
    sft_lrs = []
    real = client.participant.configure_optimizers
    client.participant.configure_optimizers = lambda lr=None: sft_lrs.append(lr) or real(lr)
    client.handle(BeginRound(1))
    lr = client.participant.train_cfg.lr
    assert sft_lrs == [None, lr * 0.25]  # the reference SFT's optimizer at train.lr, then MARD's
    assert [g["lr"] for g in client.optimizer.param_groups] == [pytest.approx(lr * 0.25)]
    state = client.state_dict()
    client.optimizer = None
    client.load_state_dict(state)
    assert sft_lrs[2:] == [lr * 0.25]  # made afresh at the scaled rate, not only restored from the saved state
    assert [g["lr"] for g in client.optimizer.param_groups] == [pytest.approx(lr * 0.25)]
