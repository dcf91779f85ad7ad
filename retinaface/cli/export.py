"""``retinaface export``: a checkpoint to ONNX or TorchScript, then the file checked against PyTorch.

Example: retinaface export --weights mobilenet0.25_Final.pth --format onnx --output mnet.onnx --dynamic
The work is done by :mod:`retinaface.deploy.export` and :mod:`retinaface.deploy.parity`; see docs/deployment.md.
The file is written atomically. Exit status: 0 written and parity passed (or --no-check), 1 parity
failed (the file is kept for inspection), 2 bad input or export error.

A landmark checkpoint (``retinaface train-landmarks``) is recognised and exported as ONNX with a
dynamic batch and the landmark facts in its metadata (:mod:`retinaface.landmarks.export`); parity
is the max abs point difference in normalised crop units (--atol). With --int8 its calibration
crops are cut by the landmark crop policy from annotated faces (--calibration: a WFLW list, a
folder of .pts files or 'synthetic'), and the report gives NME instead of AP. An existing --output
is refused for landmark files.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, List, Optional

from ..deploy.export.metadata import DEFAULT_SIZE, ExportError, MIN_OPSET, first_line
from ..runtime_interface import EXPORT_FORMATS, export_format
from .common import ArgumentParser, fail, number_in_range, positive_float, positive_int, weights_available


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The argument parser of ``retinaface export`` (no heavy imports)."""
    parser = ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True,
                        help="checkpoint (.pth) of this toolkit or Pytorch_Retinaface, or a zoo name (`retinaface "
                             "models`); or a landmark checkpoint (retinaface train-landmarks)")
    parser.add_argument("--backbone", default=None,
                        help="backbone name; needed only for Pytorch_Retinaface files whose backbone "
                             "cannot be inferred")
    parser.add_argument("--format", required=True, choices=tuple(EXPORT_FORMATS),
                        help="; ".join(f"{f.name}: {f.description}" for f in EXPORT_FORMATS.values()))
    parser.add_argument("--output", required=True, help="file to write (replaced atomically; a landmark export "
                                                         "refuses an existing file)")
    parser.add_argument("--dynamic", action="store_true",
                        help="ONNX: symbolic batch, height and width (TorchScript is always size-generic); "
                             "without it the file takes 1x3xH x W of --size only (the Detector letterboxes "
                             "other images into it)")
    parser.add_argument("--width", type=number_in_range(float, 0.0, 1.0, low_open=True), default=None,
                        help="adaptive-width models: the width to export, in (0, 1]")
    parser.add_argument("--with-postprocess", action="store_true",
                        help="decode in the graph: outputs boxes, scores, landmarks in pixels (NMS stays outside)")
    parser.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    parser.add_argument("--dynamo", action="store_true",
                        help="ONNX: use torch's torch.export-based exporter (slower here) instead of the "
                             "TorchScript-based one")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="compare the written file with PyTorch on several input sizes (default on)")
    parser.add_argument("--atol", type=positive_float, default=1e-4,
                        help="parity tolerance (> 0, default 1e-4; for landmarks in normalised crop units)")
    parser.add_argument("--size", nargs=2, type=positive_int, default=DEFAULT_SIZE, metavar=("H", "W"),
                        help="example input size for tracing; the fixed size of a non-dynamic ONNX file")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (>= 1)")
    int8 = parser.add_argument_group("INT8 (ONNX Runtime static quantisation, QDQ; see docs/edge.md)")
    int8.add_argument("--int8", action="store_true",
                      help="write an INT8 model (per-channel int8 weights, uint8 activations); instead of the "
                           "parity check, report float vs INT8 AP, reproduced detections and latency")
    int8.add_argument("--calibration", default="synthetic",
                      help="folder of calibration images, or 'synthetic' (the built-in training split; default); "
                           "landmarks: a WFLW list or a folder of .pts files (faces cropped by the crop policy)")
    int8.add_argument("--calibration-images", type=positive_int, default=64,
                      help="how many calibration images (landmarks: faces) (>= 1, default: %(default)s)")
    int8.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax",
                      help="activation-range calibration (default: %(default)s)")
    int8.add_argument("--accuracy-data", default="synthetic",
                      help="WIDER-layout folder whose val split the report uses, or 'synthetic' (default); "
                           "landmarks: a WFLW list or .pts folder, or 'synthetic' (its val split)")
    int8.add_argument("--report-runtime", choices=("onnxruntime", "openvino"), default="onnxruntime",
                      help="runtime the accuracy and latency report runs on (default: %(default)s)")
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    """Run ``retinaface export``; returns the exit status (0, 1 parity failed, 2)."""
    prog = prog or "retinaface export"
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad flag (2), already printed by argparse
        return int(exit_.code or 0)
    if args.format == "torchscript" and (args.dynamo or args.opset != MIN_OPSET):
        return fail(prog, "--dynamo and --opset apply to --format onnx only")
    if args.int8 and (args.format != "onnx" or args.with_postprocess):
        return fail(prog, "--int8 needs --format onnx without --with-postprocess (the runtimes run the raw outputs)")
    if not weights_available(args.weights):
        return fail(prog, f"{args.weights}: checkpoint file not found (and not a zoo name: `retinaface models`)")
    if Path(args.output).is_dir():
        return fail(prog, f"--output {args.output}: is a directory; name the file to write")

    # lazy: 'retinaface export --help' and flag errors answer without loading torch and OpenCV
    import torch

    from ..checkpoint import CheckpointError, load_model
    from ..deploy.export.writers import export_model
    from ..landmarks.task import is_landmark_checkpoint
    from ..models import BackboneError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        landmarks = is_landmark_checkpoint(args.weights)
    except (CheckpointError, ValueError, OSError) as exc:
        return fail(prog, first_line(exc))
    if landmarks:
        return _export_landmarks(args, prog)
    if args.int8:
        return _export_int8(args, prog)
    try:
        model = load_model(args.weights, backbone=args.backbone, width=args.width)
        started = time.perf_counter()
        # each format's writer takes the options it registers (EXPORT_FORMATS); the others are dropped
        meta = export_model(model, args.output, args.format, with_postprocess=args.with_postprocess,
                            size=tuple(args.size), width=args.width, dynamic=args.dynamic, opset=args.opset,
                            dynamo=args.dynamo)
    except (ExportError, CheckpointError, BackboneError, ValueError, OSError) as exc:
        return fail(prog, first_line(exc))
    except RuntimeError as exc:  # the exporter itself failed; its first line says why
        return fail(prog, f"exporting {args.weights} to {args.format} failed: {first_line(exc)}")
    size_text = "dynamic batch/height/width" if meta["dynamic"] == "true" else f"fixed 1x3x{meta['input_size']}"
    print(f"wrote {args.output} ({args.format}, {meta['backbone']}, {size_text}, outputs "
          f"{', '.join(json.loads(meta['output_names']))}) in {time.perf_counter() - started:.1f} s")
    if not args.check:
        return 0
    return _parity_status(prog, args.output, lambda: export_format(args.format).check(model, args.output,
                                                                                      atol=args.atol))


