"""Plots, `python -m ladalit.reporting.report`, terminal progress/summary, and a smoke run tracked by W&B offline."""
import copy
import glob
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from rich.console import Console

from ladalit.core.channel import Channel, Sent
from ladalit.reporting.plots import (accuracy_figure, partial_label, plot_accuracy, plot_communication, plot_selection,
                           wandb_images, write_plots)
from ladalit.core.progress import Progress, duration, summary_rows
from ladalit.reporting.report import main as report_main, seed_groups
from ladalit.core.results import Results

PNG = b"\x89PNG\r\n\x1a\n"
CLIENTS = ("client1", "client2")
# accuracy[(round, participant, shots)]
ACC = {(1, "client1", 0): 0.250, (1, "client1", 1): 0.375, (1, "client2", 0): 0.125, (1, "client2", 1): 0.250,
       (1, "server", 0): 0.500, (1, "server", 1): 0.5625,
       (2, "client1", 0): 0.625, (2, "client1", 1): 0.750, (2, "client2", 0): 0.375, (2, "client2", 1): 0.500,
       (2, "server", 0): 0.6875, (2, "server", 1): 0.8125}
# selected per candidate batch (two batches of 16): round 1 = prototypes, round 2 = the filters
SELECTED = {(1, "client1<-server"): (4, 4), (1, "client2<-server"): (4, 4),
            (1, "server<-client1"): (4, 4), (1, "server<-client2"): (4, 4),
            (2, "client1<-server"): (5, 7), (2, "client2<-server"): (2, 1),
            (2, "server<-client1"): (9, 3), (2, "server<-client2"): (0, 6)}
BYTES = {(1, "client->server", "client1"): 1_500_000, (1, "server->client", "client1"): 2_000_000,
         (1, "client->server", "client2"): 500_000, (1, "server->client", "client2"): 1_000_000,
         (2, "client->server", "client1"): 250_000, (2, "server->client", "client1"): 750_000,
         (2, "client->server", "client2"): 0, (2, "server->client", "client2"): 0}


def make_results(method="lada", run_name="runA") -> dict:
    acc = [{"round": t, "participant": p, "role": "server" if p == "server" else "client", "shots": s,
            "accuracy": a, "accuracy_strict": a - 0.0625, "invalid_rate": round(1 - a, 4) / 2, "n": 16}
           for (t, p, s), a in ACC.items()]
    sel = [{"round": t, "pair": pair, "side": "server" if pair.startswith("server") else "client",
            "candidates": 16, "selected": n, "bound": ""} for (t, pair), ns in SELECTED.items() for n in ns]
    comm = [{"round": t, "direction": d, "client": c, "bytes": b} for (t, d, c), b in sorted(BYTES.items()) if b]
    return {"method": method, "config": {"method": method, "rounds": 2, "run_name": run_name},
            "accuracy": acc, "selection": sel,
            "selected_per_round": [{"round": t, "pair": p, "selected": sum(ns)} for (t, p), ns in SELECTED.items()],
            "train": [{"round": 1, "participant": "client1", "batch": 0, "loss_before": 0.7, "loss_after": 0.6,
                       "reward": 0.1}],
            "communication": comm, "communication_mb_total": sum(BYTES.values()) / 1e6,
            "nonfinite_skipped": 0}


def save_run(root: Path, name: str, results: dict) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(results))
    return d


def assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG and len(data) > 5000, path
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 300
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 20  # lines and text, not a blank canvas


# ----------------------------------------------------------------------------- plots
def test_each_plot_renders_a_png_with_content(tmp_path):
    r = make_results()
    for path in (plot_accuracy(r, tmp_path / "a.png"), plot_selection(r, tmp_path / "s.png"),
                 plot_communication({"lada": r, "fedkd": make_results("fedkd")}, tmp_path / "c.png")):
        assert_png(path)
    # one panel per prompt setting
    zero_shot = dict(r, accuracy=[row for row in r["accuracy"] if row["shots"] == 0])
    plot_accuracy(zero_shot, tmp_path / "a0.png")
    assert imread(tmp_path / "a.png").shape[1] > 1.8 * imread(tmp_path / "a0.png").shape[1]


def test_write_plots_writes_three_pngs_even_without_selections_or_bytes(tmp_path):
    r = make_results("standalone")
    r["selection"], r["selected_per_round"], r["communication"], r["communication_mb_total"] = [], [], [], 0.0
    paths = write_plots(r, tmp_path / "run")
    assert [p.name for p in paths] == ["accuracy.png", "selection.png", "communication.png"]
    for p in paths:
        assert p.parent == tmp_path / "run"
        assert_png(p)


