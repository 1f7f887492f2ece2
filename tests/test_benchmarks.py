"""Every benchmark runs in `--quick` mode and writes valid JSON (no assertion on speed: speed is measured
in `benchmarks/`, never in tests). One `python -m benchmarks.run --quick` run, shared by the tests."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow  # whole LaDa / FedKD / FedMKT runs, tiny: about a minute in all

MODULES = ["mard_vs_trl", "reference_cost", "filter_overhead", "prototypes_vs_sklearn", "scaling_k", "generation",
           "communication", "sharded_loading"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    import torch

    from benchmarks import common, run
    out = tmp_path_factory.mktemp("bench")
    results, threads = common.RESULTS, torch.get_num_threads()
    try:
        summary = run.main(["--quick", "--out", str(out)])
    finally:
        common.RESULTS = results
        torch.set_num_threads(threads)
    return out, summary


def test_summary_has_one_row_per_benchmark(quick_run):
    out, summary = quick_run
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert [r["row"] for r in summary["rows"]] == list(range(1, 9))
    for r in summary["rows"]:
        assert r["status"] in ("PASS", "MISS"), r  # measured and compared to its target, not crashed
        assert not r["measured"].startswith("error"), r
        assert r["target"] and r["measured"]
    assert summary["quick"] is True
    assert summary["machine"]["cpu_count"] >= 1 and summary["machine"]["versions"]["torch"]


@pytest.mark.parametrize("module", MODULES)
def test_each_benchmark_writes_valid_json(quick_run, module):
    out, _ = quick_run
    data = json.loads((out / f"{module}.json").read_text())
    assert data["benchmark"] == module
    assert "machine" in data
    if module != "mard_vs_trl":
        assert data["summary"]["row"] == MODULES.index(module) + 1


def test_quick_results_are_consistent(quick_run):
    """What the benchmarks check is true even at tiny sizes (counts, not speed)."""
    out, _ = quick_run
    ref = json.loads((out / "reference_cost.json").read_text())
    assert all(r["reference_passes"] == r["distinct_keys"] > 0 for r in ref["passes"])
    assert all(r["extra_bytes"] == 0 for r in ref["memory"] if r["lora"])
    assert all(r["extra_model_copies"] == pytest.approx(1.0) for r in ref["memory"] if not r["lora"])
    comm = json.loads((out / "communication.json").read_text())
    assert comm["problems"] == [] and all(r["ok"] for r in comm["lada_check"])
    assert set(comm["methods"]) == {"lada", "fedkd", "fedmkt"}
    loading = json.loads((out / "sharded_loading.json").read_text())
    assert len(loading["sharded"]) == 2 and loading["full_copy_bytes"] > 0
    assert loading["logprob_diff"] < 0.1  # the sharded model computes what the whole one does (bf16)
    gen = json.loads((out / "generation.json").read_text())
    assert all(r["batched"]["tokens"] == r["one_by_one"]["tokens"] > 0 for r in gen["reps"])


def test_gpu_check_dry_run_runs_the_round_and_prints_the_table(tmp_path):
    """benchmarks/gpu_check.sh --dry-run: the GPU check's code path on tiny shapes on the CPU (one subprocess)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for line in ("generation, tokens/s", "reference log-probs, tokens/s", "MARD step, tokens/s", "SFT, tokens/s",
                 "evaluation, tokens/s", "MARD step, MFU", "peak GPU memory, GiB", "parked: bytes, s",
                 "peak memory K=3 / K=1", "encoder: hashing", "vLLM:", "FAISS: "):
        assert line in proc.stdout, line
    import faiss
    if not hasattr(faiss, "StandardGpuResources"):  # faiss-cpu: the check says so instead of running on the CPU
        assert "FAISS GPU prototypes: faiss-gpu not installed" in proc.stdout
    data = json.loads(out.read_text())
    assert [r["K"] for r in data["rounds"]] == [1, 3] and data["dry_run"] is True
    for r in data["rounds"]:
        assert r["selected"] > 0 and r["skipped_steps"] == 0
        assert r["swaps"] > r["K"] and r["park_bytes"] > 0 and r["activate_bytes"] > r["park_bytes"]
        assert all(v["tokens"] > 0 and v["seconds"] > 0 for v in r["phases"].values())


