"""LocalFederation on localhost: TLS (the echo app), the refusal of a non-loopback address without TLS,
the launcher's command line, quoting. A plain federation running LaDa, a run over its time, a dead node and
that nothing is left running: tests/federation/test_flower.py."""
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from ladalit.federation.launch import LocalFederation, config_arg, find_tagged, group_members  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "launch" / "flower_echo"
NAMES = ["alpha", "beta", "gamma"]


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


def _assert_all_gone(fed: LocalFederation) -> None:
    assert fed.alive_pids() == []
    assert find_tagged(fed.tag) == []  # no process carrying the federation's marker
    assert group_members(fed.started_pids) == []  # no live member of a process group we started
    assert not any(_pid_alive(pid) for pid in fed.started_pids)


def _echo(fed: LocalFederation, out: Path, **cfg) -> dict:
    o = fed.run({"out": str(out), "num-messages": 1, "payload-bytes": 4096, "poll-interval": 0.2, **cfg},
                timeout_s=180)
    assert o.rc == 0, o.log
    assert o.run_id is not None
    assert out.exists(), o.log
    return json.loads(out.read_text())


def test_tls_two_nodes(tmp_path):
    f = LocalFederation(tmp_path / "fed", APP, [{"name": n} for n in NAMES[:2]], tls=True)
    with f:
        f.start(timeout_s=90)
        assert "https://" in f.superlink.log_path.read_text()
        assert 'root-certificates = "' in (tmp_path / "fed/home/cli/config.toml").read_text()
        r = _echo(f, tmp_path / "echo.json")
        assert sorted(r["names"].values()) == NAMES[:2]
        assert r["failed"] == {}
    _assert_all_gone(f)
    f.stop()  # idempotent
    _assert_all_gone(f)


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
    from ladalit.federation.launch import main
    before = _children()
    assert main([*argv, f"output_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err.startswith(line)
    assert list(tmp_path.iterdir()) == [] and _children() - before == set()
