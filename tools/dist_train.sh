#!/usr/bin/env bash
# Distributed training over torchrun: tools/dist_train.sh CONFIG NUM_PROCS [tools/train.py options]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR (and PORT) on every node.
set -euo pipefail
CONFIG=$1
NPROCS=$2
PY=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
exec "$PY" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --master_port="${PORT:-29500}" --nproc_per_node="$NPROCS" \
  "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"
