#!/usr/bin/env python
"""Embedding networks at 112 x 112: parameters, multiply-adds and CPU latency, as a markdown table.

Multiply-adds are ``torch.utils.flop_counter`` FLOPs / 2 (convolutions and linear layers). Latency
is the median forward time at batch 1 and batch ``--batch`` on ``--threads`` threads, all models
timed in alternation (``profiling.paired_latency``) so machine load affects them alike; the last
column is each model's batch-1 time relative to ``mobilefacenet`` in the same run.

  python benchmarks/bench_recognition_models.py [--threads 2] [--batch 32] [--repeats 10]
"""
from __future__ import annotations

import argparse
from typing import Dict, List, Tuple

import torch

from retinaface.inference.profiling import count_flops, count_parameters, paired_latency
from retinaface.recognition.models import create_embedder

MODELS: Tuple[Tuple[str, str, Dict], ...] = (
    ("mobilefacenet", "mobilefacenet (512-d)", {}),
    ("mobilefacenet", "mobilefacenet (128-d, the paper's)", {"embedding_size": 128}),
    ("mobiface", "mobiface (FC over 7x7, the paper's)", {}),
    ("mobiface", "mobiface head=pool", {"head": "pool"}),
    ("mobiface", "mobiface head=pool width 0.75", {"head": "pool", "width": 0.75}),
    ("mobiface", "mobiface head=pool width 0.5", {"head": "pool", "width": 0.5}),
    ("timm:resnet18", "timm:resnet18", {}),
    ("timm:mobilenetv3_small_100", "timm:mobilenetv3_small_100", {}),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows: List[Tuple[str, int, int]] = []
    models = []
    for name, label, kwargs in MODELS:
        model = create_embedder(name, **kwargs).eval()
        models.append(model)
        rows.append((label, count_parameters(model), count_flops(model, 112, 112) // 2))
    one, many = torch.randn(1, 3, 112, 112), torch.randn(args.batch, 3, 112, 112)

    def runner(model, x):
        def run():
            with torch.inference_mode():
                model(x)
        return run

    single = paired_latency([runner(m, one) for m in models], repeats=args.repeats)
    batched = paired_latency([runner(m, many) for m in models], warmup=1, repeats=max(3, args.repeats // 3))
    print(f"| embedder @112x112 | params (M) | MAdds (M) | batch 1 (ms) | batch {args.batch} (ms/face) | "
          "batch 1 vs mobilefacenet |")
    print("|---|---|---|---|---|---|")
    for (label, params, madds), t1, tb in zip(rows, single, batched):
        print(f"| {label} | {params / 1e6:.3f} | {madds / 1e6:.1f} | {t1 * 1e3:.2f} | {tb * 1e3 / args.batch:.2f} | "
              f"{t1 / single[0]:.2f}x |")


if __name__ == "__main__":
    main()
