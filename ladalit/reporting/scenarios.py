"""The computed tables of docs/scenarios.md: `python -m ladalit.reporting.scenarios` (a test compares them)."""
from __future__ import annotations

import ladalit.components  # noqa: F401  the config sections the baselines own
from ladalit.core.config import load_config
from ladalit.scale.shapes import scenarios_markdown

SCENARIOS = ("s1", "s2", "s3", "s4")


def markdown(names=SCENARIOS) -> str:
    """conf/<name>.yaml of each scenario, loaded, through `ladalit.scale.shapes.scenarios_markdown`."""
    return scenarios_markdown({n: load_config([f"conf={n}.yaml"]) for n in names})


if __name__ == "__main__":
    print(markdown())