# ----------------------------------------------------------------------------- report
def test_report_on_one_run_writes_tables_and_plots(tmp_path, capsys):
    run = save_run(tmp_path, "runA", make_results())
    assert report_main([str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.md")
    md = (run / "report.md").read_text()
    assert "# Report: lada (runA)" in md
    assert ("| round | participant | 0-shot acc | 0-shot strict | 0-shot invalid | 1-shot acc | 1-shot strict | "
            "1-shot invalid |") in md
    assert "| 1 | server | 0.500 | 0.438 | 0.250 | 0.562 | 0.500 | 0.219 |" in md  # lenient, strict, invalid
    assert "| 2 | client1 | 0.625 | 0.562 | 0.188 | 0.750 | 0.688 | 0.125 |" in md
    assert "| pair | round 1 | round 2 |" in md
    assert "| client1<-server | 8 / 32 | 12 / 32 |" in md
    assert "| server<-client2 | 8 / 32 | 6 / 32 |" in md
    assert "| round | client | client->server MB | server->client MB | MB |" in md
    assert "| 1 | client1 | 1.5000 | 2.0000 | 3.5000 |" in md
    assert "| 2 | client1 | 0.2500 | 0.7500 | 1.0000 |" in md
    assert "| **total** |  | 2.2500 | 3.7500 | 6.0000 |" in md
    for name in ("accuracy.png", "selection.png", "communication.png"):
        assert f"({name})" in md
        assert_png(run / name)


def test_report_on_two_runs_compares_them_side_by_side(tmp_path):
    a = save_run(tmp_path, "runA", make_results())
    other = make_results("standalone", "runB")
    for row in other["accuracy"]:
        row["accuracy"] = row["accuracy"] / 2
    other["communication"], other["communication_mb_total"] = [], 0.0
    other["selection"], other["selected_per_round"] = [], []
    b = save_run(tmp_path / "elsewhere", "runB", other)
    out = tmp_path / "cmp"
    assert report_main([str(a), str(b), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "| final-round accuracy | lada (runA) | standalone (runB) |" in md
    assert "| client1, 0-shot | 0.625 | 0.312 |" in md
    assert "| server, 1-shot | 0.812 | 0.406 |" in md
    assert "| total MB | 6.0000 | 0.0000 |" in md
    # each run's own tables follow the comparison
    assert "## lada (runA)" in md and "## standalone (runB)" in md and "(nothing sent)" in md
    for name in ("comparison-communication.png", "runA-accuracy.png", "runA-selection.png",
                 "runB-accuracy.png", "runB-selection.png"):
        assert f"({name})" in md
        assert_png(out / name)
    assert not (a / "report.md").exists()  # --out: the run dirs are left alone


def test_report_on_runs_with_the_same_name_keeps_both_plots(tmp_path):
    a, b = save_run(tmp_path / "x", "r", make_results()), save_run(tmp_path / "y", "r", make_results("fedkd"))
    assert report_main([str(a), str(b)]) == 0  # no --out: the first run dir
    for name in ("report.md", "comparison-communication.png", "r-1-accuracy.png", "r-2-accuracy.png"):
        assert (a / name).is_file(), name


def test_report_exits_2_with_one_line_when_a_dir_has_no_results(tmp_path):
    good = save_run(tmp_path, "good", make_results())
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "ladalit.reporting.report", str(good), str(empty)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {empty}: no results.json"
    assert not (good / "report.md").exists()


# ----------------------------------------------------------------------------- progress
def as_results_and_channel(saved: dict) -> tuple[Results, Channel]:
    results, channel = Results(), Channel()
    results.accuracy, results.selection = copy.deepcopy(saved["accuracy"]), copy.deepcopy(saved["selection"])
    channel.messages = [Sent(c["round"], c["direction"], c["client"], "x", c["bytes"]) for c in saved["communication"]]
    return results, channel


def test_summary_rows_from_live_objects_and_from_saved_results_agree():
    saved = make_results()
    head, rows = summary_rows(saved, 2)
    assert head == ["participant", "0-shot acc lenient/strict", "1-shot acc lenient/strict", "selected", "MB up",
                    "MB down"]
    assert rows == [["client1", "0.625/0.562", "0.750/0.688", "12", "0.250", "0.750"],
                    ["client2", "0.375/0.312", "0.500/0.438", "3", "0.000", "0.000"],
                    ["server", "0.688/0.625", "0.812/0.750", "18", "0.250", "0.750"]]
    results, channel = as_results_and_channel(saved)
    assert summary_rows(results, 2, channel) == (head, rows)


def drive(prog: Progress, saved: dict) -> None:
    results, channel = as_results_and_channel(saved)
    with prog:
        rounds = prog.task("rounds", 2)
        for t in (1, 2):
            for k in CLIENTS:
                with prog.task(f"{k} batches", 2) as bar:
                    bar.advance()
                    bar.advance()
            gen = prog.task("generation", 32)
            gen.advance(32)
            gen.done()
            prog.summary(results, t, channel)
            rounds.advance()


def test_progress_outside_a_terminal_prints_plain_summaries_without_control_codes(capsys):
    drive(Progress(), make_results())  # pytest's captured stdout is not a terminal
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    lines = out.splitlines()
    assert lines[0] == "round 1" and "round 2" in lines
    assert lines[1].split() == ["participant", "0-shot", "acc", "lenient/strict", "1-shot", "acc", "lenient/strict",
                                "selected", "MB", "up", "MB", "down"]
    assert lines[lines.index("round 2") + 3].split() == ["client2", "0.375/0.312", "0.500/0.438", "3", "0.000", "0.000"]
    assert len(lines) == 2 * 5


def test_progress_quiet_prints_nothing(capsys):
    drive(Progress(quiet=True), make_results())
    assert capsys.readouterr().out == "" and capsys.readouterr().err == ""


def test_progress_on_a_terminal_draws_bars_and_rich_tables(capsys):
    buf = io.StringIO()
    drive(Progress(console=Console(file=buf, force_terminal=True, width=120)), make_results())
    out = buf.getvalue()
    assert "\x1b" in out  # live display
    assert "rounds" in out and "client1 batches" in out and "2/2" in out
    assert "round 2" in out and "0.812" in out and "MB down" in out
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------- smoke run, W&B offline
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_DIR")}
    env["HOME"] = str(root / "home")
    proc = subprocess.run([sys.executable, "-m", "ladalit.run", "conf=smoke.yaml", "tracking.wandb.mode=offline",
                           f"output_dir={root / 'out'}", "run_name=w", "rounds=1"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=root)
    return root, proc


@pytest.mark.slow
def test_smoke_run_with_wandb_offline_keeps_the_wandb_run_in_the_run_dir(smoke_run):
    root, proc = smoke_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = root / "out" / "w"
    saved = json.loads((run_dir / "results.json").read_text())
    assert {(r["round"], r["participant"], r["shots"]) for r in saved["accuracy"]} == \
        {(t, p, s) for t in (0, 1) for p in ("server", *CLIENTS) for s in (0, 1)}  # round 0: before any transfer
    offline = glob.glob(str(run_dir / "wandb" / "offline-run-*"))
    assert len(offline) == 1
    records = glob.glob(os.path.join(offline[0], "run-*.wandb"))
    assert len(records) == 1 and os.path.getsize(records[0]) > 0
    assert (Path(offline[0]) / "files").is_dir()
    assert not (root / "wandb").exists()  # nothing in the working directory


@pytest.mark.slow
def test_plots_and_report_from_the_smoke_runs_results(smoke_run, tmp_path, monkeypatch):
    root, proc = smoke_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = root / "out" / "w"
    saved = json.loads((run_dir / "results.json").read_text())
    paths = write_plots(saved, run_dir)
    # the smoke world is the synthetic one: its oracle rows add selection_quality.png
    assert sorted(p.name for p in paths) == ["accuracy.png", "communication.png", "selection.png", "selection_quality.png"]
    for p in paths:
        assert_png(p)
    assert report_main([str(run_dir), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "| client1<-server | 8 / 32 |" in md  # round 1: the prototypes, ceil(0.25 * 32)
    assert "| **total** |  |" in md
    # the plots go to W&B as images of an offline run
    import wandb
    monkeypatch.setenv("HOME", str(root / "home"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    run = wandb.init(project="ladalit", mode="offline", dir=str(tmp_path), settings=wandb.Settings(silent=True))
    run.log(wandb_images(paths), step=1)
    run.finish()
    images = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "files" / "media" / "images" / "plots" / "*.png"))
    # W&B names an image <key>_<step>_<hash>.png: selection_quality.png shows as a second "selection"
    assert sorted(Path(p).name.split("_")[0] for p in images) == ["accuracy", "communication", "selection", "selection"]


# ----------------------------------------------------------------------------- round 0, chance, seeds, partial
def with_round0(results: dict, seed: int = 0, shift: float = 0.0) -> dict:
    """`results` with round-0 rows (accuracy 0.125 below round 1), 4 options, `seed`, accuracies + `shift`."""
    r = copy.deepcopy(results)
    r["config"] |= {"seed": seed, "data": {"num_options": 4}}
    first = [dict(a, round=0, accuracy=a["accuracy"] - 0.125, accuracy_strict=a["accuracy_strict"] - 0.125)
             for a in r["accuracy"] if a["round"] == 1]
    r["accuracy"] = [dict(a, accuracy=a["accuracy"] + shift, accuracy_strict=a["accuracy_strict"] + shift)
                     for a in first + r["accuracy"]]
    return r


def test_accuracy_plot_starts_at_round_0_with_a_dashed_chance_line():
    fig = accuracy_figure([with_round0(make_results())])
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [0, 1, 2]
        chance = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
        assert len(chance) == 1 and set(chance[0].get_ydata()) == {0.25}
        client1 = next(ln for ln in ax.lines if ln.get_label() == "client1")
        assert list(client1.get_xdata()) == [0, 1, 2]
        assert not ax.collections  # one run: no bands
    assert fig._suptitle.get_text() == "lada accuracy per round"


def test_seeds_of_one_config_give_mean_and_std_bands_and_tables(tmp_path):
    runs = [with_round0(make_results(run_name=f"s{i}"), seed=i, shift=d) for i, d in enumerate((0.0, 0.0625, 0.125))]
    other = with_round0(make_results("standalone", "st"))
    assert seed_groups(runs + [other]) == [[0, 1, 2], [3]]
    fig = accuracy_figure(runs)
    ax = fig.axes[0]
    assert len(ax.collections) == 3  # a ± std band per participant
    client1 = next(ln for ln in ax.lines if ln.get_label() == "client1")
    assert list(client1.get_ydata()) == pytest.approx([0.125 + 0.0625, 0.25 + 0.0625, 0.625 + 0.0625])
    dirs = [save_run(tmp_path / f"d{i}", f"s{i}", r) for i, r in enumerate(runs)] + [save_run(tmp_path, "st", other)]
    assert report_main([str(d) for d in dirs] + ["--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    label = "lada, mean ± std over 3 seeds (0, 1, 2)"
    assert f"| final-round accuracy | {label} | standalone (st) |" in md
    assert "| client1, 0-shot | 0.688 ± 0.062 | 0.625 |" in md  # 0.625 + (0, 1/16, 1/8): std 1/16
    assert "| total MB | 6.0000 ± 0.0000 | 6.0000 |" in md
    assert f"## {label}" in md and "| round | participant | 0-shot acc | 0-shot strict | 1-shot acc | 1-shot strict | runs |" in md
    assert "| 0 | client1 | 0.188 ± 0.062 | 0.125 ± 0.062 | 0.312 ± 0.062 | 0.250 ± 0.062 | 3 |" in md
    assert "| client1, 0-shot strict | 0.625 ± 0.062 | 0.562 |" in md
    assert "(group1-lada-accuracy.png)" in md
    assert_png(tmp_path / "out" / "group1-lada-accuracy.png")


def test_a_partial_run_is_labelled_in_its_plot_and_report(tmp_path):
    r = with_round0(make_results())
    r["config"]["rounds"] = 5
    assert partial_label(r) == "partial: 2 of 5 rounds"
    assert partial_label(make_results()) == ""
    assert accuracy_figure([r])._suptitle.get_text() == "lada accuracy per round (partial: 2 of 5 rounds)"
    run = save_run(tmp_path, "p", r)
    assert report_main([str(run)]) == 0
    assert "# Report: lada (p, partial: 2 of 5 rounds)" in (run / "report.md").read_text()
    done = with_round0(make_results(), seed=1)
    done["config"]["rounds"] = 5
    done["accuracy"] += [dict(row, round=5) for row in done["accuracy"] if row["round"] == 2]  # all 5 rounds
    other = save_run(tmp_path, "q", done)
    assert report_main([str(run), str(other), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| final-round accuracy | lada, mean ± std over 2 seeds (0, 1), 1 partial |" in md


def test_final_table_shows_round_0_and_the_change():
    results = Results()
    results.accuracy = with_round0(make_results())["accuracy"]
    lines = results.table().splitlines()
    assert lines[0] == "round 2"
    assert lines[1].split() == ["participant", "0-shot", "lenient/strict", "(invalid)", "round", "0", "change",
                                "1-shot", "lenient/strict", "(invalid)", "round", "0", "change"]
    assert lines[2].split() == ["client1", "0.625/0.562", "(0.19)", "0.125/0.062", "+0.500/+0.500",
                                "0.750/0.688", "(0.12)", "0.250/0.188", "+0.500/+0.500"]
    results.accuracy = [{k: v for k, v in r.items() if k != "accuracy_strict"} for r in results.accuracy]
    assert results.table().splitlines()[2].split()[1] == "0.625/-"  # a run from before strict accuracy


# ----------------------------------------------------------------------------- plain progress lines
def test_plain_lines_every_interval_with_eta(capsys):
    now = [100.0]
    prog = Progress(clock=lambda: now[0], interval=3600)  # the timer never fires here; tick() is what it calls
    with prog:
        task = prog.task("round 1 client1: candidate batches", 8)
        prog.tick()
        now[0] += 40
        task.advance(2)
        prog.tick()
        now[0] += 20
        task.advance(2)
        prog.tick()
        now[0] += 30
        prog.tick()
        task.done()
        prog.tick()
    lines = [ln.split("] ", 1)[1] for ln in capsys.readouterr().out.splitlines()]
    assert lines == ["round 1 client1: candidate batches: 0/8, 0 s, eta ?",
                     "round 1 client1: candidate batches: 2/8, 40 s, eta 2 min 00 s",  # 2 steps in 40 s
                     "round 1 client1: candidate batches: 4/8, 1 min 00 s, eta 40 s",  # the rate since step 1
                     "round 1 client1: candidate batches: 4/8, 1 min 30 s, eta 10 s"]  # counted down, not grown


def test_eta_never_reads_0_while_a_step_runs_past_the_estimate(capsys):
    """The last round of three ran longer than the rounds before it: its line said `eta 0 s` for the whole
    round; now it reads `?` once the estimate is spent, and 0 only when every step is done."""
    now = [0.0]
    prog = Progress(clock=lambda: now[0], interval=3600)
    with prog:
        rounds = prog.task("rounds", 3)
        for dt in (100, 100):
            now[0] += dt
            rounds.advance()
        now[0] += 60
        prog.tick()  # round 3 running, within the estimate
        now[0] += 39.6
        prog.tick()  # under a second left of the estimate: rounds to 0 s, so it reads ?
        now[0] += 100
        prog.tick()  # past it
        rounds.advance()
        prog.tick()  # done
    lines = [ln.split("] ", 1)[1] for ln in capsys.readouterr().out.splitlines()]
    assert lines == ["rounds: 2/3, 4 min 20 s, eta 40 s", "rounds: 2/3, 5 min 00 s, eta ?",
                     "rounds: 2/3, 6 min 40 s, eta ?", "rounds: 3/3, 6 min 40 s, eta 0 s"]


def test_plain_lines_come_from_a_timer_thread_off_a_terminal(capsys):
    import time
    with Progress(interval=0.05) as prog, prog.task("generate server", 3):
        time.sleep(0.3)
    out = capsys.readouterr().out
    assert "generate server: 0/3" in out and "\x1b" not in out
    assert Progress(quiet=True).task("x", 1).lines is None  # quiet: no lines


def test_duration_format():
    assert [duration(s) for s in (0, 42.4, 65, 3599, 3725)] == ["0 s", "42 s", "1 min 05 s", "59 min 59 s", "1 h 02 min"]


def test_header_fits_one_screen_and_names_what_a_run_is(tmp_path):
    from ladalit.core.config import load_config
    from ladalit.core.experiment import build_experiment
    from ladalit.core.progress import header
    cfg = load_config(["conf=smoke.yaml", "rounds=1"])
    exp = build_experiment(cfg)
    lines = header(exp, tmp_path / "r", "smoke.yaml").splitlines()
    assert len(lines) <= 24
    assert lines[0] == "ladalit: lada, smoke.yaml, seed 0, 1 rounds"
    assert lines[1] == "data: synthetic, 2 clients (16 train + 8 test each), public 32, 4 options, domain skew 0"
    n = sum(p.numel() for p in exp.server.model.parameters())
    assert lines[2].split() == ["server", "tiny:random", "qwen3", "(qwen3),", f"{n / 1e3:.1f}K", "params,", "float32"]
    lora = sum(p.numel() for k, p in exp.clients["client2"].model.named_parameters() if "lora_" in k)
    assert f"LoRA r=4: {lora / 1e3:.1f}K trainable" in lines[4]
    assert lines[-2:] == [f"run dir: {tmp_path / 'r'}", f"full config: {tmp_path / 'r'}/config.yaml"]


def test_transformers_bars_off_unless_verbose():
    from transformers.utils import logging as hf_logging

    from ladalit.core.progress import quiet_transformers
    try:
        quiet_transformers(verbose=False)
        assert not hf_logging.is_progress_bar_enabled()
        quiet_transformers(verbose=True)
        assert hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
