#!/usr/bin/env bash
# Entry point of the Docker image: torchrun over every visible GPU of this node, then tools/train.py
# with the arguments given. Multi-node: set NNODES, NODE_RANK, MASTER_ADDR (and MASTER_PORT) on
# every node. NPROC_PER_NODE overrides the GPU count.
set -euo pipefail
# the image keeps the code in /workspace/retinaface; run from a checkout, the script's parent folder
if [ -f /workspace/retinaface/tools/train.py ]; then
    cd /workspace/retinaface
else
    cd "$(dirname "$(readlink -f "$0")")/.."
fi

gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
    gpus=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
fi
NPROC_PER_NODE=${NPROC_PER_NODE:-$(( gpus > 0 ? gpus : 1 ))}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}

if [ "$NNODES" -gt 1 ]; then
    rendezvous=(--nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT")
else
    rendezvous=(--standalone --nnodes=1)
fi

echo "retinaface-train: $NNODES node(s) x $NPROC_PER_NODE process(es), node rank $NODE_RANK" >&2
exec torchrun "${rendezvous[@]}" --nproc_per_node="$NPROC_PER_NODE" tools/train.py "$@"
