#!/usr/bin/env bash
# LaDa on a local Flower federation: a SuperLink and N SuperNodes on 127.0.0.1, one per client of CONF,
# each with its own private data (written from CONF's split beside the run directory, RUN_DIR.flower/sites);
# then `flwr run` of launch/flower_app, and everything it started is stopped at the end.
#   launch/flower_local.sh conf/smoke.yaml 2 output_dir=runs
#   launch/flower_local.sh demo.yaml 3 run_name=demo-flower
#   launch/flower_local.sh --tls conf/smoke.yaml 2   # TLS, and SuperNode authentication: a key pair per node,
#                                                    # its public key registered, each node started with its own
#   launch/flower_local.sh --tls --no-auth ...       # TLS without node authentication (says so in one line)
# Needs the extra: pip install -e ".[flower]". Exit status: 0, 1 (the run failed), 2 (bad arguments or config).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 2 ]]; then
  echo "usage: $0 [--host H] [--tls [--no-auth]] [--insecure] CONF N [key=value ...]" >&2
  exit 2
fi
py=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python )}
exec "$py" -m launch.flower_local "$@"
