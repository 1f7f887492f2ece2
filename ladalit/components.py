"""Imports every module that registers something with core at import, so that a config can name it:
the demo world's data set and model source (`ladalit.demo.sources`), the filter's class-path check, and the
config sections their components own (`ladalit.core.config.section`: lada, reward, filter_net, fedmkt, wasp,
reasoning). Whatever builds an experiment from a config imports this module first:
`ladalit.run`, the federation's entry points, `ladalit.reporting.export`, the benchmarks, tests/conftest.py.
"""
import ladalit.demo.sources  # noqa: F401  data.name=synthetic, model.source=zoo
import ladalit.method.lada  # noqa: F401  config section lada
import ladalit.method.filter  # noqa: F401  config section filter_net; filter_net.class_path checked against LearnabilityFilter
import ladalit.method.rewards  # noqa: F401  config section reward
import ladalit.baselines.fedmkt  # noqa: F401  config section fedmkt
import ladalit.baselines.wasp  # noqa: F401  config section wasp
import ladalit.baselines.reasoning  # noqa: F401  config section reasoning