def test_demo_methods_tables_on_smoke(tmp_path):
    """benchmarks.demo_methods on the smoke world (one seed, one round): every table, the bootstrap gains,
    the oracle rows and the claims, as JSON and markdown."""
    from benchmarks import demo_methods
    out = demo_methods.main(["--conf", "smoke.yaml", "--seeds", "0", "--methods", "standalone", "lada",
                             "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path), "--no-preconditions",
                             "--no-controls", "--jobs", "1", "rounds=1", "generation.max_new_tokens=4",
                             "eval.max_new_tokens=4"])
    text = (tmp_path / "demo_methods.md").read_text()
    assert json.loads((tmp_path / "demo_methods.json").read_text())["seeds"] == [0]
    for n in ("client1", "client2", "server"):
        for kind, suffix in (("lenient", ""), ("strict", " strict")):
            mean, low, high = out["gain"][f"lada-standalone 0-shot {kind}"][n]
            r = out["accuracy"][f"{n} 0-shot{suffix}"]
            assert mean == pytest.approx(100 * (r["lada"][0] - r["standalone"][0]))  # same items: the paired mean
            assert low <= mean <= high
    assert "0-shot strict (points; 95% interval over test items only (one seed" in text
    assert {k.split()[1] for k in out["selection_quality"]} == {"client1<-server", "client2<-server",
                                                                "server<-client1", "server<-client2"}
    assert "LaDa ahead of Standalone on every client" in text and "the server ends no lower than its round 0" in text
    assert "the filter's correctable share above random for every pair after round 1" in text
    for rows in out["selection_quality"].values():  # every selected sample had both answers: a label each
        assert all(r["labelled"] == r["selected"] and sum(r["shares"].values()) == pytest.approx(1) for r in rows)
    # benchmarks.fidelity_compare on that LaDa run (against itself): a row per (round, pair) and run, the server
    # pairs with their w_k spread, and the accuracy rows of predictions.jsonl
    from benchmarks import fidelity_compare
    lada = tmp_path / "runs" / "lada-seed0"
    md = fidelity_compare.main([str(lada), str(lada), "--out", str(tmp_path / "fc.md")]).splitlines()
    server_rows = [ln.split(" | ") for ln in md if ln.startswith("| 1 | server<-client1 |")]
    assert [r[2] for r in server_rows] == ["before", "after"] and server_rows[0][3:] == server_rows[1][3:]
    w_min, w_max, h = (float(x.strip(" |")) for x in server_rows[0][-3:])
    assert 0 < w_min <= w_max <= 1 and 0 < h <= 1.0 + 1e-6
    assert any(ln.startswith("| 1 | client1 | ") for ln in md)


def test_demo_methods_controls_and_learning_curves_on_smoke(tmp_path):
    """benchmarks.demo_methods --controls on the smoke world (one seed, two rounds): every round evaluated (the
    learning curves), the controls' accuracies with paired intervals, the matched selectors' oracle shares at
    LaDa's sizes, the reward AUCs with the real and the gold teacher, the gold-teacher check and the claims; a
    second call reuses every run."""
    from benchmarks import demo_methods
    args = ["--conf", "smoke.yaml", "--seeds", "0", "--methods", "standalone", "lada", "--controls",
            "--no-preconditions", "--jobs", "1", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path),
            "rounds=2", "generation.max_new_tokens=4", "eval.max_new_tokens=4"]
    out = demo_methods.main(args)
    runs = ["standalone", "lada", *demo_methods.CONTROLS]
    for n in ("client1", "client2", "server"):
        for kind in ("lenient", "strict"):
            curves = out["curves"][f"{n} 0-shot {kind}"]
            assert list(curves) == runs and all(len(ys) == 3 for ys in curves.values())  # rounds 0, 1, 2
            acc = out["controls"]["accuracy"][f"{n} 0-shot {kind}"]
            assert list(acc) == runs and curves["lada-gold"][-1] == acc["lada-gold"][0]
            for c in demo_methods.CONTROLS:
                mean, low, high = out["controls"]["gain"][f"{c}-standalone 0-shot {kind}"][n]
                assert mean == pytest.approx(100 * (acc[c][0] - acc["standalone"][0])) and low <= mean <= high
    saved = {c: json.loads((tmp_path / "runs" / f"{c}-seed0" / "results.json").read_text()) for c in runs}
    lada_sizes = [(r["round"], r["pair"], r["selected"]) for r in saved["lada"]["selected_per_round"]]
    for c in demo_methods.SELECTORS:
        assert [(r["round"], r["pair"], r["selected"]) for r in saved[c]["selected_per_round"]] == lada_sizes
    assert saved["lada"]["config"]["analysis"]["all_answers"] is True  # the random baseline over all of D_p
    assert all(r["random_labelled"] == 32 for r in saved["lada"]["selection_quality"])
    cells = {f"{t} {p}" for t, p, _ in lada_sizes}
    assert set(out["controls"]["selector_shares"]) == cells == set(out["controls"]["reward_auc"])
    for row in out["controls"]["selector_shares"].values():
        assert set(row) == {"lada", *demo_methods.SELECTORS, "random_over_dp"}
    text = (tmp_path / "demo_methods.md").read_text()
    for line in ("## Controls", "### Learning curves, 0-shot strict", "### Matched selectors", "### Reward AUC",
                 "LaDa, gold teacher − Standalone, 0-shot lenient", "correctable selector − LaDa, 0-shot strict",
                 "- check: LaDa, gold teacher ahead of Standalone on every client",
                 "the filter's correctable share above random for every pair after round 1"):
        assert line in text, line
    stamps = {c: (tmp_path / "runs" / f"{c}-seed0" / "results.json").stat().st_mtime_ns for c in runs}
    again = demo_methods.main([*args[:4], "--control-seeds", "0", *args[4:]])
    assert {c: (tmp_path / "runs" / f"{c}-seed0" / "results.json").stat().st_mtime_ns for c in runs} == stamps
    assert again["control_seeds"] == [0] and again["controls"]["accuracy"] == out["controls"]["accuracy"]
    with pytest.raises(SystemExit):  # the controls' seeds must be some of the methods' (paired intervals)
        demo_methods.main([*args[:4], "--control-seeds", "1", *args[4:]])
    with pytest.raises(SystemExit):  # the matched selectors replay LaDa's sizes
        demo_methods.main(["--conf", "smoke.yaml", "--methods", "standalone", "--controls"])


