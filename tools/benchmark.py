#!/usr/bin/env python
"""Params, GFLOPs and latency of RetinaFace variants (one backbone, or a table of all).

With ``--widths 1.0 0.75 0.5`` it measures one adaptive (channel-prioritised) model at each width:
the checkpoint given by ``--weights`` (see tools/prioritize.py), or an untrained width-switchable
``--backbone``; ``--data ROOT`` adds the WIDER AP of each width on ROOT's val split."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from retinaface import create_model, list_backbones  # noqa: E402
from retinaface.adaptive.slim import active_parameters  # noqa: E402
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
    parser.add_argument("--widths", type=float, nargs="+", default=None,
                        help="measure an adaptive model at these widths (e.g. 1.0 0.75 0.5)")
    parser.add_argument("--weights", default=None, help="checkpoint to measure (with --widths: an adaptive one)")
    parser.add_argument("--data", default=None, help="with --widths: also the val AP per width on this data root")
    return parser.parse_args(argv)


def measure_widths(args: argparse.Namespace) -> int:
    """One row per width; each width loads the model afresh (timing shifts the class biases)."""
    from retinaface import load_model
    from retinaface.adaptive import make_adaptive

    def build(w: float):
        if args.weights:
            return load_model(args.weights, device=args.device, width=w)
        return make_adaptive(create_model(args.backbone)).set_width(w)

    height, width = args.size
    rows = []
    for w in args.widths:
        try:
            model = build(w)
        except (ValueError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        name = f"{Path(args.weights).stem if args.weights else args.backbone} @{w:g}"
        extra = {}
        if args.data:
            from retinaface.evaluation.predict import evaluate_model

            ap = evaluate_model(model.eval(), args.data, progress=False).as_dict()
            extra = {f"AP {k}": v for k, v in ap.items()}
        row = benchmark_model(model, height, width, name, args.device, args.repeats, detect=not args.no_detect)
        row.params_m = active_parameters(model) / 1e6  # the weights this width computes with
        row.extra.update(extra)
        rows.append(row)
        print(f"measured {name}", file=sys.stderr)
    print(markdown_table(rows, height, width))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        print("\n".join(list_backbones()))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.widths:
        return measure_widths(args)
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
