"""benchmarks/demo_server_probe.py: precondition e's samples, their faults, the server's MARD on them, and the
probe end to end on smoke."""
import json

import torch

from benchmarks import demo_server_probe as probe
from ladalit.core.config import load_config
from ladalit.core.experiment import build_experiment, prepared_records
from ladalit.data.records import MCRecord

RIGHT_1 = " 3+4=7. (A) 7 vs 7 yes. (B) 6 vs 7 no. The answer is (A)."
GUESS_2 = " 3+4=8. 8*2=15. (A) 7 vs 15 no. (B) 6 vs 15 no. The answer is (A)."  # right letter, false chain


def rec(i, domain, steps, answer="A"):
    sentences = " ".join(f"Step {j}." for j in range(steps))
    return MCRecord(id=f"r{i}", question=f"Tom has 3 apples. {sentences} How many?", options=["7", "6"],
                    answer=answer, rationale=None, domain=domain)


def test_own_domain_pairs_keep_right_own_domain_answers_up_to_max_steps():
    public = [rec(0, "calendar", 1), rec(1, "calendar", 2), rec(2, "kitchen", 1), rec(3, "shared", 1),
              rec(4, "calendar", 1, answer="B")]
    y_k = {"client1": [RIGHT_1, GUESS_2, RIGHT_1, RIGHT_1, RIGHT_1],  # r2: another's domain, r3: shared,
           "client2": [RIGHT_1, RIGHT_1, " The answer is (B).", RIGHT_1, RIGHT_1]}  # r4: wrong letter
    y_s = ["s0", "s1", "s2", "s3", "s4"]
    own = {"client1": "calendar", "client2": "kitchen"}
    pairs = probe.own_domain_pairs(public, y_k, y_s, own)
    assert [(x.id, y, ys) for x, y, ys in pairs] == [("r0", RIGHT_1, "s0"), ("r1", GUESS_2, "s1")]
    assert [x.id for x, _, _ in probe.own_domain_pairs(public, y_k, y_s, own, max_steps=1)] == ["r0"]
    assert probe.lesson_faults(pairs) == {1: [1, 0], 2: [1, 1]}


def test_server_mard_trains_against_a_frozen_reference_and_releases_it(tmp_path):
    cfg = load_config(["conf=smoke.yaml", f"output_dir={tmp_path}", "tracking.wandb.mode=disabled"])
    exp = build_experiment(cfg)
    truth = {r.id: r for r in prepared_records(cfg)}
    public = [truth[x.id] for x in exp.data.public][:6]
    pairs = [(x, RIGHT_1, GUESS_2) for x in public]
    s = exp.server
    before = {k: v.clone() for k, v in s.state_dict().items()}
    probe.mard(exp, s, pairs, epochs=2, seed=0, lr=1e-2, lada=cfg.lada)
    assert any(not torch.equal(before[k], v) for k, v in s.state_dict().items())
    assert s.ref_model is None and not s.reference_frozen  # the next recipe freezes its own reference
    chosen, rejected = s.pair_logprobs([probe.zero_shot_prompt(x) for x in public], [RIGHT_1] * 6, [GUESS_2] * 6)
    assert (chosen - rejected).mean() > 0  # the client's answer is now preferred over the server's


def test_probe_on_smoke_end_to_end(tmp_path):
    out = tmp_path / "probe.json"
    res = probe.main(["--conf", "smoke.yaml", "--loss", "mard", "--recipes", "1e-3:0", "1e-3:1", "--out", str(out),
                      "generation.max_new_tokens=4", "eval.max_new_tokens=4"])
    data = json.loads(out.read_text())
    assert data["loss"] == "mard" and res["rows"] == data["rows"]
    assert data["pairs"] == sum(n for n, _ in data["faulty"].values())  # every sample counted by chain length
    assert set(data["before"]) >= {"shared"} and [r["epochs"] for r in data["rows"]] == [0, 1]
    assert data["rows"][0]["after"] == data["before"]  # no update: the restored server scores as before