def test_demo_methods_runs_only_the_controls_named(tmp_path):
    """`--controls lada-gold`: that control alone; LaDa answers only what it exchanges (no matched selector)."""
    from benchmarks import demo_methods
    out = demo_methods.main(["--conf", "smoke.yaml", "--seeds", "0", "--methods", "standalone", "lada", "--controls",
                             "lada-gold", "--no-preconditions", "--jobs", "1", "--runs-dir", str(tmp_path / "runs"), "--out",
                             str(tmp_path), "rounds=1", "generation.max_new_tokens=4", "eval.max_new_tokens=4"])
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["lada-gold-seed0", "lada-seed0", "standalone-seed0"]
    assert list(out["controls"]["accuracy"]["client1 0-shot lenient"]) == ["standalone", "lada", "lada-gold"]
    assert set(out["controls"]["checks"]) == {"lada-gold ahead of standalone on every client"}
    lada = json.loads((tmp_path / "runs" / "lada-seed0" / "results.json").read_text())
    assert lada["config"]["analysis"]["all_answers"] is False
    with pytest.raises(SystemExit):
        demo_methods.main(["--conf", "smoke.yaml", "--controls", "lada-nope"])


def test_demo_methods_jobs_run_the_cells_in_processes_of_their_own(tmp_path):
    """--jobs 2: the (method, seed) runs go two at a time in spawned processes; the tables come from the runs they
    wrote, which a later call in one process reuses as they are (the same numbers); the wall time is recorded."""
    from benchmarks import demo_methods
    import math
    assert demo_methods.in_parallel(2, [(math.pow, 2, 3), (math.pow, 3, 2), (math.pow, 2, 0)]) == [8.0, 9.0, 1.0]
    args = ["--conf", "smoke.yaml", "--seeds", "0", "--no-preconditions", "--no-controls", "--runs-dir",
            str(tmp_path / "runs"), "--out", str(tmp_path), "rounds=1", "generation.max_new_tokens=4",
            "eval.max_new_tokens=4"]
    out = demo_methods.main(["--jobs", "2", *args])  # the default methods: the three compared
    saved = json.loads((tmp_path / "demo_methods.json").read_text())
    assert saved["jobs"] == 2 and saved["wall_seconds"] > 0
    stamps = {m: (tmp_path / "runs" / f"{m}-seed0" / "results.json").stat().st_mtime_ns
              for m in ("standalone", "fedkd", "lada")}
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(f"{m}-seed0" for m in stamps)
    again = demo_methods.main(["--jobs", "1", *args])
    assert {m: (tmp_path / "runs" / f"{m}-seed0" / "results.json").stat().st_mtime_ns for m in stamps} == stamps
    assert again["accuracy"] == out["accuracy"] and again["gain"] == out["gain"]
    with pytest.raises(SystemExit):  # a control is not a method to compare
        demo_methods.main(["--methods", "lada-gold", *args])


