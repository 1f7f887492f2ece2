"""Config errors exit 2 with one line naming the key; conf= resolution; --help.

The CLI's cases call `ladalit.run.main(argv)` in-process; `--help` runs as a subprocess too, to prove the module's
real exit code (tests/test_bad_inputs.py does the same for a config error's exit 2)."""
import re
import subprocess
import sys

import pytest

from ladalit.core.config import ConfigError, help_text, load_config
from ladalit.run import main

RUN = [sys.executable, "-m", "ladalit.run"]


def cli(capsys, *args):
    """(exit code, stdout, stderr) of `python -m ladalit.run ARGS`, in-process."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("override,expected", [
    ("foo=1", "error: unknown config key 'foo' (allowed keys here: analysis, clients, data, eval, fabric, federation, fedmkt, "
              "filter_net, generation, lada, method, on_nonfinite, output_dir, overwrite, quiet, reasoning, resume, "
              "reward, rounds, run_name, seed, server, sft_prompt, tracking, verbose, wasp)"),
    ("beta=0.5", "error: config key 'beta' moved to 'lada.beta'"),
    ("reward.alph=0.5", "error: unknown config key 'reward.alph' (allowed keys here: alpha, batch, granularity)"),
    ("rounds=abc", "error: config key 'rounds': Value 'abc' of type 'str' could not be converted to Integer"),
    ("method=fedavg", "error: config key 'method': unknown value 'fedavg' (allowed: lada, standalone, fedkd, fedmkt, wasp, sft_cot, socratic_cot, rstar)"),
    ("data.name=mnist", "error: config key 'data.name': unknown value 'mnist' (allowed: synthetic, aqua, "
                        "commonsenseqa, mathinstruct, cot_collection)"),
    ("clients.client1.model.arch=gpt2", "error: config key 'clients.client1.model.arch': unknown value 'gpt2' "
                                        "(allowed: qwen3, qwen2, llama, gemma2, internlm3)"),
    ("reward.alpha=1.5", "error: config key 'reward.alpha': value 1.5 out of range [0.0, 1.0]"),
])
def test_cli_config_errors_exit_2_with_one_line(capsys, override, expected):
    code, out, err = cli(capsys, "conf=smoke.yaml", override)
    assert code == 2
    assert err.strip() == expected
    assert out == ""


def test_unknown_conf_file_names_the_available_ones(capsys):
    code, out, err = cli(capsys, "conf=nope.yaml")
    assert code == 2
    assert err.startswith("error: conf=nope.yaml: no such file (configs in conf/: ")
    assert "smoke.yaml" in err


def test_help_lists_configs_and_main_keys(capsys):
    code, out, err = cli(capsys, "--help")
    assert code == 0
    assert "smoke.yaml" in out and "filter_net.*" in out and "method" in out
    assert help_text() in out


def test_help_as_a_process_exits_0_and_prints_the_help():
    proc = subprocess.run([*RUN, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert help_text() in proc.stdout


def test_file_then_overrides_merge_in_order(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("rounds: 3\nclients:\n  a: {model: {arch: llama}}\n  b: {train: {lr: 0.5}}\n")
    cfg = load_config([f"conf={conf}", "rounds=4", "clients.a.model.hidden_size=16"])
    assert cfg.rounds == 4 and list(cfg.clients) == ["a", "b"]
    assert cfg.clients.a.model.arch == "llama" and cfg.clients.a.model.hidden_size == 16
    assert cfg.clients.b.train.lr == 0.5 and cfg.clients.b.model.arch == "qwen3"  # defaults fill in


def test_unknown_key_inside_a_client_entry_names_the_client_keys(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("clients:\n  a: {modle: {arch: llama}}\n")
    with pytest.raises(ConfigError, match=r"^unknown config key 'clients.a.modle' \(allowed keys here: model, train\)$"):
        load_config([f"conf={conf}"])


def test_config_is_read_only_after_load():
    cfg = load_config(["conf=smoke.yaml"])
    with pytest.raises(Exception):
        cfg.rounds = 7


def test_every_registered_method_is_allowed_and_has_its_roles():
    from ladalit.core.config import CHOICES
    from ladalit.core.roles import MethodRoles
    from ladalit import registry
    assert CHOICES["method"] == tuple(registry.METHODS)
    for m in registry.METHODS:
        assert isinstance(registry.roles(m), MethodRoles), m
    with pytest.raises(ConfigError, match=r"method"):
        load_config(["conf=smoke.yaml", "method=nope"])


def test_method_sections_have_defaults_and_are_validated_at_load():
    """fedmkt / wasp / reasoning options are read by their roles straight from the validated config."""
    cfg = load_config(["conf=smoke.yaml"])
    assert (cfg.fedmkt.kd_alpha, cfg.fedmkt.top_k) == (0.5, 16)
    assert (cfg.wasp.samples_per_round, cfg.wasp.top_q, cfg.wasp.weights) == (64, 8, "global")
    assert (cfg.reasoning.rstar_prompts, cfg.reasoning.max_new_tokens) == (2, None)
    assert load_config(["conf=smoke.yaml", "wasp.top_q=3"]).wasp.top_q == 3
    for override, message in [
        ("fedmkt.kdalpha=0.3", "unknown config key 'fedmkt.kdalpha'"),
        ("fedmkt.kd_alpha=2.0", "config key 'fedmkt.kd_alpha': value 2.0 out of range [0.0, 1.0]"),
        ("fedmkt.ce_normalise=word", "config key 'fedmkt.ce_normalise': unknown value 'word' (allowed: char, token)"),
        ("wasp.topq=3", "unknown config key 'wasp.topq'"),
        ("wasp.weights=both", "config key 'wasp.weights': unknown value 'both' (allowed: global, local)"),
        ("wasp.good_per_prompt=-1", "config key 'wasp.good_per_prompt': value -1 out of range [0, inf]"),
        ("reasoning.cut=1", "unknown config key 'reasoning.cut'"),
        ("reasoning.max_new_tokens=0", "config key 'reasoning.max_new_tokens': value 0 out of range [1, inf]"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(["conf=smoke.yaml", override])
    with pytest.raises(ConfigError, match=r"^config key 'reasoning.rstar_cut_min': 0.9 is above rstar_cut_max 0.1$"):
        load_config(["conf=smoke.yaml", "reasoning.rstar_cut_min=0.9", "reasoning.rstar_cut_max=0.1"])


def test_component_sections_live_in_their_modules_and_keep_their_place():
    """LaDa's, the rewards', the filter's, FedMKT's, WASP's and the reasoning baselines' settings are each
    module's own `Config`, registered at import (ladalit.components), in the order the config file and the
    reference show."""
    import dataclasses
    import typing

    from ladalit.baselines import fedmkt, reasoning, wasp
    from ladalit.core import config as C
    from ladalit.method import filter as filter_mod, lada, rewards
    hints = typing.get_type_hints(C.RunConfig)
    assert (hints["fedmkt"], hints["wasp"], hints["reasoning"]) == (fedmkt.Config, wasp.Config, reasoning.Config)
    assert (hints["lada"], hints["reward"], hints["filter_net"]) == (lada.Config, rewards.Config, filter_mod.Config)
    names = [f.name for f in dataclasses.fields(C.RunConfig)]
    i, j = names.index("sft_prompt"), names.index("clients")
    assert names[i - 1:i + 5] == ["rounds", "sft_prompt", "lada", "reward", "filter_net", "data"]
    assert names[j:j + 5] == ["clients", "fedmkt", "wasp", "reasoning", "generation"]
    assert not any(hasattr(C, n) for n in ("FedMKTConfig", "WASPConfig", "ReasoningConfig", "RewardConfig",
                                           "FilterNetConfig"))
    assert "fedmkt.top_k" in C.RANGES and "filter_net.fit_every" in C.CHOICES
    # LaDa's own keys: in its section only, with their choices and ranges; core names none of them
    moved = ["loss", "filter", "server_weights", "beta", "mard_nll", "n_c", "init_fraction"]
    own = [f.name for f in dataclasses.fields(lada.Config)]  # the moved keys and those born in the section
    assert own == ["loss", "filter", "server_weights", "beta", "mard_nll", "mard_span", "mard_lr_scale", "n_c",
                   "init_fraction"]
    assert not set(own) & ({f.name for f in dataclasses.fields(C.BaseRunConfig)} | set(C.CHOICES) | set(C.RANGES))
    assert C.CHOICES["lada.loss"] == ("mard", "ce") and C.RANGES["lada.init_fraction"] == (0.0, 1.0)
    assert C.MOVED == {k: f"lada.{k}" for k in moved}


@pytest.mark.parametrize("key,value", [("loss", "ce"), ("filter", "none"), ("server_weights", "uniform"),
                                       ("beta", "0.5"), ("mard_nll", "0.5"), ("n_c", "8"), ("init_fraction", "0.5")])
def test_a_lada_key_at_its_old_top_level_place_names_where_it_went(key, value, tmp_path):
    """A config written before LaDa's keys moved into `lada` fails at load with one line saying where the key is
    now, on the command line and in a YAML file (an old run's config.yaml, say); at its new place it is taken."""
    with pytest.raises(ConfigError, match=f"^config key '{key}' moved to 'lada.{key}'$"):
        load_config(["conf=smoke.yaml", f"{key}={value}"])
    old = tmp_path / "old.yaml"
    old.write_text(f"rounds: 1\n{key}: {value}\n")
    with pytest.raises(ConfigError, match=f"^config key '{key}' moved to 'lada.{key}'$"):
        load_config([f"conf={old}"])
    assert str(load_config(["conf=smoke.yaml", f"lada.{key}={value}"]).lada[key]) == value


def test_a_component_registers_its_own_section(monkeypatch):
    """`section`: a dataclass, its choices, ranges and cross-key check, owned by the module that defines it; the
    run config gains the section after its `after` key, validates it with one line per error, and the
    generated reference lists it with its comment lines."""
    from dataclasses import dataclass

    from ladalit.core import config as C
    from ladalit.reporting.config_reference import reference
    for name in ("SECTIONS", "SECTION_CHECKS", "CHOICES", "RANGES", "MOVED"):
        monkeypatch.setattr(C, name, dict(getattr(C, name)))
    monkeypatch.setattr(C, "_SCHEMA", [])

    @dataclass
    class Config:
        # width of the toy component
        width: int = 3
        # how it runs
        mode: str = "a"

    def check(cfg):
        if cfg.toy.mode == "b" and cfg.toy.width < 2:
            raise ConfigError(f"config key 'toy.width': mode b needs 2 or more, got {cfg.toy.width}")

    C.section("toy", Config, after="fedmkt", description="a toy", choices={"mode": ("a", "b")},
              ranges={"width": (1, None)}, check=check, moved=("width",))
    names = list(C.run_config().__dataclass_fields__)
    assert names[names.index("fedmkt") + 1] == "toy"
    assert load_config(["conf=smoke.yaml"]).toy.width == 3
    assert load_config(["conf=smoke.yaml", "toy.width=5"]).toy.width == 5
    for override, message in [
        ("toy.widht=2", "unknown config key 'toy.widht' (allowed keys here: mode, width)"),
        ("toy.width=0", "config key 'toy.width': value 0 out of range [1, inf]"),
        ("toy.mode=c", "config key 'toy.mode': unknown value 'c' (allowed: a, b)"),
        ("width=2", "config key 'width' moved to 'toy.width'"),  # once a top-level key, now the section's
        ("mode=b", "unknown config key 'mode' (allowed keys here: "),
    ]:
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}" + ("" if message.endswith(" ") else "$")):
            load_config(["conf=smoke.yaml", override])
    with pytest.raises(ConfigError, match=r"^config key 'toy.width': mode b needs 2 or more, got 1$"):
        load_config(["conf=smoke.yaml", "toy.mode=b", "toy.width=1"])
    ref = reference()
    assert "## `toy`" in ref and "| `toy.width` | int | `3` | ≥ 1 | width of the toy component |" in ref
    assert "| `toy.mode` | str | `\"a\"` | `a`, `b` | how it runs |" in ref
    with pytest.raises(ValueError, match="registered twice"):
        C.section("seed", Config, after="fedmkt", description="a key core owns")
    C.section("lost", Config, after="nowhere", description="follows no key")
    with pytest.raises(ValueError, match=r"\['lost'\] follow keys that do not exist"):
        C.run_config()
    monkeypatch.setattr(C, "SECTIONS", {})  # a program that forgot to import ladalit.components
    with pytest.raises(RuntimeError, match="import ladalit.components"):
        load_config(["conf=smoke.yaml"])


