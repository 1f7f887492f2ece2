"""One thread per process in tests: the models are tiny, and several test subprocesses
(SIGKILL/resume, determinism) run at once on a 2-core machine, where oversubscribed
threads slow every step many times over."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the subprocesses tests start

import torch  # noqa: E402

torch.set_num_threads(1)

import ladalit.components  # noqa: E402,F401  what a run registers with core at import, for tests that build directly


# The files that take longest (seconds per file, summed from --junitxml of a fresh-clone CI run), longest
# first. pyproject's addopts turn off xdist's own order (most tests first), so the workers start on these
# and the short files fill in behind them: longest-first keeps the two workers' loads even, instead of the
# longest file landing last on one worker while the other sits idle.
LONGEST_FIRST = ["tests/federation/test_flower.py", "tests/test_resume.py", "tests/test_run.py",
                 "tests/test_resume_methods.py", "tests/test_bad_inputs.py", "tests/test_benchmarks.py",
                 "tests/test_reliability.py", "tests/reporting/test_report.py", "tests/scale/test_fsdp.py",
                 "tests/federation/test_sites.py", "tests/reporting/test_lm_eval.py", "tests/test_docs_examples.py",
                 "tests/demo/test_controls.py"]


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order
