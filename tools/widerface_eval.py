#!/usr/bin/env python
"""WIDER FACE easy / medium / hard AP, as the official evaluation computes it.

From a checkpoint (runs the detector over DATA/val, writes the prediction files, evaluates):
  python tools/widerface_eval.py --weights weights/mobilenet0.25_Final.pth --data data/widerface \\
      --output runs/preds
From an existing prediction folder (any detector's, official layout):
  python tools/widerface_eval.py --preds runs/preds --gt data/widerface/val/ground_truth
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retinaface.evaluation import evaluate, open_ground_truth, plot_pr_curves  # noqa: E402
from retinaface.tta import MULTISCALE_SIZES  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="checkpoint to run (.pth of this toolkit or Pytorch_Retinaface, or .onnx)")
    src.add_argument("--preds", help="evaluate this prediction folder (<event>/<image>.txt) without a model")
    p.add_argument("--backbone", default=None, help="backbone of a Pytorch_Retinaface checkpoint, if not inferable")
    p.add_argument("--data", default=None, help="data root holding val/wider_val.txt and val/images (with --weights)")
    p.add_argument("--gt", default=None, help="ground-truth folder (wider_face_val.mat, wider_{easy,medium,hard}_val.mat)"
                                             " or wider_face_val_bbx_gt.txt; default DATA/val/ground_truth")
    p.add_argument("--output", default=None, help="write the prediction files here (with --weights)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--origin-size", action="store_true", help="test at the original image size (default)")
    size.add_argument("--target-size", type=int, default=None, help="short side to this size (reference: 1600)")
    p.add_argument("--max-size", type=int, default=None, help="cap the long side (reference: 2150)")
    p.add_argument("--flip", action="store_true", help="test-time augmentation: add the mirrored image")
    p.add_argument("--multiscale", type=int, nargs="*", default=None, metavar="SIZE",
                   help=f"test-time augmentation over short-side sizes (default {' '.join(map(str, MULTISCALE_SIZES))})")
    p.add_argument("--conf", type=float, default=0.02, help="score threshold (default: %(default)s)")
    p.add_argument("--nms", type=float, default=0.4, help="NMS IoU threshold (default: %(default)s)")
    p.add_argument("--width", type=float, default=None, help="run an adaptive-width checkpoint at this width")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward (equal-size images only)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding images")
    p.add_argument("--json", action="store_true", help="print one JSON object with full-precision AP")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="draw the three precision-recall curves")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.weights is not None and args.data is None:
        parser.error("--weights needs --data (the root holding val/wider_val.txt)")
    if args.preds is not None and args.gt is None:
        parser.error("--preds needs --gt")
    if args.output is not None and args.preds is not None:
        parser.error("--output writes predictions of a model; with --preds they exist already")
    gt_dir = Path(args.gt) if args.gt else Path(args.data) / "val" / "ground_truth"
    try:
        gt = open_ground_truth(gt_dir)
        if args.preds is not None:
            result = evaluate(args.preds, gt)
        else:
            result = evaluate_checkpoint(args, gt)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.plot:
        label = Path(args.weights or args.preds).stem
        plot_pr_curves(result, args.plot, title=label)
    print(json.dumps(result.as_dict()) if args.json else str(result))
    return 0


def evaluate_checkpoint(args: argparse.Namespace, gt):
    from retinaface import Detector
    from retinaface.evaluation.predict import evaluate_model

    multiscale = None
    if args.multiscale is not None:
        multiscale = args.multiscale or list(MULTISCALE_SIZES)
    detector = Detector.from_checkpoint(args.weights, backbone=args.backbone, device=args.device, width=args.width,
                                        conf_threshold=args.conf, nms_threshold=args.nms, pre_nms_topk=None,
                                        post_nms_topk=None, target_size=args.target_size, max_size=args.max_size)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        return evaluate_model(detector, args.data, gt, output=args.output, batch_size=args.batch_size,
                              workers=args.workers, progress=not args.no_progress, flip=args.flip,
                              multiscale=multiscale, max_size=args.max_size)


if __name__ == "__main__":
    sys.exit(main())
