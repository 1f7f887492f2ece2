"""End to end on conf/smoke.yaml: every method completes and writes its results."""
import json
import re

import pytest
import yaml

from ladalit.core.channel import Channel
from ladalit.core.config import load_config
from ladalit.core.experiment import build_experiment
from ladalit.core.results import Results
from ladalit.run import execute, main
from tests.channel_audit import decoded, strings_in
from tests.demo.test_oracle import check_selection_quality


def run_smoke(tmp_path, *overrides):
    cfg = load_config(["conf=smoke.yaml", f"output_dir={tmp_path}", "run_name=r", "quiet=true", *overrides])
    run_dir, out = execute(cfg, quiet=True)
    return cfg, run_dir, out


def check_common(cfg, run_dir, out):
    for f in ("results.json", "accuracy.csv", "selection.csv", "communication.csv", "config.yaml"):
        assert (run_dir / f).is_file(), f
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["config"]["method"] == cfg.method
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["seed"] == cfg.seed
    names = {r["participant"] for r in saved["accuracy"]}
    assert names == {"server", *cfg.clients}
    for r in saved["accuracy"]:
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["invalid_rate"] <= 1.0
    rounds = {r["round"] for r in saved["accuracy"]}
    assert rounds == set(range(0, cfg.rounds + 1))  # round 0: the models as they start, before any transfer
    assert {(r["participant"], r["shots"]) for r in saved["accuracy"] if r["round"] == 0} == \
        {(p, s) for p in ("server", *cfg.clients) for s in cfg.eval.shots}
    assert {r["shots"] for r in saved["accuracy"]} == {0, 1}
    return saved


def sft_prompt_spy(monkeypatch, module):
    """Record the prompts and responses of every supervised_finetune call made from `module`."""
    seen, real = [], module.supervised_finetune

    def spy(fabric, participant, optimizer, prompts, responses, *args, **kwargs):
        seen.append((list(prompts), list(responses)))
        return real(fabric, participant, optimizer, prompts, responses, *args, **kwargs)

    monkeypatch.setattr(module, "supervised_finetune", spy)
    return seen


def check_private_sft_is_direct(seen, n_calls):
    """The private-train SFT (sft_prompt=direct, the default), `n_calls` of it: short answer statements after
    "Answer:", never after the step-by-step instruction."""
    assert len(seen) == n_calls
    for prompts, responses in seen:
        assert prompts and all(p.endswith("\nAnswer:") for p in prompts)
        assert all(re.fullmatch(r" The answer is \([A-D]\)\.", r) for r in responses)


def test_lada_smoke_run_writes_accuracy_selections_and_bytes(tmp_path, monkeypatch):
    from ladalit.method import client as lada_client
    seen = sft_prompt_spy(monkeypatch, lada_client)
    cfg, run_dir, out = run_smoke(tmp_path)
    saved = check_common(cfg, run_dir, out)
    check_private_sft_is_direct(seen, len(cfg.clients))  # ❶ the reference SFT
    pairs = {(s["round"], s["pair"]) for s in saved["selected_per_round"]}
    for t in (1, 2):
        for k in cfg.clients:
            assert (t, f"{k}<-server") in pairs and (t, f"server<-{k}") in pairs
    comm = {(c["round"], c["direction"], c["client"]): c["bytes"] for c in saved["communication"]}
    for t in (1, 2):
        for k in cfg.clients:
            assert comm[(t, "client->server", k)] > 0 and comm[(t, "server->client", k)] > 0
    # round 1 selects the prototypes: ceil(init_fraction * |D_p|) of them for every pair
    r1 = [s for s in saved["selected_per_round"] if s["round"] == 1]
    assert all(s["selected"] == 8 for s in r1)  # ceil(0.25 * 32)
    # what the models said: every evaluated generation, and every exchanged reasoning answer
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    n_evals = sum(r["n"] for r in saved["accuracy"])
    assert len(preds) == n_evals
    for r in saved["accuracy"]:
        mine = [p for p in preds if (p["round"], p["participant"], p["shots"]) == (r["round"], r["participant"], r["shots"])]
        assert len(mine) == r["n"]
        assert sum(p["parsed"] == p["gold"] for p in mine) / r["n"] == pytest.approx(r["accuracy"])
    responses = [json.loads(line) for line in (run_dir / "responses.jsonl").read_text().splitlines()]
    server_ids_r1 = {x["id"] for x in responses if x["round"] == 1 and x["participant"] == "server"}
    assert len(server_ids_r1) == 8  # the server answered the 8 prototypes (shared by every pair) once each
    assert {x["participant"] for x in responses} == {"server", *cfg.clients}
    check_selection_quality(cfg, run_dir)  # the demo world's oracle rows (tests/demo/test_oracle.py)


@pytest.mark.parametrize("override", ["lada.filter=none", "lada.loss=ce", "lada.server_weights=uniform",
                                      "reward.granularity=set"])
def test_lada_ablations_complete(tmp_path, override):
    cfg, run_dir, out = run_smoke(tmp_path, override, "rounds=2")
    saved = check_common(cfg, run_dir, out)
    if override == "lada.filter=none":  # all of D_p, every round, every pair
        assert all(s["selected"] == 32 for s in saved["selected_per_round"])


