"""Run a test file's worker as 2 gloo processes (Fabric re-runs the script for rank 1) and read each rank's JSON."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def run_ranks(script: str, out: Path, *args: str, timeout: int = 180, env: dict | None = None) -> list[dict]:
    """`python script out *args`; the worker writes out/rank{0,1}.json. Its own session, so that a hang
    (e.g. collectives out of step) ends with rank 1 too."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore",
           **(env or {})}
    proc = subprocess.Popen([sys.executable, script, str(out), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stdout[-3000:] + stderr[-6000:]
    return [json.loads((out / f"rank{i}.json").read_text()) for i in range(2)]
