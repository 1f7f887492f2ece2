"""The demo world's data set (`data.name=synthetic`) and model source (`model.source=zoo`), registered with
core at import (`ladalit.core.sources`); `ladalit.components` imports this module."""
from __future__ import annotations

from ladalit.core.sources import register_data_set, register_model_source
from ladalit.demo import synthetic, zoo


def synthetic_records(cfg):
    """The generated records of `data.synthetic`, seeded by the run's seed."""
    s = cfg.data.synthetic
    return synthetic.generate(synthetic.SyntheticConfig(
        num_records=s.num_records, min_steps=s.min_steps, max_steps=s.max_steps, seed=cfg.seed))


def zoo_member(mcfg, quiet: bool):
    """The pre-trained zoo member named by `model.name_or_path` and its tokenizer (quiet: no pre-training lines)."""
    return zoo.load_member(mcfg.name_or_path, progress=not quiet)


register_data_set("synthetic", synthetic_records)
register_model_source("zoo", zoo_member)
