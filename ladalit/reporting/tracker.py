"""W&B tracking of a run (offline by default; `disabled` logs nothing). Results never depend on it."""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from ladalit.core.results import Results
from ladalit.reporting.plots import wandb_images


class Tracker:
    """W&B run (offline by default; `disabled` logs nothing). Results never depend on it."""

    def __init__(self, cfg, run_dir: Path):
        self.run = None
        mode = cfg.tracking.wandb.mode
        if mode == "disabled":
            return
        import wandb
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=cfg.tracking.wandb.project, entity=cfg.tracking.wandb.entity,
                              mode=mode, dir=str(run_dir), name=run_dir.name,
                              config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous")

    def log(self, metrics: dict, step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self, results: Results | None = None, plots: list[Path] | None = None) -> None:
        if self.run is None:
            return
        import wandb
        logged = wandb_images(plots) if plots else {}
        if results is not None and results.accuracy:
            keys = list(results.accuracy[0])
            logged["results"] = wandb.Table(columns=keys, data=[[r.get(k) for k in keys] for r in results.accuracy])
        if logged:
            self.run.log(logged)
        self.run.finish()
