#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): one LaDa round on Qwen3 shapes, K = 1 and K = 3, one table.
#
#   benchmarks/gpu_check.sh             # on one GPU; stops after 8 minutes
#   benchmarks/gpu_check.sh --dry-run   # on a CPU, tiny shapes, the same code path
#   benchmarks/gpu_check.sh --vendor    # here, before lending a machine: copy the pure-Python packages
#                                       # the check imports (omegaconf, antlr4, rich and its deps) into
#                                       # benchmarks/.gpu_vendor, to carry to a machine without them
#                                       (about 10 MB; the device tool's carry: ["benchmarks/.gpu_vendor"])
# FAISS: the round's prototypes and row 4's prototypes run on the GPU where faiss-gpu imports (pip install
# 'ladalit[gpu]'); otherwise the table says "faiss-gpu not installed" (FAISS is a binary wheel: not vendored).
# PYTHON (default: python) is the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
VENDOR=benchmarks/.gpu_vendor
if [ "${1:-}" = "--vendor" ]; then
  rm -rf "$VENDOR" && mkdir -p "$VENDOR"
  "$PY" - "$VENDOR" <<'PYEOF'
import importlib, pathlib, shutil, sys
dest = pathlib.Path(sys.argv[1])
for name in ("omegaconf", "antlr4", "rich", "markdown_it", "mdurl", "pygments"):
    try:
        src = pathlib.Path(importlib.import_module(name).__file__).parent
    except ImportError:
        print(f"not here, not vendored: {name}")
        continue
    shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    print(f"vendored {name} from {src}")
PYEOF
  exit 0
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import omegaconf, rich" 2>/dev/null; then
  if [ -d "$VENDOR" ]; then
    export PYTHONPATH="$PYTHONPATH:$PWD/$VENDOR"
    echo "gpu_check: omegaconf/rich not installed: using the copies in $VENDOR"
  else
    echo "gpu_check: omegaconf/rich not installed and no $VENDOR (run benchmarks/gpu_check.sh --vendor where they are, and carry it)" >&2
    exit 2
  fi
fi
export TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore HF_HUB_OFFLINE=1
exec timeout 480 "$PY" -m benchmarks.gpu_check "$@"