def test_demo_methods_command_line_runs_the_controls_on_the_first_seed_by_default():
    """The issue's command, `--seeds 0 1 2` and nothing else, prints the controls: every one, on the first seed, with
    as many runs at once as this process has CPUs; --no-controls, or no LaDa among the methods, runs none."""
    from benchmarks.demo_methods import CONTROLS, options, usable_cpus
    args, controls, seeds = options(["--seeds", "0", "1", "2"])
    assert controls == list(CONTROLS) and seeds == [0] and args.jobs == usable_cpus() >= 1
    assert options(["--seeds", "2", "1"])[2] == [2]
    assert options(["--controls", "lada-gold", "--control-seeds", "0", "1"])[1:] == (["lada-gold"], [0, 1])
    assert options(["--no-controls"])[1] == [] and options(["--methods", "standalone", "fedkd"])[1] == []
    for wrong in (["--controls", "--no-controls"], ["--methods", "standalone", "--controls"],
                  ["--seeds", "0", "--control-seeds", "1"]):
        with pytest.raises(SystemExit) as e:
            options(wrong)
        assert e.value.code == 2, wrong


def test_demo_methods_reuses_only_a_run_of_the_same_fingerprint(tmp_path):
    """A finished run is reused only where its recorded fingerprint is this command's: the same config (a changed
    recipe key, or rounds), the same ladalit sources; an unfinished one is run again."""
    import os
    from benchmarks.demo_methods import run_cell
    base = ["rounds=1", "generation.max_new_tokens=4", "eval.max_new_tokens=4"]
    results = tmp_path / "runs" / "standalone-seed0" / "results.json"

    def ran(overrides) -> bool:
        before = results.stat().st_mtime_ns if results.exists() else None
        os.utime(results, ns=(1, 1)) if before else None
        run_cell("standalone", 0, overrides, tmp_path / "runs", "smoke.yaml")
        return results.stat().st_mtime_ns != 1
    assert ran(base) and not ran(base)  # the first call runs, the same call reuses
    assert ran([*base, "clients.client1.train.lr=1.0e-4"]) and not ran([*base, "clients.client1.train.lr=1.0e-4"])
    assert ran(base)  # back to the first recipe: run again, not the other recipe's run
    assert ran(["rounds=2", *base[1:]])  # more rounds than recorded: run again
    fp = tmp_path / "runs" / "standalone-seed0" / "fingerprint.json"
    fp.write_text(fp.read_text().replace('"code": "', '"code": "0'))  # another version of the ladalit sources
    assert ran(["rounds=2", *base[1:]])
    saved = json.loads(results.read_text())
    del saved["nonfinite_skipped"]  # a results.json that only a finished run's last save completes
    results.write_text(json.dumps(saved))
    assert ran(["rounds=2", *base[1:]])


def test_sft_prompt_probe_trains_each_style_from_a_fresh_model():
    """benchmarks/sft_prompt_probe.py on an untrained tiny zoo-shaped model: a row per (style, epoch), and
    each style starts from the same loaded model."""
    from benchmarks.sft_prompt_probe import probe
    from ladalit.demo import zoo
    from ladalit.demo.synthetic import SyntheticConfig, generate

    member = zoo.ZooMember("probe", "llama", zoo.CHAR, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                           intermediate_size=32)
    recs = generate(SyntheticConfig(num_records=12, seed=3))
    tok = zoo.build_tokenizer(zoo.CHAR, [])
    rows = probe(lambda: (zoo.build_model(member, tok), tok), recs[:8], recs[8:], epochs=1, max_new_tokens=4)
    assert [(r["style"], r["epoch"]) for r in rows] == [("direct", 0), ("direct", 1), ("cot", 0), ("cot", 1)]
    assert rows[0]["accuracy"] == rows[2]["accuracy"]  # the same starting model for both styles
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)


