"""The behaviour-unchanged harness (benchmarks/behaviour_diff.py): what it strips and what it calls different."""
import json
import math

from benchmarks import behaviour_diff as bd


def test_strip_drops_run_location_and_clock_fields_at_any_depth_and_keeps_the_rest():
    row = {"config": {"output_dir": "/tmp/a", "run_name": "x", "seed": 0},
           "train": [{"round": 1, "loss_before": 0.5, "wall_s": 3.2, "time": "10:00", "elapsed_seconds": 1}],
           "answers_sent": 4}
    assert bd.strip(row) == {"config": {"seed": 0}, "train": [{"round": 1, "loss_before": 0.5}], "answers_sent": 4}


def test_differences_are_exact_on_floats_nan_equals_nan_and_rows_are_counted():
    a = {"lada": {"train": [{"loss": 0.1, "r": float("nan")}], "acc": 1}}
    assert bd.differences(a, json.loads(json.dumps(a))) == []
    b = {"lada": {"train": [{"loss": math.nextafter(0.1, 1), "r": float("nan")}], "acc": 1.0}}
    diffs = bd.differences(a, b)
    assert diffs[0].startswith("/lada/train[0]/loss: 0.1 != ") and diffs[1].startswith("/lada/acc: 1 != 1.0")
    assert bd.differences({"x": [1, 2]}, {"x": [1]}) == ["/x: 2 rows != 1 rows"]
    assert bd.differences({"x": 1}, {"y": 1}) == ["/x: only in A", "/y: only in B"]


def test_compare_exits_0_when_identical_1_when_not_2_on_a_missing_file(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps({"m": {"v": 1}}))
    (tmp_path / "b.json").write_text(json.dumps({"m": {"v": 2}}))
    assert bd.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "a.json")]) == 0
    assert "identical: m" in capsys.readouterr().out
    assert bd.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    assert "/m/v: 1 != 2" in capsys.readouterr().out
    assert bd.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "c.json")]) == 2


def test_compare_can_leave_out_a_key_a_change_added(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps({"m": {"config": {"x": 1}}}))
    (tmp_path / "b.json").write_text(json.dumps({"m": {"config": {"x": 1, "init_args": {}}}}))
    assert bd.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    assert "/m/config/init_args: only in B" in capsys.readouterr().out
    assert bd.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--ignore-key", "init_args"]) == 0
    assert "less keys named init_args" in capsys.readouterr().out


def test_compare_can_take_the_rows_of_a_key_in_any_order_but_not_other_rows(tmp_path, capsys):
    rows = [{"round": 0, "participant": "client1"}, {"round": 0, "participant": "client2"}]
    (tmp_path / "a.json").write_text(json.dumps({"m": {"train": rows, "other": rows}}))
    (tmp_path / "b.json").write_text(json.dumps({"m": {"train": rows[::-1], "other": rows}}))
    (tmp_path / "c.json").write_text(json.dumps({"m": {"train": rows[:1] * 2, "other": rows}}))
    assert bd.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    capsys.readouterr()
    assert bd.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--unordered", "train"]) == 0
    assert "rows of train in any order" in capsys.readouterr().out
    assert bd.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "c.json"), "--unordered", "train"]) == 1
    (tmp_path / "d.json").write_text(json.dumps({"m": {"train": rows, "other": rows[::-1]}}))
    assert bd.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "d.json"), "--unordered", "train"]) == 1


def test_compare_can_take_config_keys_at_the_place_a_section_moved_them_to(tmp_path, capsys):
    """--moved OLD=NEW: a digest recorded before a section took a key (beta at the top of results.config)
    compares with one recorded after (lada.beta); a value that differs is still a difference."""
    before = {"m": {"results": {"config": {"beta": 0.1, "seed": 0}, "acc": 1}}}
    after = {"m": {"results": {"config": {"lada": {"beta": 0.1}, "seed": 0}, "acc": 1}}}
    (tmp_path / "a.json").write_text(json.dumps(before))
    (tmp_path / "b.json").write_text(json.dumps(after))
    a, b = str(tmp_path / "a.json"), str(tmp_path / "b.json")
    assert bd.main(["--compare", a, b]) == 1
    assert "/m/results/config/beta: only in A" in capsys.readouterr().out
    assert bd.main(["--compare", a, b, "--moved", "beta=lada.beta"]) == 0
    assert "config keys beta compared where they went" in capsys.readouterr().out
    assert bd.main(["--compare", a, b, "--moved"]) == 0  # ladalit's own table (ladalit.core.config.MOVED)
    capsys.readouterr()
    after["m"]["results"]["config"]["lada"]["beta"] = 0.5
    (tmp_path / "b.json").write_text(json.dumps(after))
    assert bd.main(["--compare", a, b, "--moved"]) == 1
    assert "/m/results/config/lada/beta: 0.1 != 0.5" in capsys.readouterr().out
    assert bd.main(["--compare", a, b, "--moved", "beta"]) == 2
