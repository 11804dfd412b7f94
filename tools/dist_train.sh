#!/usr/bin/env bash
# Distributed training over torchrun: tools/dist_train.sh CONFIG NUM_PROCS [tools/train.py options]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR (and PORT) on every node.
set -euo pipefail
CONFIG=$1
NPROCS=$2
# The checkout's .venv when there is one (tools/), else the python on PATH (the packaged copy in mmvanilla/.mim).
VENV_PY=$(dirname "$0")/../.venv/bin/python
if [[ -x "$VENV_PY" ]]; then PY=${PYTHON:-$VENV_PY}; else PY=${PYTHON:-python}; fi
exec "$PY" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --master_port="${PORT:-29500}" --nproc_per_node="$NPROCS" \
  "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"