def test_demo_rewards_auc_and_buffer_matching_by_hand():
    """benchmarks/demo_rewards.py: the AUC of hand-made scores, and buffer rows matched to their samples by
    the nearest embedding, with their rounds from the trained counts."""
    import torch

    from benchmarks.demo_rewards import auc, buffer_rows, split_auc
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.1], [0.9, 0.1]) == 0.25  # one loss, one tie
    assert auc([], [0.5]) != auc([], [0.5])  # NaN: nothing to compare
    assert split_auc([(0.9, True), (0.1, False), (0.5, False)], 1) == 1.0
    emb = torch.eye(3)
    buf = {"buf_x": torch.zeros(8, 3), "buf_r": torch.zeros(8), "buf_count": torch.tensor(3), "buf_ptr": torch.tensor(3)}
    buf["buf_x"][:3] = torch.tensor([[0.0, 1.0, 1e-4], [1.0, 0.0, 0.0], [0.0, 1e-4, 2.0]])
    buf["buf_r"][:3] = torch.tensor([0.5, 0.25, 0.75])
    assert buffer_rows(buf, emb, ["a", "b", "c"], [(1, 2), (2, 1)]) == [(1, "b", 0.5), (1, "a", 0.25), (2, "c", 0.75)]
    with pytest.raises(ValueError, match="does not match"):
        buffer_rows(buf, emb, ["a", "b", "c"], [(1, 2)])
    buf["buf_x"][0] = torch.tensor([1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="matches no public sample"):
        buffer_rows(buf, emb, ["a", "b", "c"], [(1, 2), (2, 1)])


def test_flower_load_memory_summary_by_hand():
    """benchmarks.flower_load: peaks per process kind (the kernel's VmHWM), per node (its processes summed at
    one sample), the server side and the total, from samples written out here."""
    from benchmarks.flower_load import overrides_for, summarise
    from ladalit.core.config import load_config
    procs = {1: {"kind": "site-worker", "role": "node0", "hwm_kib": 2048}, 2: {"kind": "site-worker", "role": "node1",
             "hwm_kib": 1024}, 3: {"kind": "flower-superlink", "role": "superlink", "hwm_kib": 512}}
    samples = [{"rss_kib": 3072, "pss_kib": 2048, "by_role_rss_kib": {"node0": 1024, "node1": 1024, "superlink": 1024},
                "by_role_pss_kib": {"node0": 512, "node1": 512, "superlink": 1024}},
               {"rss_kib": 4096, "pss_kib": 3072, "by_role_rss_kib": {"node0": 3072, "superlink": 1024},
                "by_role_pss_kib": {"node0": 2048, "superlink": 1024}}]
    mem = summarise(procs, samples, 2)
    assert mem["site_worker_peak_rss_mib"] == {"n": 2, "max": 2.0, "min": 1.0}
    assert mem["per_node_peak_rss_mib"] == [3.0, 1.0] and mem["per_node_peak_pss_mib"] == [2.0, 0.5]
    assert mem["server_side_peak_rss_mib"] == 1.0 and mem["total_peak_rss_mib"] == 4.0
    assert mem["total_peak_pss_mib"] == 3.0 and mem["peak_rss_mib_by_kind"]["flower-superlink"] == {"n": 1, "max": 0.5}
    cfg = load_config(["conf=smoke.yaml", *overrides_for(5, 1)])  # smoke's two clients, repeated
    assert list(cfg.clients) == [f"client{i}" for i in range(1, 6)]
    assert [c.model.arch for c in cfg.clients.values()] == ["llama", "gemma2", "llama", "gemma2", "llama"]
    assert cfg.clients.client4.model.lora.enabled and not cfg.clients.client5.model.lora.enabled


def test_demo_chain_lengths_counts_longer_and_shorter_chains(tmp_path):
    """benchmarks.demo_chain_lengths: an answer's chain is its equations before the option check; per client and
    chain length, the shares of longer and shorter chains and the strict accuracy; end to end on a smoke run."""
    from benchmarks import demo_chain_lengths as cl
    assert cl.chain_length(" 6+2=8. 8*2=16. (A) 16 vs 16 yes. The answer is (A).") == 2
    assert cl.chain_length(" The answer is (B).") == 0
    preds = [{"round": 1, "shots": 0, "participant": "client1", "id": i, "text": text, "stated": s, "gold": "A"}
             for i, text, s in [("a", "1+1=2. 2+1=3. (A)", "A"), ("b", "1+1=2. (A)", "B"), ("c", "1=1. 2=2. 3=3. (A)", "A")]]
    preds += [{**preds[0], "participant": "server"}, {**preds[0], "round": 0}, {**preds[0], "shots": 1}]
    rows = cl.length_rows(preds, {"a": 2, "b": 2, "c": 2}, round=1)
    assert rows == [{"participant": "client1", "steps": 2, "n": 3, "longer": 1 / 3, "shorter": 1 / 3, "strict": 2 / 3}]
    from ladalit.run import main as run_main
    assert run_main(["conf=smoke.yaml", f"output_dir={tmp_path}", "run_name=r", "rounds=1", "method=standalone",
                     "tracking.wandb.mode=disabled", "generation.max_new_tokens=4", "eval.max_new_tokens=4"]) == 0
    text = cl.main([str(tmp_path / "r"), "--round", "0", "--out", str(tmp_path / "cl.md")])
    body = [ln.split(" | ") for ln in text.splitlines()[2:]]
    assert {(r[2], r[3]) for r in body} == {(k, n) for k in ("client1", "client2") for n in ("1", "2")}
    assert all(r[1] == "0" for r in body) and (tmp_path / "cl.md").read_text() == text + "\n"


def test_demo_methods_workers_end_with_a_killed_benchmark(tmp_path):
    """A benchmark killed by a signal leaves no pool worker behind to go on writing into its run directories."""
    import os
    import signal
    import subprocess
    import sys
    import time
    script = tmp_path / "bench.py"
    script.write_text("import os, sys, time\nsys.path.insert(0, os.getcwd())\n"
                      "from benchmarks.demo_methods import in_parallel\n"
                      "def report(path):\n    open(path, 'w').write(str(os.getpid()))\n    time.sleep(120)\n"
                      "if __name__ == '__main__':\n"
                      f"    in_parallel(2, [(report, r'{tmp_path}/w0'), (report, r'{tmp_path}/w1')])\n")
    bench = subprocess.Popen([sys.executable, str(script)], cwd=os.getcwd())
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"w{i}").is_file() for i in (0, 1)) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.2)
        workers = [int((tmp_path / f"w{i}").read_text()) for i in (0, 1)]
        bench.send_signal(signal.SIGKILL)
        bench.wait(10)
        deadline = time.monotonic() + 15
        alive = workers
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [w for w in workers if os.path.exists(f"/proc/{w}") and "Z" not in
                     open(f"/proc/{w}/stat").read().split()[2]]
        assert alive == [], f"workers {alive} outlived the killed benchmark"
    finally:
        bench.kill()