@pytest.mark.parametrize("overrides,expected", [
    (["analysis.selector=best"], "config key 'analysis.selector': unknown value 'best' (allowed: none, random, "
                                 "disagreement, correctable)"),
    (["analysis.selector=random"], "config key 'analysis.sizes_from': analysis.selector needs the LaDa run whose "
                                   "selection sizes it replays"),
    (["analysis.sizes_from=runs/x"], "config key 'analysis.sizes_from': only a matched selector reads it; set "
                                     "analysis.selector"),
    (["analysis.gold_teacher=true", "method=standalone"], "config key 'analysis.gold_teacher': a control of method "
                                                          "lada or fedkd, not standalone"),
    (["analysis.all_answers=true", "method=fedkd"], "config key 'analysis.all_answers': a control of method lada, "
                                                    "not fedkd"),
    (["analysis.gold_teacher=true", "data.name=aqua", "data.path=x.jsonl"],
     "config key 'analysis.gold_teacher': needs the demo world's truth (data.name=synthetic), not aqua"),
    (["analysis.all_answers=true", "federation.protocol=per_round"],
     "config key 'analysis.all_answers': runs in the in-process harness only (federation.protocol=per_batch)"),
    (["analysis.selector=random", "analysis.sizes_from=r", "lada.filter=none"],
     "config key 'analysis.selector': replaces the filter's choice; lada.filter=none has none"),
    (["analysis.learnable_steps.client9=2"],
     "config key 'analysis.learnable_steps.client9': no such participant (server, client1, client2)"),
    (["analysis.learnable_steps.client1=-1"], "config key 'analysis.learnable_steps.client1': -1 is below 0"),
])
def test_analysis_switches_are_validated_at_load(overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_config(["conf=smoke.yaml", *overrides])
    assert str(err.value) == expected


def test_analysis_switches_default_off_and_load_for_their_methods():
    cfg = load_config(["conf=smoke.yaml"])
    assert (cfg.analysis.gold_teacher, cfg.analysis.selector, cfg.analysis.sizes_from, cfg.analysis.all_answers) == \
        (False, "none", "", False)
    load_config(["conf=smoke.yaml", "method=fedkd", "analysis.gold_teacher=true"])
    load_config(["conf=smoke.yaml", "analysis.selector=correctable", "analysis.sizes_from=runs/lada-seed0",
                 "analysis.all_answers=true", "analysis.gold_teacher=true"])
