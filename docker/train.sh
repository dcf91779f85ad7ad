#!/usr/bin/env bash
# Entry point of the Docker image: torchrun over every visible GPU of this node, then
# `python -m retinaface train` with the arguments given -- the same command, flags and help as
# `retinaface train` (they are generated from retinaface.engine.config.TrainConfig), so the image
# cannot drift from the CLI. `retinaface-train --help` lists them. Multi-node: set NNODES,
# NODE_RANK, MASTER_ADDR (and MASTER_PORT) on every node. NPROC_PER_NODE overrides the GPU count.
# --workers defaults to this process's share of the node's CPUs (at most 8).
set -euo pipefail
# the image keeps the code in /workspace/retinaface; run from a checkout, the script's parent folder
if [ -f /workspace/retinaface/retinaface/cli/train.py ]; then
    cd /workspace/retinaface
else
    cd "$(dirname "$(readlink -f "$0")")/.."
fi

# help needs no GPU and no process group
for arg in "$@"; do
    if [ "$arg" = "-h" ] || [ "$arg" = "--help" ]; then
        exec python -m retinaface train "$@"
    fi
done

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
exec torchrun "${rendezvous[@]}" --nproc_per_node="$NPROC_PER_NODE" -m retinaface train "$@"