def _parity_status(prog: str, output: str, check: Callable[[], Any]) -> int:
    """Run a parity ``check`` of the written ``output`` and report it: 0 passed, 1 failed or could
    not run (the file is kept for inspection)."""
    try:
        report = check()
    except (ExportError, OSError, RuntimeError) as exc:
        fail(prog, f"parity check could not run: {first_line(exc)}")
        return 1
    print("\n".join(report.lines()))
    if not report.passed:
        fail(prog, f"FAIL: {output} was written but does not match PyTorch")
        return 1
    return 0


def _export_int8(args: argparse.Namespace, prog: str) -> int:
    """``--int8``: :func:`retinaface.deploy.quantize.export_int8` (float export, quantisation to
    ``--output``, accuracy report), reported."""
    # lazy: 'retinaface export --help' and flag errors answer without loading torch and OpenCV
    from ..checkpoint import CheckpointError, load_model
    from ..models import BackboneError
    from ..deploy.quantize import QuantizationError, calibration_images, export_int8

    def report_written(done) -> None:
        info = json.loads(done.result.metadata["quantization"])
        print(f"wrote {args.output} (INT8 QDQ, {done.result.metadata['backbone']}, method {args.method}, "
              f"calibration {source}; kept float: {', '.join(info['float_op_types'])} and "
              f"{len(done.result.float_nodes)} node(s)) in {done.seconds:.1f} s")

    try:
        images, source = calibration_images(args.calibration, args.calibration_images)
        model = load_model(args.weights, backbone=args.backbone, width=args.width)
        report = export_int8(model, args.output, images, calibration_source=source, method=args.method,
                             dynamic=args.dynamic, size=args.size, opset=args.opset, dynamo=args.dynamo,
                             width=args.width, threads=args.threads,
                             accuracy_data=args.accuracy_data if args.check else None,
                             report_runtime=args.report_runtime, written=report_written).report
    except (QuantizationError, ExportError, CheckpointError, BackboneError, ValueError, OSError) as exc:
        return fail(prog, first_line(exc))
    except RuntimeError as exc:
        return fail(prog, f"INT8 export of {args.weights} failed: {first_line(exc)}")
    if report is None:
        return 0
    print("\n".join(line for line in report.lines() if not line.lstrip().startswith("warning:")))
    for warning in report.warnings:
        print(f"{prog}: warning: {warning}", file=sys.stderr)
    return 0


