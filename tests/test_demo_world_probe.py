"""benchmarks/demo_world_probe.py: a candidate world's zoo changes, then the preconditions."""
import json

import pytest

from benchmarks import demo_world_probe as probe
from ladalit.demo import zoo
from ladalit.demo.synthetic import SHARED, SyntheticConfig, generate, num_steps


def test_variant_changes_steps_and_partial_curriculum_only():
    base = zoo.ZOO["client-llama"]
    m = probe.variant(base, {"steps": 3000, "partial": [[3, 0.2], [4, 0.1]]})
    assert m.train.steps == 3000 and m.partial_steps == ((SHARED, 3, 0.2), (SHARED, 4, 0.1))
    assert m.train.lr == base.train.lr and m.rationale_max_steps == base.rationale_max_steps
    assert zoo.member_hash(m) != zoo.member_hash(base)
    with pytest.raises(SystemExit, match="unknown change"):
        probe.variant(base, {"lr": 1.0})


def test_variant_resizes_a_member():
    base = zoo.ZOO["server"]
    m = probe.variant(base, {"hidden_size": 256, "num_layers": 6, "num_heads": 8})
    assert (m.hidden_size, m.num_layers, m.num_heads, m.head_dim) == (256, 6, 8, 32)
    assert m.intermediate_size == base.intermediate_size and m.train == base.train
    assert zoo.member_hash(m) != zoo.member_hash(base)


def test_variant_shortens_the_curriculum_and_names_other_domains():
    base = zoo.ZOO["client-gemma"]
    m = probe.variant(base, {"max_steps": 1, "partial": [["market", 2, 1.0], [2, 0.3]]})
    assert m.rationale_max_steps == 1 and m.partial_steps == (("market", 2, 1.0), (SHARED, 2, 0.3))
    recs = generate(SyntheticConfig(num_records=2000, seed=2))
    cell = lambda d, n: [r for r in recs if r.domain == d and num_steps(r) == n]  # noqa: E731
    assert all(zoo.taught(m, r) for r in cell("market", 2)) and all(zoo.taught(m, r) for r in cell(SHARED, 1))
    assert 0 < sum(zoo.taught(m, r) for r in cell(SHARED, 2)) < len(cell(SHARED, 2))


def test_probe_installs_the_variants_and_quotes_its_command(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "ZOO", dict(zoo.ZOO))  # the probe replaces entries; put the real zoo back after
    monkeypatch.setenv("LADALIT_CACHE", str(tmp_path / "cache"))
    variants = json.dumps({"client-gemma": {"partial": [[3, 0.3]]}})
    probe.main(["--variants", variants, "--cache", str(tmp_path / "cache"), "--seeds", "0", "--conf", "smoke.yaml",
                "--out", str(tmp_path), "--learn-train", "4", "--learn-test", "4", "generation.max_new_tokens=4",
                "eval.max_new_tokens=4"])
    assert zoo.ZOO["client-gemma"].partial_steps == ((SHARED, 3, 0.3),)
    data = json.loads((tmp_path / "demo_preconditions.json").read_text())
    assert data["command"].startswith("python -m benchmarks.demo_world_probe --variants '{")
    assert "--conf smoke.yaml" in (tmp_path / "demo_preconditions.md").read_text()
    with pytest.raises(SystemExit, match="no zoo member"):
        probe.main(["--variants", '{"client-nope": {}}', "--cache", str(tmp_path / "cache")])


def test_probe_then_runs_the_server_probe(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "ZOO", dict(zoo.ZOO))
    monkeypatch.setenv("LADALIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "server_probe.json"
    probe.main(["--variants", "{}", "--cache", str(tmp_path / "cache"), "--then", "server_probe", "--conf",
                "smoke.yaml", "--recipes", "1e-3:0", "--out", str(out), "generation.max_new_tokens=4",
                "eval.max_new_tokens=4"])
    data = json.loads(out.read_text())
    assert data["command"].startswith("python -m benchmarks.demo_world_probe --variants '{}'")
    assert "--then server_probe" in data["command"] and data["rows"][0]["after"] == data["before"]