def test_demo_arithmetic_finds_false_equations_and_comparisons(tmp_path):
    """benchmarks.demo_arithmetic: an answer's equations and option comparisons checked by hand-made cases; per
    client and round, the shares of answers with a false one; the true equations the rejected answer writes after
    it parts from the chosen one."""
    from benchmarks import demo_arithmetic as da
    assert da.equation_true("20", "-", "14", "6") and not da.equation_true("5", "+", "5", "7")
    assert da.equation_true("9", "/", "2", "4") and not da.equation_true("3", "/", "0", "0")
    assert da.answer_faults(" 4+3=7. (A) 7 vs 7 yes. (B) 2 vs 7 no. The answer is (A).") == (False, False)
    assert da.answer_faults(" 4+3=8. (A) 7 vs 8 yes. The answer is (A).") == (True, True)
    assert da.answer_faults(" 4+3=7. 7*2=14. (A) 14 vs 14 no.") == (False, True)
    preds = [{"round": 1, "shots": 0, "participant": "client1", "text": t, "stated": s, "gold": "A"}
             for t, s in [(" 1+1=3. (A) 3 vs 3 yes.", "A"), (" 1+1=2. (A) 2 vs 2 yes.", "A"), (" 2*2=4. (A) 1 vs 4 yes.", "B")]]
    preds += [{**preds[0], "participant": "server"}, {**preds[0], "shots": 1}, {**preds[1], "round": 0}]
    assert da.fault_rows(preds) == [
        {"participant": "client1", "round": 0, "n": 1, "false_equation": 0.0, "false_comparison": 0.0, "strict": 1.0},
        {"participant": "client1", "round": 1, "n": 3, "false_equation": 1 / 3, "false_comparison": 1 / 3,
         "strict": 2 / 3}]
    # parts at "8" (a wrong operand): the rest of the rejected answer holds two true equations of three
    assert da.true_after_difference(" 10+1=11. 11+5=16.", " 10+8=18. 18+5=23. 23-1=20.") == (2, 3)
    assert da.true_after_difference(" 2+2=4.", " 2+2=4.") == (0, 0)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "predictions.jsonl").write_text("\n".join(json.dumps(p) for p in preds) + "\n")
    text = da.main([str(tmp_path / "r"), "--out", str(tmp_path / "a.md")])
    assert "| r | client1 | 1 | 3 | 33 | 33 | 66.7 |" in text.splitlines()
    assert (tmp_path / "a.md").read_text() == text + "\n"