def _export_landmarks(args: argparse.Namespace, prog: str) -> int:
    """A landmark checkpoint: ONNX (dynamic batch) and its parity check, or ``--int8`` with the NME
    report (:mod:`retinaface.landmarks.export`)."""
    # lazy: 'retinaface export --help' and flag errors answer without loading torch and OpenCV
    from ..checkpoint import CheckpointError
    from ..deploy.quantize import QuantizationError
    from ..landmarks import export as landmark_export
    from ..landmarks.task import load_landmark_model

    unsupported = [flag for flag, given in (
        ("--format torchscript", args.format != "onnx"), ("--with-postprocess", args.with_postprocess),
        ("--dynamic", args.dynamic), ("--size", tuple(args.size) != tuple(DEFAULT_SIZE)), ("--width", args.width),
        ("--backbone", args.backbone), ("--dynamo", args.dynamo),
        ("--report-runtime openvino", args.report_runtime != "onnxruntime")) if given]
    if unsupported:
        return fail(prog, f"{args.weights} is a landmark checkpoint: {', '.join(unsupported)} do(es) not apply (it "
                          f"exports as ONNX of its own crop size with a dynamic batch, run on ONNX Runtime)")
    if Path(args.output).exists():
        return fail(prog, f"--output {args.output}: already exists; choose another file or delete it")
    try:
        model = load_landmark_model(args.weights)
        started = time.perf_counter()
        if args.int8:
            return _export_landmarks_int8(args, prog, model, landmark_export)
        meta = landmark_export.export_landmark_onnx(model, args.output, opset=args.opset)
    # LandmarkFormatError (a ValueError) names file:line of a calibration or accuracy list
    except (ExportError, QuantizationError, CheckpointError, ValueError, OSError) as exc:
        return fail(prog, first_line(exc))
    except RuntimeError as exc:  # the exporter itself failed; its first line says why
        return fail(prog, f"exporting {args.weights} to onnx failed: {first_line(exc)}")
    print(f"wrote {args.output} (onnx, landmarks {meta['network']} {meta['scheme']}, {meta['num_points']} points, "
          f"input Bx3x{meta['input_size']}x{meta['input_size']} (dynamic batch), crop margin {meta['crop_margin']}, "
          f"output points) in {time.perf_counter() - started:.1f} s")
    if not args.check:
        return 0
    return _parity_status(prog, args.output,
                          lambda: landmark_export.check_landmark_parity(model, args.output, atol=args.atol))


def _export_landmarks_int8(args: argparse.Namespace, prog: str, model, landmark_export) -> int:
    """``--int8`` for a landmark checkpoint: calibration faces, quantisation, the NME report."""
    def report_written(done) -> None:
        info = json.loads(done.result.metadata["quantization"])
        print(f"wrote {args.output} (INT8 QDQ, landmarks {done.result.metadata['network']}, method {args.method}, "
              f"calibration {source}; kept float: {', '.join(info['float_op_types'])} and "
              f"{len(done.result.float_nodes)} node(s)) in {done.seconds:.1f} s")

    faces, source = landmark_export.calibration_faces(args.calibration, model.num_points, args.calibration_images)
    accuracy, label = (landmark_export.landmark_faces(args.accuracy_data, model.num_points, "val") if args.check
                       else (None, ""))
    done = landmark_export.export_landmark_int8(model, args.output, faces, calibration_source=source,
                                                method=args.method, opset=args.opset, threads=args.threads,
                                                accuracy=accuracy, accuracy_label=label, written=report_written)
    if done.report is not None:
        print("\n".join(done.report.lines()))
    return 0
