#!/usr/bin/env python
"""Params, GFLOPs and latency of RetinaFace variants (one backbone, or a table of all)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from retinaface import create_model, list_backbones  # noqa: E402
from retinaface.profiling import benchmark_model, markdown_table  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", default="mobilenet0.25", help="backbone name (see --list)")
    parser.add_argument("--all", action="store_true", help="every built-in backbone, as a markdown table")
    parser.add_argument("--list", action="store_true", help="list the built-in backbones and exit")
    parser.add_argument("--size", nargs=2, type=int, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-detect", action="store_true", help="time the forward pass only")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        print("\n".join(list_backbones()))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list_backbones() if args.all else [args.backbone]
    height, width = args.size
    rows = []
    for name in names:
        try:
            model = create_model(name)
        except (ValueError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        rows.append(benchmark_model(model, height, width, name, args.device, args.repeats,
                                    detect=not args.no_detect))
        print(f"measured {name}", file=sys.stderr)
    print(markdown_table(rows, height, width))
    return 0


if __name__ == "__main__":
    sys.exit(main())
