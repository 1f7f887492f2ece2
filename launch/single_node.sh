#!/usr/bin/env bash
# One node: launch/single_node.sh SCENARIO NGPUS [key=value ...]
#   launch/single_node.sh s3 2
#   launch/single_node.sh s1 4 data.name=cot_collection run_name=s1-cot
# One process per GPU (torchrun); Fabric picks the ranks up from torchrun's environment.
# The GPU counts each scenario needs are in docs/scenarios.md (computed from the model shapes).
# Models come from the hub cache: run launch/download.sh SCENARIO first on machines without internet.
# Install on the GPU nodes: the CUDA build of torch, then pip install -e ".[gpu]" and
# pip install --force-reinstall --no-deps faiss-gpu (the prototypes' k-means on the GPU; faiss-gpu's
# CUDA 12 wheels and the default faiss-cpu install the same `faiss` module: see README, Quick start).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 SCENARIO NGPUS [key=value ...]   (SCENARIO: s1 s2 s3 s4 or a conf/ file)" >&2
  exit 2
fi
scenario=${1%.yaml}; ngpus=$2; shift 2
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} TOKENIZERS_PARALLELISM=false
exec torchrun --standalone --nnodes=1 --nproc-per-node="$ngpus" -m ladalit.run \
  "conf=$scenario.yaml" "fabric.devices=$ngpus" fabric.num_nodes=1 "$@"
