#!/usr/bin/env python
"""Deployment latency: PyTorch eager vs BN-fused eager vs ONNX Runtime, forward pass only.

Each variant runs ``--runs`` timed calls, split into ``--rounds`` blocks that rotate between the
variants (eager block, fused block, ORT block, eager block, ...), each block starting with an
untimed call; the median is reported with the ratio to eager from the same run. Blocks, because
ONNX Runtime's and OpenMP's worker threads spin for a while after a call and would slow whichever
variant ran next; rounds, so that load from other processes, which varies over time, falls on all
variants alike. Weights are random (latency does not depend on their values).
Example: python benchmarks/bench_deploy.py --runs 20
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

from retinaface.build import create_model
from retinaface.deploy.export import export_onnx
from retinaface.deploy.fusion import count_batchnorm, fuse_conv_bn
from retinaface.deploy.runtime import OnnxRuntimeModel


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["mobilenet0.25", "resnet50"])
    parser.add_argument("--size", nargs=2, type=int, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=20, help="timed calls per variant (median reported)")
    parser.add_argument("--rounds", type=int, default=4, help="blocks the runs are split into, rotating variants")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per variant before timing")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    return parser.parse_args(argv)


def _split(total: int, parts: int) -> List[range]:
    """``total`` items in ``parts`` nearly equal non-empty blocks."""
    parts = max(1, min(parts, total))
    bounds = [round(i * total / parts) for i in range(parts + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(parts)]


def bench_backbone(name: str, size, runs: int, rounds: int, warmup: int, threads: int,
                   workdir: Path) -> Dict[str, float]:
    import onnxruntime as ort

    torch.manual_seed(0)
    eager = create_model(name).eval()
    fused = fuse_conv_bn(copy.deepcopy(eager))
    path = workdir / f"{name}.onnx"
    export_onnx(eager, path, dynamic=True, size=size)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    onnx_model = OnnxRuntimeModel(path, session_options=options)

    images = torch.rand(1, 3, *size) * 255.0 - torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)
    variants: Dict[str, Callable] = {"eager": eager, "fused": fused, "onnxruntime": onnx_model}
    with torch.inference_mode():
        reference = eager(images)
        for label in ("fused", "onnxruntime"):
            diff = max(float((a - b).abs().max()) for a, b in zip(reference, variants[label](images)))
            print(f"  {name} {label}: max abs diff vs eager {diff:.1e}", file=sys.stderr)
        for run in variants.values():
            for _ in range(warmup):
                run(images)
        times: Dict[str, List[float]] = {label: [] for label in variants}
        per_block = [len(block) for block in _split(runs, rounds)]
        for block in per_block:
            for label, run in variants.items():
                run(images)  # the other variant's threads settle; not timed
                for _ in range(block):
                    start = time.perf_counter()
                    run(images)
                    times[label].append(time.perf_counter() - start)
    print(f"  {name}: {count_batchnorm(eager)} BatchNorm2d -> {count_batchnorm(fused)} after fusion",
          file=sys.stderr)
    return {label: statistics.median(values) * 1000.0 for label, values in times.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    height, width = args.size
    # other processes competing for the cores distort eager (OpenMP) timings most: say how busy it was
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"forward latency, 1x3x{height}x{width}, {args.threads} threads, median of {args.runs} "
          f"runs in {args.rounds} rotating blocks (torch {torch.__version__}; {os.cpu_count()} CPUs, "
          f"1-min load {load:.1f} at start)")
    print(f"{'backbone':<16}{'eager ms':>10}{'fused ms':>10}{'ORT ms':>10}{'fused/eager':>13}{'ORT/eager':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backbones:
            ms = bench_backbone(name, (height, width), args.runs, args.rounds, args.warmup, args.threads,
                                Path(tmp))
            print(f"{name:<16}{ms['eager']:>10.1f}{ms['fused']:>10.1f}{ms['onnxruntime']:>10.1f}"
                  f"{ms['fused'] / ms['eager']:>13.2f}{ms['onnxruntime'] / ms['eager']:>11.2f}", flush=True)
    print("ratios are time / eager time: below 1 is faster than eager")
    return 0


if __name__ == "__main__":
    sys.exit(main())
