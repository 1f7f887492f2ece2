"""One thread per process in tests: the models are tiny, and several test subprocesses
(SIGKILL/resume, determinism) run at once on a 2-core machine, where oversubscribed
threads slow every step many times over."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the subprocesses tests start

import torch  # noqa: E402

torch.set_num_threads(1)

