"""The Markdown configuration reference is generated from the structured configs, and docs/configuration.md is checked."""
import subprocess
import sys
from dataclasses import dataclass

from omegaconf import OmegaConf

from ladalit.core.config import RunConfig
from ladalit.reporting.config_reference import END, START, field_comments, main, reference

README = f"""# ladalit

Intro text.

## Configuration reference

{START}
old text
{END}

## After
Kept as is.
"""


def leaf_keys(node, prefix=""):
    """Every leaf key path of a plain container; an empty dict (clients) is a leaf."""
    if isinstance(node, dict) and node:
        return [k for key, v in node.items() for k in leaf_keys(v, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def row(ref: str, key: str) -> str:
    return next(line for line in ref.splitlines() if line.startswith(f"| `{key}` |"))


def test_reference_lists_every_leaf_key_of_run_config():
    ref = reference()
    keys = leaf_keys(OmegaConf.to_container(OmegaConf.structured(RunConfig)))
    assert len(keys) > 60 and "server.model.lora.target_modules" in keys and "clients" in keys
    for key in keys:
        assert row(ref, key)


def test_reference_rows_carry_type_default_allowed_values_and_the_comment():
    ref = reference()
    assert row(ref, "data.domain_skew") == ("| `data.domain_skew` | float | `0.0` | [0.0, 1.0] | "
                                            "0: iid clients; 1: every client draws only from its own domains; in "
                                            "between: that share from its own domains, the rest iid (exact counts) |")
    assert row(ref, "data.mixture.train").split(" | ")[1:3] == ["dict[str, dict[str, float]]", "`{}`"]
    assert row(ref, "tracking.wandb.mode") == "| `tracking.wandb.mode` | str | `\"offline\"` | " \
                                              "`offline`, `online`, `disabled` | offline (default) \\| online \\| disabled |"
    assert row(ref, "server.model.arch").split(" | ")[3] == "`qwen3`, `qwen2`, `llama`, `gemma2`, `internlm3`"
    assert row(ref, "server.train.batch_size").split(" | ")[3] == "≥ 1"
    assert row(ref, "filter_net.max_select").split(" | ")[1:3] == ["int \\| None", "`null`"]
    assert row(ref, "eval.shots").split(" | ")[1:3] == ["list[int]", "`[0, 1]`"]
    assert "`clients.NAME.*` takes the same keys as `server.*`" in row(ref, "clients")
    assert row(ref, "fabric.strategy").endswith("| auto \\| fsdp2 |")  # pipes escaped inside cells


@dataclass
class Documented:
    # first line
    # second line
    a: int = 1

    # not directly above b

    b: str = ""  # trailing comments are not descriptions
    c: float = 0.5  # neither
    # for d
    d: bool = False


def test_only_the_comment_lines_directly_above_a_field_describe_it():
    assert field_comments(Documented) == {"a": "first line second line", "d": "for d"}


def test_write_then_check_round_trips_and_a_stale_section_fails(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert main(["--check", str(readme)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["--write", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# ladalit\n\nIntro text.") and text.endswith(f"{END}\n\n## After\nKept as is.\n")
    assert f"{START}\n{reference()}{END}" in text
    assert main(["--check", str(readme)]) == 0
    assert main(["--write", str(readme)]) == 0 and readme.read_text() == text  # idempotent
    readme.write_text(text.replace("| `rounds` | int | `5` |", "| `rounds` | int | `3` |"))
    assert main(["--check", str(readme)]) == 1
    err = capsys.readouterr().err
    assert "-| `rounds` | int | `3` |" in err and "+| `rounds` | int | `5` |" in err


def test_cli_prints_the_reference_and_check_exits_1_or_2(tmp_path):
    cli = [sys.executable, "-m", "ladalit.reporting.config_reference"]
    proc = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == reference()
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert subprocess.run([*cli, "--check", str(readme)], capture_output=True, timeout=60).returncode == 1
    readme.write_text("# no markers\n")
    proc = subprocess.run([*cli, "--check", str(readme)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {readme}: markers {START} ... {END} not found"


def test_docs_configuration_reference_is_current():
    """docs/configuration.md's reference equals the one generated from the structured configs
    (regenerate: python -m ladalit.reporting.config_reference --write docs/configuration.md)."""
    from pathlib import Path
    page = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    text = page.read_text()
    section = text.split(START, 1)[1].split(END, 1)[0]
    assert section.strip() == reference().strip()
