"""launch/matrix.py: the paper-format table builders on hand-made results, and a tiny real matrix on
conf/smoke.yaml (resumable, unknown methods reported as n/a)."""
import csv
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_matrix_module():
    spec = importlib.util.spec_from_file_location("launch_matrix", ROOT / "launch" / "matrix.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["launch_matrix"] = mod
    spec.loader.exec_module(mod)
    return mod


matrix = _load_matrix_module()


# ----------------------------------------------------------------------------- hand-made results
def res(acc: dict, up: int = 0, down: int = 0, clients=("c1", "c2")) -> dict:
    """A results dict as ladalit writes it: acc maps (participant, shots) -> final-round accuracy in [0, 1].
    Round 1 holds other numbers, which the tables must not use."""
    rows = []
    for (p, s), a in acc.items():
        rows.append({"round": 1, "participant": p, "shots": s, "accuracy": 0.01, "invalid_rate": 0.0})
        rows.append({"round": 2, "participant": p, "shots": s, "accuracy": a, "accuracy_strict": a - 0.1,
                     "invalid_rate": 0.0})
    comm = [{"round": 1, "direction": "client->server", "client": "c1", "bytes": up},
            {"round": 1, "direction": "server->client", "client": "c1", "bytes": down}]
    return {"config": {"rounds": 2, "clients": {c: {} for c in clients}}, "accuracy": rows, "communication": comm}


def acc(c1, c2, server, c1_one=None):
    out = {("c1", 0): c1, ("c2", 0): c2, ("server", 0): server}
    if c1_one is not None:
        out |= {("c1", 1): c1_one, ("c2", 1): c1_one, ("server", 1): c1_one}
    return out


def hand_cells():
    C = lambda variant, seed, r: {"scenario": "conf/s1.yaml", "variant": variant, "seed": seed, "results": r}
    return [
        C("standalone", 0, res(acc(0.40, 0.60, 0.30, 0.50))), C("standalone", 1, res(acc(0.42, 0.60, 0.30, 0.50))),
        C("fedkd", 0, res(acc(0.44, 0.62, 0.35, 0.52), down=2_000_000)),
        C("fedkd", 1, res(acc(0.44, 0.64, 0.35, 0.52), down=3_000_000)),
        C("lada", 0, res(acc(0.46, 0.70, 0.33, 0.60), up=1_500_000, down=500_000)),
        C("lada", 1, res(acc(0.50, 0.70, 0.33, 0.60), up=1_500_000, down=500_000)),
        C("lada+loss=ce", 0, res(acc(0.40, 0.72, 0.33, 0.55), up=1_000_000)),
        C("lada+loss=ce", 1, res(acc(0.40, 0.72, 0.33, 0.55), up=1_000_000)),
        # wasp and lada+filter=none: no results (not registered / failed) -> n/a
    ]


def test_main_table_rows_mean_std_and_improvement():
    md, rows = matrix.main_table(hand_cells(), ["conf/s1.yaml"], ["standalone", "fedkd", "wasp", "lada"], [0, 1])
    lines = md.splitlines()
    assert "### Zero-shot setting (accuracy %, mean ± std over seeds)" in lines
    assert "### One-shot setting (accuracy %, mean ± std over seeds)" in lines
    assert "| Scenario | Participant | Standalone | FedKD | WASP | LaDa | Imp.(%) |" in lines
    zero = lines[lines.index("### Zero-shot setting (accuracy %, mean ± std over seeds)"):
                 lines.index("### One-shot setting (accuracy %, mean ± std over seeds)")]
    # c1: 40, 42 -> 41.0 ± 1.4 (sample std); 44, 44; 46, 50 -> 48.0 ± 2.8; Imp = 48.0 - 44.0
    assert "| s1 | Client 1 | 41.0 ± 1.4 | 44.0 ± 0.0 | n/a | 48.0 ± 2.8 | 4.0 |" in zero
    # c2: 60; 62, 64 -> 63.0 ± 1.4; 70 -> Imp 7.0
    assert "| s1 | Client 2 | 60.0 ± 0.0 | 63.0 ± 1.4 | n/a | 70.0 ± 0.0 | 7.0 |" in zero
    # the LLM: LaDa below the best baseline -> negative improvement
    assert "| s1 | LLM | 30.0 ± 0.0 | 35.0 ± 0.0 | n/a | 33.0 ± 0.0 | -2.0 |" in zero
    assert "| s1 | Client 1 | 50.0 ± 0.0 | 52.0 ± 0.0 | n/a | 60.0 ± 0.0 | 8.0 |" in lines  # one-shot
    row = next(r for r in rows if r["shots"] == 0 and r["participant"] == "c1")
    assert row["lada_mean"] == 48.0 and row["lada_n"] == 2 and row["wasp_n"] == 0 and row["wasp_mean"] == ""
    assert row["imp"] == 4.0 and row["label"] == "Client 1" and row["scenario"] == "s1"


def test_main_table_of_strict_accuracy():
    md, rows = matrix.main_table(hand_cells(), ["conf/s1.yaml"], ["standalone", "fedkd", "lada"], [0],
                                 metric="accuracy_strict")
    assert "### Zero-shot setting (strict accuracy %, mean ± std over seeds)" in md.splitlines()
    assert "| s1 | Client 1 | 31.0 ± 1.4 | 34.0 ± 0.0 | 38.0 ± 2.8 | 4.0 |" in md.splitlines()  # each 10 below


def test_main_table_without_any_baseline_or_ours_reports_na():
    md, _ = matrix.main_table(hand_cells(), ["s1"], ["wasp", "lada"], [0])
    assert "| s1 | Client 1 | n/a | 48.0 ± 2.8 | n/a |" in md.splitlines()
    md, _ = matrix.main_table(hand_cells(), ["s1", "s9"], ["standalone", "wasp"], [0], ours="wasp")
    assert "| s1 | Client 1 | 41.0 ± 1.4 | n/a | n/a |" in md.splitlines()
    assert "| s9 | n/a | n/a | n/a | n/a |" in md.splitlines()  # a scenario with no finished run


def test_ablation_table_deltas():
    md, rows = matrix.ablation_table(hand_cells(), ["s1"], ["lada.loss=ce", "lada.filter=none"], [0, 1])
    lines = md.splitlines()
    assert "| Setting | Method | s1 Client 1 | s1 Client 2 | s1 LLM |" in lines
    assert "| Zero-shot | Ours | 48.0 | 70.0 | 33.0 |" in lines
    assert "| Zero-shot | w/o reasoning distillation | 40.0 (-8.0) | 72.0 (+2.0) | 33.0 (0.0) |" in lines
    assert "| Zero-shot | w/o filter | n/a | n/a | n/a |" in lines
    assert "| One-shot | Ours | 60.0 | 60.0 | 60.0 |" in lines
    assert "| One-shot | w/o reasoning distillation | 55.0 (-5.0) | 55.0 (-5.0) | 55.0 (-5.0) |" in lines
    r = next(r for r in rows if r["variant"] == "lada+loss=ce" and r["participant"] == "c1" and r["shots"] == 0)
    assert r["mean"] == 40.0 and r["delta"] == -8.0 and r["n"] == 2


def test_communication_table():
    variants = ["standalone", "fedkd", "wasp", "lada", "lada+loss=ce"]
    md, rows = matrix.communication_table(hand_cells(), ["s1"], variants)
    lines = md.splitlines()
    assert "| Scenario | Method | Up MB | Down MB | Total MB |" in lines
    assert "| s1 | Standalone | 0.000 ± 0.000 | 0.000 ± 0.000 | 0.000 ± 0.000 |" in lines
    assert "| s1 | FedKD | 0.000 ± 0.000 | 2.500 ± 0.707 | 2.500 ± 0.707 |" in lines
    assert "| s1 | WASP | n/a | n/a | n/a |" in lines
    assert "| s1 | LaDa | 1.500 ± 0.000 | 0.500 ± 0.000 | 2.000 ± 0.000 |" in lines
    assert "| s1 | LaDa (w/o reasoning distillation) | 1.000 ± 0.000 | 0.000 ± 0.000 | 1.000 ± 0.000 |" in lines
    assert next(r for r in rows if r["variant"] == "lada")["total_mb_mean"] == 2.0


def test_matrix_config_and_cells(tmp_path):
    m = matrix.load_matrix(str(ROOT / "conf" / "matrix.yaml"))
    assert m["scenarios"] == ["demo"] and m["methods"] == ["standalone", "fedkd", "fedmkt", "wasp", "lada"]
    assert m["ablations"] == ["lada.loss=ce", "lada.filter=none", "lada.server_weights=uniform"]
    assert m["seeds"] == [0, 1, 2] and m["shots"] == [0, 1]
    cells = matrix.plan(m)
    assert len(cells) == 3 * (5 + 3)
    m = matrix.load_matrix(str(ROOT / "conf" / "matrix.yaml"),
                           [f"output_dir={tmp_path}", "overrides=[rounds=1]", "seeds=[4]"])
    cell = matrix.Cell("conf/smoke.yaml", "lada", 4, "lada.filter=none")
    args = matrix.cell_args(m, cell)
    assert args[:5] == ["conf=conf/smoke.yaml", "method=lada", "seed=4", "eval.shots=[0,1]", "quiet=true"]
    # the variant names an override of LaDa's own section without the section, as before it existed
    assert cell.variant == "lada+filter=none"
    assert args[5:] == ["rounds=1", "lada.filter=none", f"output_dir={tmp_path}/runs/smoke",
                        "run_name=lada+filter_none-seed4"]
    assert matrix.Cell("s1", "lada", 0, "filter_net.tau=0.3").variant == "lada+filter_net.tau=0.3"
    with pytest.raises(matrix.MatrixError, match="unknown matrix key"):
        matrix.load_matrix(None, ["method=lada"])


def test_a_cell_recorded_before_lada_keys_moved_compares_them_at_their_new_place(tmp_path):
    """A fingerprint written before LaDa's keys moved into `lada` (n_c, beta, ... at the top level) is the same
    settings as today's, unless a value differs; the difference names the key where it is now."""
    from ladalit.core.config import load_config
    from ladalit.core.run_identity import FINGERPRINT, fingerprint
    cfg = load_config(["conf=smoke.yaml"])
    fp = fingerprint(cfg)
    added = ("lada.mard_span", "lada.mard_lr_scale")  # switches born in the section, after the move
    old = {**fp, "config": {k.removeprefix("lada."): v for k, v in fp["config"].items() if k not in added}}
    assert old["config"]["n_c"] == 16 and "lada.n_c" not in old["config"]
    (tmp_path / FINGERPRINT).write_text(json.dumps(old))
    assert matrix.settings_changed(tmp_path, cfg) == []
    old["config"]["n_c"] = 8
    (tmp_path / FINGERPRINT).write_text(json.dumps(old))
    assert matrix.settings_changed(tmp_path, cfg) == ["lada.n_c: 8 -> 16"]


def test_a_cell_recorded_before_a_switch_existed_is_unchanged_while_the_switch_keeps_its_default(tmp_path):
    """A key the recorded fingerprint lacks (a switch added since) is no difference at its default, the behaviour of
    the code that wrote the run, and a difference at any other value."""
    from ladalit.core.config import load_config
    from ladalit.core.run_identity import FINGERPRINT, fingerprint
    cfg = load_config(["conf=smoke.yaml"])
    fp = fingerprint(cfg)
    old = {**fp, "config": {k: v for k, v in fp["config"].items() if k != "lada.mard_lr_scale"}}
    (tmp_path / FINGERPRINT).write_text(json.dumps(old))
    assert matrix.settings_changed(tmp_path, cfg) == []
    assert matrix.settings_changed(tmp_path, load_config(["conf=smoke.yaml", "lada.mard_lr_scale=0.5"])) == [
        "lada.mard_lr_scale: added"]


# ----------------------------------------------------------------------------- a tiny real matrix
def test_tiny_real_matrix_on_smoke(tmp_path, capsys):
    cfg_path = tmp_path / "m.yaml"
    cfg_path.write_text(
        f"output_dir: {tmp_path / 'out'}\n"
        "scenarios: [smoke]\n"
        "methods: [standalone, fedkd, nosuch]\n"
        "ours: fedkd\n"
        "ablations: []\n"
        "seeds: [0]\n"
        "shots: [0]\n"
        "overrides: [rounds=1, eval.limit=2, data.public_size=8, data.train_per_client=8, eval.max_new_tokens=8,\n"
        "            generation.max_new_tokens=8, server.train.max_length=128, clients.client1.train.max_length=128,\n"
        "            clients.client2.train.max_length=128]\n")
    assert matrix.main([str(cfg_path)]) == 0
    out = tmp_path / "out"
    for name in ("table2.md", "table2.csv", "table5.md", "table5.csv", "communication.md", "communication.csv",
                 "cells.csv", "tables.md"):
        assert (out / name).is_file(), name
    status = {(r["variant"], r["status"]) for r in csv.DictReader(io.StringIO((out / "cells.csv").read_text()))}
    assert status == {("standalone", "done"), ("fedkd", "done"), ("nosuch", "n/a")}
    reason = next(r["reason"] for r in csv.DictReader(io.StringIO((out / "cells.csv").read_text()))
                  if r["variant"] == "nosuch")
    assert "not registered" in reason
    for v in ("standalone", "fedkd"):
        saved = json.loads((out / "runs" / "smoke" / f"{v}-seed0" / "results.json").read_text())
        assert saved["method"] == v and saved["config"]["rounds"] == 1
    t2 = (out / "table2.md").read_text().splitlines()
    assert "| Scenario | Participant | Standalone | FedKD | nosuch | Imp.(%) |" in t2
    body = [line for line in t2 if line.startswith("| smoke |")]
    assert [line.split(" | ")[1] for line in body] == ["Client 1", "Client 2", "LLM"]
    assert all(line.split(" | ")[4] == "n/a" for line in body)  # the unknown method
    comm = list(csv.DictReader(io.StringIO((out / "communication.csv").read_text())))
    by = {r["variant"]: r for r in comm}
    # Standalone sends only each round's start and the clients' Ready (a few hundred bytes); FedKD the answers
    assert 0 < float(by["standalone"]["total_mb_mean"]) < float(by["fedkd"]["down_mb_mean"])
    assert by["nosuch"]["total_mb_mean"] == ""

    # resumable: a second pass finds both runs complete and runs nothing
    def boom(cfg, quiet=False):
        raise AssertionError("a finished cell was run again")
    m = matrix.load_matrix(str(cfg_path))
    cells = matrix.run_matrix(m, execute=boom, log=lambda *a: None)
    assert [(c.variant, c.status) for c in cells] == [("standalone", "cached"), ("fedkd", "cached"), ("nosuch", "n/a")]
    # an incomplete results.json (the last round not evaluated) is run again
    path = out / "runs" / "smoke" / "fedkd-seed0" / "results.json"
    complete = path.read_bytes()
    saved = json.loads(complete)
    saved["accuracy"] = []
    path.write_text(json.dumps(saved))
    ran = []
    cells = matrix.run_matrix(m, execute=lambda cfg, quiet=False: ran.append(cfg.method) or (None, saved),
                              log=lambda *a: None)
    assert ran == ["fedkd"]
    path.write_bytes(complete)

    # a change in sections that neither method reads (wasp.*, lada.*) leaves both cells as they were
    cfg_path.write_text(cfg_path.read_text().replace("rounds=1,", "rounds=1, wasp.top_p=0.5, lada.beta=0.5,"))
    cells = matrix.run_matrix(matrix.load_matrix(str(cfg_path)), execute=boom, log=lambda *a: None)
    assert [(c.variant, c.status) for c in cells] == [("standalone", "cached"), ("fedkd", "cached"), ("nosuch", "n/a")]
    # a finished cell run with other settings than the cell's is stale: not reported, not run, not replaced
    before = (out / "runs" / "smoke" / "standalone-seed0" / "results.json").read_bytes()
    changed = cfg_path.read_text().replace("eval.limit=2", "eval.limit=3")
    cfg_path.write_text(changed)
    cells = matrix.run_matrix(matrix.load_matrix(str(cfg_path)), execute=boom, log=lambda *a: None)
    assert [(c.variant, c.status) for c in cells] == [("standalone", "stale"), ("fedkd", "stale"), ("nosuch", "n/a")]
    assert "eval.limit: 2 -> 3" in cells[0].reason and "move it away" in cells[0].reason
    assert (out / "runs" / "smoke" / "standalone-seed0" / "results.json").read_bytes() == before
    assert matrix.main([str(cfg_path), "--tables-only"]) == 1
    assert "'stale': 2" in capsys.readouterr().out
