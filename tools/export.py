#!/usr/bin/env python
"""Export a RetinaFace checkpoint to ONNX or TorchScript, then check the file against PyTorch.

Example: python tools/export.py --weights mobilenet0.25_Final.pth --format onnx --output mnet.onnx --dynamic
The work is done by :mod:`retinaface.export`; see docs/deployment.md. Exit status: 0 written and
parity passed (or --no-check), 1 parity failed (the file is kept), 2 bad input or export error.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# mirrored from retinaface.export, so argument errors are reported before torch is imported (seconds)
DEFAULT_SIZE = (640, 640)
MIN_OPSET = 17


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="checkpoint (.pth) of this toolkit or Pytorch_Retinaface")
    parser.add_argument("--backbone", default=None,
                        help="backbone name; needed only for Pytorch_Retinaface files whose backbone "
                             "cannot be inferred")
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    parser.add_argument("--output", required=True, help="file to write (replaced atomically)")
    parser.add_argument("--dynamic", action="store_true",
                        help="ONNX: symbolic batch, height and width (TorchScript is always size-generic)")
    parser.add_argument("--width", type=float, default=None,
                        help="adaptive-width models: the width to export (passed to load_model)")
    parser.add_argument("--with-postprocess", action="store_true",
                        help="decode in the graph: outputs boxes, scores, landmarks in pixels (NMS stays outside)")
    parser.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    parser.add_argument("--dynamo", action="store_true",
                        help="ONNX: use torch's torch.export-based exporter (slower here) instead of the "
                             "TorchScript-based one")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="compare the written file with PyTorch on several input sizes (default on)")
    parser.add_argument("--atol", type=float, default=1e-4, help="parity tolerance (default 1e-4)")
    parser.add_argument("--size", nargs=2, type=int, default=DEFAULT_SIZE, metavar=("H", "W"),
                        help="example input size for tracing; the fixed size of a non-dynamic ONNX file")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.format == "torchscript" and (args.dynamo or args.opset != MIN_OPSET):
        print("error: --dynamo and --opset apply to --format onnx only", file=sys.stderr)
        return 2
    if not Path(args.weights).is_file():
        print(f"error: {args.weights}: checkpoint file not found", file=sys.stderr)
        return 2
    if Path(args.output).is_dir():
        print(f"error: --output {args.output}: is a directory; name the file to write", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        print(f"error: --threads {args.threads}: must be a positive integer", file=sys.stderr)
        return 2
    if not args.atol > 0:  # also refuses nan
        print(f"error: --atol {args.atol}: must be a positive number", file=sys.stderr)
        return 2

    import torch

    from retinaface.checkpoint import CheckpointError
    from retinaface.export import ExportError, check_parity, export_model, load_for_export
    from retinaface.models import BackboneError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = load_for_export(args.weights, backbone=args.backbone, width=args.width)
        started = time.perf_counter()
        options = dict(with_postprocess=args.with_postprocess, size=tuple(args.size), width=args.width)
        if args.format == "onnx":
            options.update(dynamic=args.dynamic, opset=args.opset, dynamo=args.dynamo)
        meta = export_model(model, args.output, args.format, **options)
    except (ExportError, CheckpointError, BackboneError, ValueError, OSError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # the exporter itself failed; its first line says why
        print(f"error: exporting {args.weights} to {args.format} failed: {_one_line(exc)}", file=sys.stderr)
        return 2
    size_text = "dynamic batch/height/width" if meta["dynamic"] == "true" else f"fixed 1x3x{meta['input_size']}"
    print(f"wrote {args.output} ({args.format}, {meta['backbone']}, {size_text}, outputs "
          f"{', '.join(json.loads(meta['output_names']))}) in {time.perf_counter() - started:.1f} s")
    if not args.check:
        return 0
    try:
        report = check_parity(model, args.output, atol=args.atol)
    except (ExportError, OSError, RuntimeError) as exc:
        print(f"error: parity check could not run: {_one_line(exc)}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    if not report.passed:
        print(f"FAIL: {args.output} was written but does not match PyTorch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
