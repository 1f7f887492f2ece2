#!/usr/bin/env bash
# Put a scenario's models into the hub cache (safetensors, configs, tokenizer, remote code):
#   launch/download.sh s4      then run with HF_HUB_OFFLINE=1
# Gated models (google/gemma-2-*, meta-llama/*) need `huggingface-cli login` with an accepted licence.
set -euo pipefail
scenario=${1:?usage: $0 SCENARIO}
cd "$(dirname "$0")/.."
python - "${scenario%.yaml}" <<'PY'
import sys
from huggingface_hub import snapshot_download
from ladalit.core.config import load_config
cfg = load_config([f"conf={sys.argv[1]}.yaml"])
for p in [cfg.server, *cfg.clients.values()]:
    print(p.model.name_or_path, flush=True)
    snapshot_download(p.model.name_or_path, allow_patterns=["*.json", "*.safetensors", "*.py", "*.model", "*.txt", "*.tiktoken"])
PY
