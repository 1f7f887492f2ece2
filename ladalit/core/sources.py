"""Data sets and model sources that the layers above core provide, registered at import as methods are
(`ladalit.registry`): core looks a config's `data.name` / `*.model.source` up here and imports nothing above
itself. The demo world registers `synthetic` and `zoo` (`ladalit.demo.sources`); `ladalit.components` imports
every registering module, and whatever builds an experiment imports `ladalit.components` first."""
from __future__ import annotations

from typing import Callable

# data.name -> loader(cfg) -> list[MCRecord] (the data sets that are not files: data/loaders.py reads those)
DATA_SETS: dict[str, Callable] = {}
# *.model.source -> loader(model_cfg, quiet) -> (model, tokenizer), for the sources core does not load itself
MODEL_SOURCES: dict[str, Callable] = {}


def register_data_set(name: str, loader: Callable) -> None:
    """`loader(cfg)` returns the records of `data.name=name`."""
    DATA_SETS[name] = loader


def register_model_source(name: str, loader: Callable) -> None:
    """`loader(model_cfg, quiet)` returns (model, tokenizer) of `model.source=name`, in the model's own dtype."""
    MODEL_SOURCES[name] = loader
