#!/usr/bin/env python
"""Detect-path overhead over the bare forward, over several runs of the deployment matrix.

One run of ``retinaface benchmark --matrix`` scatters by about 5 points per cell on this machine
(the forward and detect medians come from different blocks). This runs the matrix ``--runs`` times
(mobilenet0.25, 320x240 / 640x480 / 1280x720, every runtime, 1 and 2 threads by default; ~300
candidates) and prints, per cell, the median overhead over the runs and its range, then the cells
whose median is above the target (detect <= 1.10x the bare forward).
"""
from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

from retinaface.benchmark_matrix import MATRIX_RUNTIMES, run_matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["mobilenet0.25"])
    parser.add_argument("--sizes", nargs="+", default=["240x320", "480x640", "720x1280"], help="HxW")
    parser.add_argument("--runtimes", nargs="+", default=list(MATRIX_RUNTIMES), choices=MATRIX_RUNTIMES)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--target", type=float, default=0.10)
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    overheads, candidates = defaultdict(list), {}
    for run in range(args.runs):
        for cell in run_matrix(args.backbones, sizes=sizes, runtimes=args.runtimes, threads=args.threads,
                               repeats=args.repeats):
            key = (cell.backbone, cell.size, cell.threads, cell.runtime)
            overheads[key].append(cell.overhead)
            candidates[key] = cell.candidates
        print(f"run {run + 1} of {args.runs} done", flush=True)
    runtimes = list(dict.fromkeys(k[3] for k in overheads))
    print(f"\ndetect overhead over the bare forward, median of {args.runs} runs (min .. max); "
          f"* = fewer than 100 candidates\n")
    print("| model, input, threads | " + " | ".join(runtimes) + " |")
    print("|---" * (len(runtimes) + 1) + "|")
    missed = []
    for backbone, size, threads in dict.fromkeys(k[:3] for k in overheads):
        row = []
        for runtime in runtimes:
            values = overheads.get((backbone, size, threads, runtime))
            if not values:
                row.append("-")
                continue
            median = statistics.median(values)
            star = "*" if candidates[(backbone, size, threads, runtime)] < 100 else ""
            row.append(f"{100 * median:+.0f} % ({100 * min(values):+.0f} .. {100 * max(values):+.0f}){star}")
            if median > args.target:
                missed.append(f"{backbone} {size[1]}x{size[0]} {threads} thread(s) {runtime}: {100 * median:+.1f} %")
        print(f"| {backbone} {size[1]}x{size[0]}, {threads} | " + " | ".join(row) + " |")
    print(f"\ncells whose median is above +{100 * args.target:.0f} %: " + ("; ".join(missed) if missed else "none"))


if __name__ == "__main__":
    main()
