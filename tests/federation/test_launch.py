"""The local launcher refuses what it must before starting anything: a non-loopback address without TLS, bad
arguments; node configs are quoted for flower-supernode. A federation running LaDa, a dead node and that
nothing is left running: tests/federation/test_flower.py. TLS with SuperNode authentication, an unregistered
node refused, restarts: tests/federation/test_deployment.py (marker deployment, outside the default run)."""
import os
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from launch.local_federation import LocalFederation, config_arg  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "launch" / "flower_app"


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _children() -> set[int]:
    """Live child processes of this (pytest) process."""
    out = set()
    for tid in os.listdir("/proc/self/task"):
        out |= {int(c) for c in Path(f"/proc/self/task/{tid}/children").read_text().split()}
    return {p for p in out if _pid_alive(p)}


@pytest.mark.parametrize("host", ["10.1.2.3", "0.0.0.0", "example.org"])
def test_refuses_non_loopback_without_tls(tmp_path, host):
    before = _children()
    with pytest.raises(ValueError, match="tls=True.*insecure_ok=True"):
        LocalFederation(tmp_path / "fed", APP, [{"name": "x"}], host=host)
    assert not (tmp_path / "fed").exists()
    assert _children() - before == set()
    # the explicit switches are accepted (nothing starts until start())
    LocalFederation(tmp_path / "fed", APP, [{"name": "x"}], host=host, tls=True)
    LocalFederation(tmp_path / "fed", APP, [{"name": "x"}], host=host, insecure_ok=True)
    assert not (tmp_path / "fed").exists()


def test_config_arg_quoting():
    assert config_arg({"name": "a b", "i": 3, "x": 0.5, "ok": True}) == 'name="a b" i=3 x=0.5 ok=true'
    assert config_arg({"p": 'say "hi"'}) == "p='say \"hi\"'"
    with pytest.raises(ValueError):
        config_arg({"p": "both ' and \""})
    with pytest.raises(ValueError):
        config_arg({"bad key": 1})


@pytest.mark.parametrize("argv,line", [
    (["--host", "0.0.0.0", "conf/smoke.yaml", "2"], "error: --host 0.0.0.0 is not a loopback address"),
    (["conf/smoke.yaml", "3"], "error: config key 'clients': 2 clients (client1, client2), but N=3 SuperNodes"),
    (["conf/smoke.yaml", "two"], "usage: launch/flower_local.sh"),
    (["conf/smoke.yaml", "2", "rounds=0"], "error: config key 'rounds': value 0 out of range"),
])
def test_launcher_refuses_bad_arguments_before_starting_anything(tmp_path, capsys, argv, line):
    from launch.flower_local import main
    before = _children()
    assert main([*argv, f"output_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err.startswith(line)
    assert list(tmp_path.iterdir()) == [] and _children() - before == set()


def test_tls_authenticates_the_supernodes_unless_told_not_to(tmp_path):
    # LocalFederation: with TLS, SuperNode authentication is on unless switched off; without TLS it cannot be
    assert LocalFederation(tmp_path / "a", APP, [{"name": "x"}], tls=True).supernode_auth is True
    assert LocalFederation(tmp_path / "b", APP, [{"name": "x"}], tls=True, supernode_auth=False).supernode_auth is False
    assert LocalFederation(tmp_path / "c", APP, [{"name": "x"}]).supernode_auth is False
    with pytest.raises(ValueError, match="supernode_auth needs tls=True"):
        LocalFederation(tmp_path / "d", APP, [{"name": "x"}], supernode_auth=True)


class _Started(Exception):
    pass


@pytest.mark.parametrize("flags,auth,said", [(["--tls"], True, ""), (["--tls", "--no-auth"], False, "NO_AUTH"),
                                             ([], False, "")])
def test_launcher_passes_auth_and_says_when_it_is_off(tmp_path, capsys, monkeypatch, flags, auth, said):
    """The launcher's choice reaches LocalFederation (the federation itself: tests/federation/test_deployment.py,
    marker deployment); --no-auth is said in one line."""
    from launch import flower_local as launch
    seen = {}

    class Fake:
        def __init__(self, *a, **kw):
            seen.update(kw)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def start(self, **kw):
            raise _Started

    monkeypatch.setattr(launch, "LocalFederation", Fake)
    with pytest.raises(_Started):
        launch.main([*flags, "conf/smoke.yaml", "2", f"output_dir={tmp_path}"])
    assert seen["supernode_auth"] is auth and seen["tls"] is bool(flags)
    err = capsys.readouterr().err
    assert err == (launch.NO_AUTH + "\n" if said else "")


def test_no_auth_without_tls_is_refused_before_anything_starts(tmp_path, capsys):
    from launch.flower_local import main
    before = _children()
    assert main(["--no-auth", "conf/smoke.yaml", "2", f"output_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err.startswith("error: --no-auth is for --tls")
    assert list(tmp_path.iterdir()) == [] and _children() - before == set()