def test_standalone_sends_nothing_but_the_start_of_each_round(tmp_path, monkeypatch):
    from ladalit.baselines import standalone
    seen = sft_prompt_spy(monkeypatch, standalone)
    cfg, run_dir, out = run_smoke(tmp_path, "method=standalone")
    saved = check_common(cfg, run_dir, out)
    check_private_sft_is_direct(seen, len(cfg.clients) * cfg.rounds)
    # the roles' exchange: LocalRound(t) with no texts down, Ready up; nothing else crosses
    assert {(r["round"], r["client"]) for r in saved["communication"]} == \
        {(t, k) for t in range(1, cfg.rounds + 1) for k in cfg.clients}
    assert all(r["answers_sent"] == 0 and r["bytes"] < 100 for r in saved["communication"])


def test_fedkd_sends_the_llm_answers_for_all_of_the_public_set(tmp_path):
    cfg, run_dir, out = run_smoke(tmp_path, "method=fedkd")
    saved = check_common(cfg, run_dir, out)
    down = {(c["round"], c["client"]): c["bytes"] for c in saved["communication"] if c["direction"] == "server->client"}
    up = [c for c in saved["communication"] if c["direction"] == "client->server"]
    assert {k for t, k in down if t == 1} == set(cfg.clients)
    # the answers go down once, in round 1; later rounds and every reply (Ready) are a few bytes
    assert all(b > 300 for (t, _), b in down.items() if t == 1)
    assert all(b < 100 for (t, _), b in down.items() if t > 1) and all(c["bytes"] < 100 for c in up)


def test_no_private_text_crosses_the_channel(tmp_path):
    cfg = load_config(["conf=smoke.yaml", f"output_dir={tmp_path}", "run_name=r", "quiet=true", "rounds=2"])
    from ladalit.method import lada
    exp = build_experiment(cfg)
    channel = Channel(keep_payloads=True)
    lada.run(exp, channel, Results())
    public_text = {x.question for x in exp.data.public}
    private = [x for c in exp.data.clients for x in c.train + c.test if x.question not in public_text]
    assert private and channel.payloads
    blob = b"".join(channel.payloads)
    crossed = {s for p in decoded(channel) for s in strings_in(p)}  # every string that crossed, as received
    for x in private:
        assert x.question.encode() not in blob and x.id not in crossed
        assert not any(x.question in s for s in crossed if isinstance(s, str))
    # what does cross: public ids and answers
    assert any(x.id in crossed for x in exp.data.public)


def test_cli_main_returns_zero_and_prints_the_table(tmp_path, capsys):
    assert main(["conf=smoke.yaml", f"output_dir={tmp_path}", "run_name=cli", "rounds=1", "eval.shots=[0]"]) == 0
    out = capsys.readouterr().out
    assert "0-shot lenient/strict (invalid)" in out and "client1" in out and "server" in out
    assert (tmp_path / "cli" / "results.json").is_file()


def test_cli_main_with_quiet_prints_nothing_and_writes_everything(tmp_path, capfd, monkeypatch):
    """quiet=true: no header, no progress, no table, no results path, no W&B lines, on either stream."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert main(["conf=smoke.yaml", f"output_dir={tmp_path}", "run_name=q", "rounds=1", "eval.shots=[0]",
                 "quiet=true", "tracking.wandb.mode=offline"]) == 0
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    run_dir = tmp_path / "q"
    assert (run_dir / "results.json").is_file() and (run_dir / "accuracy.png").is_file()
    assert (run_dir / "models").is_dir() and (run_dir / "wandb").is_dir()


def test_fedmkt_runs_from_the_cli_config_and_sends_only_sparse_topk(tmp_path):
    cfg, run_dir, out = run_smoke(tmp_path, "method=fedmkt", "fedmkt.top_k=4")
    saved = check_common(cfg, run_dir, out)
    assert {c["direction"] for c in saved["communication"]} == {"client->server", "server->client"}


def test_zoo_models_run_lada_end_to_end(tmp_path, monkeypatch):
    """The conf/demo.yaml path: participants from `source: zoo` (pre-trained on first use, cached),
    with their own trained tokenizers, through a LaDa round."""
    from ladalit.demo import zoo
    from ladalit.demo.synthetic import SyntheticConfig
    monkeypatch.setenv("LADALIT_CACHE", str(tmp_path / "zoo"))
    corpus = SyntheticConfig(num_records=200, seed=11)
    for name, arch, tok in [("t-server", "qwen3", zoo.BPE), ("t-client", "llama", zoo.SP)]:
        monkeypatch.setitem(zoo.ZOO, name, zoo.ZooMember(
            name, arch, tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
            corpus=corpus, train=zoo.TrainSpec(steps=3, batch_size=8, warmup=1)))
    shown, load = [], zoo.load_member
    monkeypatch.setattr(zoo, "load_member", lambda name, **kw: shown.append(kw.get("progress", True)) or load(name, **kw))
    cfg, run_dir, out = run_smoke(
        tmp_path, "rounds=1", "eval.shots=[0]", "server.model.source=zoo", "server.model.name_or_path=t-server",
        "clients.client1.model.source=zoo", "clients.client1.model.name_or_path=t-client")
    saved = json.loads((run_dir / "results.json").read_text())
    assert {r["participant"] for r in saved["accuracy"]} == {"server", "client1", "client2"}
    assert len(list((tmp_path / "zoo").glob("t-server-*"))) == 1  # pre-trained once and cached
    assert shown == [False, False]  # quiet=true: no pre-training progress either
