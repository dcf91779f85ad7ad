"""``retinaface eval``: WIDER FACE easy / medium / hard AP of a checkpoint or of a prediction folder.

Computed as the official MATLAB evaluation computes it by default (``--protocol official``), or as
the widely used Python port does (``--protocol python-port``, the program behind most PyTorch
projects' published numbers, Pytorch_Retinaface's included).

From a checkpoint (runs the detector over DATA/val, writes the prediction files, evaluates):
  retinaface eval --weights weights/mobilenet0.25_Final.pth --data data/widerface --output runs/preds
From an existing prediction folder (any detector's, official layout):
  retinaface eval --preds runs/preds --gt data/widerface/val/ground_truth

The --preds path imports neither torch nor OpenCV.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import List, Optional

from ..conventions import (DEFAULT_EVAL_PROTOCOL, EVAL_PROTOCOLS, MULTISCALE_SIZES, VAL_GROUND_TRUTH,
                           WIDER_TEST_CONF_THRESHOLD, WIDER_TEST_NMS_THRESHOLD)
from ..evaluation.plot import plot_pr_curves
from ..evaluation.widerface import evaluate
from ..fileio import claim_fresh_folder, release_claim
from ..formats.ground_truth import open_ground_truth
from .common import ArgumentParser, UserError, fail, non_negative_int, number_in_range, positive_int, probability

# Short-side / long-side sizes a detector can run at: 0, negative and absurd values are refused.
image_size = number_in_range(int, 16, 10000)
positive_probability = number_in_range(float, 0.0, 1.0, low_open=True)


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="checkpoint to run (.pth of this toolkit or Pytorch_Retinaface, or .onnx), "
                                            "or a zoo name (`retinaface models`)")
    src.add_argument("--preds", help="evaluate this prediction folder (<event>/<image>.txt) without a model")
    p.add_argument("--protocol", choices=EVAL_PROTOCOLS, default=DEFAULT_EVAL_PROTOCOL,
                   help="whose arithmetic and reading rules: the official MATLAB evaluation (default) or the "
                        "widely used Python port")
    p.add_argument("--gt", default=None,
                   help="ground-truth folder (wider_face_val.mat, wider_{easy,medium,hard}_val.mat) or "
                        "wider_face_val_bbx_gt.txt; default DATA/val/ground_truth")
    p.add_argument("--allow-missing", action="store_true",
                   help="accept a prediction folder that lacks more than half of the images (they count as "
                        "images without detections)")
    p.add_argument("--backbone", default=None, help="backbone of a Pytorch_Retinaface checkpoint, if not inferable")
    p.add_argument("--data", default=None, help="data root holding val/wider_val.txt and val/images (with --weights)")
    p.add_argument("--output", default=None, help="write the prediction files here, each as its image finishes "
                                                 "(with --weights)")
    p.add_argument("--overwrite", action="store_true", help="let --output replace prediction files already there")
    p.add_argument("--strict", action="store_true",
                   help="stop at an image that cannot be decoded (default: name it, count it as no detections, go on)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--origin-size", action="store_true", help="test at the original image size (default)")
    size.add_argument("--target-size", type=image_size, default=None,
                      help="short side to this size, 16..10000 (reference: 1600)")
    p.add_argument("--max-size", type=image_size, default=None, help="cap the long side, 16..10000 (reference: 2150)")
    p.add_argument("--flip", action="store_true", help="test-time augmentation: add the mirrored image")
    p.add_argument("--multiscale", type=image_size, nargs="*", default=None, metavar="SIZE",
                   help="test-time augmentation over short-side sizes, 16..10000 (default "
                        f"{' '.join(map(str, MULTISCALE_SIZES))})")
    p.add_argument("--conf", type=probability, default=WIDER_TEST_CONF_THRESHOLD,
                   help="score threshold, 0..1 (default: %(default)s)")
    p.add_argument("--nms", type=positive_probability, default=WIDER_TEST_NMS_THRESHOLD,
                   help="NMS IoU threshold, (0, 1] (default: %(default)s)")
    p.add_argument("--width", type=positive_probability, default=None,
                   help="run an adaptive-width checkpoint at this width, (0, 1]")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=positive_int, default=1, help="images per forward (equal-size images only)")
    p.add_argument("--workers", type=non_negative_int, default=2, help="DataLoader workers decoding images")
    p.add_argument("--json", action="store_true", help="print one JSON object: full-precision AP, the protocol and "
                                                       "what reading the folder found")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="draw the three precision-recall curves")
    p.add_argument("--no-progress", action="store_true")
    return p


def _check_writable_file(flag: str, path: Path) -> None:
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name such as {path / 'pr.png'}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{flag} {path}: {parent} is a file, not a folder")
            break


def _check_output(args: argparse.Namespace) -> None:
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out} is a file; give a folder for the prediction files")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--output {out}: {parent} is a file, not a folder")
            break
    if out.is_dir() and not args.overwrite:
        existing = next(out.glob("*/*.txt"), None)
        if existing is not None:
            raise UserError(f"--output {out} already holds prediction files (e.g. {existing}); choose an empty "
                            f"folder or pass --overwrite")


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.weights is not None and args.data is None:
        parser.error("--weights needs --data (the root holding val/wider_val.txt)")
    if args.preds is not None and args.gt is None and args.data is None:
        parser.error("--preds needs --gt (or --data, whose val/ground_truth is used)")
    if args.preds is not None:
        for flag in ("output", "overwrite", "strict", "flip", "backbone", "width", "target_size", "max_size"):
            if getattr(args, flag) not in (None, False):
                parser.error(f"--{flag.replace('_', '-')} applies to --weights (running a model); "
                             f"with --preds the predictions exist already")
        if args.multiscale is not None:
            parser.error("--multiscale applies to --weights (running a model)")
    if args.output is not None:
        _check_output(args)
    if args.plot is not None:
        _check_writable_file("--plot", Path(args.plot))


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    prog = parser.prog

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr)

    try:
        _validate(parser, args)
        gt_path = Path(args.gt) if args.gt else Path(args.data) / VAL_GROUND_TRUTH
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            gt = open_ground_truth(gt_path)
            if args.preds is not None:
                result = evaluate(args.preds, gt, protocol=args.protocol, allow_missing=args.allow_missing)
            else:
                result = _evaluate_claimed(args, gt, prog)
        if args.plot:
            plot_pr_curves(result, args.plot, title=Path(args.weights or args.preds).name)
    except UserError as exc:
        return fail(prog, str(exc))
    except (OSError, ValueError, RuntimeError) as exc:
        return fail(prog, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    print(json.dumps(result.to_json()) if args.json else str(result))
    return 0


def _evaluate_claimed(args: argparse.Namespace, gt, prog: str):
    """:func:`_evaluate_checkpoint` with ``--output`` claimed for this run alone: a run started at
    the same time into the same folder goes on to ``<output>2`` (and says so) instead of mixing its
    prediction files with this one's."""
    if args.output is None:
        return _evaluate_checkpoint(args, gt)
    requested = Path(args.output)
    folder = claim_fresh_folder(requested, is_free=lambda f: args.overwrite or next(f.glob("*/*.txt"), None) is None)
    if folder != requested:
        print(f"{prog}: {requested} is being written by another run; writing the predictions to {folder}",
              file=sys.stderr)
    args.output = str(folder)
    try:
        return _evaluate_checkpoint(args, gt)
    finally:
        release_claim(folder, remove_if_empty=True)


def _evaluate_checkpoint(args: argparse.Namespace, gt):
    # lazy: torch and OpenCV only where a model runs (eval --preds stays light)
    from ..inference.detector import Detector
    from ..evaluation.predict import check_val_split, evaluate_model

    check_val_split(args.data, gt)  # every listed image and the ground truth, before the model loads

    multiscale = None
    if args.multiscale is not None:
        multiscale = args.multiscale or list(MULTISCALE_SIZES)
    detector = Detector.from_checkpoint(args.weights, backbone=args.backbone, device=args.device, width=args.width,
                                        conf_threshold=args.conf, nms_threshold=args.nms, pre_nms_topk=None,
                                        post_nms_topk=None, target_size=args.target_size, max_size=args.max_size)
    return evaluate_model(detector, args.data, gt, output=args.output, batch_size=args.batch_size,
                          workers=args.workers, progress=not args.no_progress, protocol=args.protocol,
                          strict=args.strict, flip=args.flip, multiscale=multiscale, max_size=args.max_size)
