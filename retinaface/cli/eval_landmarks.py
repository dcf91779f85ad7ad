"""``retinaface eval-landmarks``: NME (inter-ocular by default), FR@0.1 and AUC@0.1 of dense landmarks,
with WFLW's per-attribute table when the ground truth carries WFLW's flags.

Two ways in:

* ``--weights W --data GT``: run a landmark checkpoint (``retinaface train-landmarks``), or an
  ``.onnx`` file ``retinaface export`` made of one (ONNX Runtime), on the faces of a WFLW list, a
  folder of 300W ``.pts`` files, a folder of AFLW2000-3D ``.mat`` files or a COFW ``.mat`` file, each
  cropped by its annotated box (AFLW: its points' box); ``--output`` writes the predictions in the
  ground truth's own format (WFLW, 300W). A channel-prioritised checkpoint (``retinaface prioritize
  --task landmarks``) runs at ``--width p``, or at each of ``--widths 1 0.75 0.5`` with parameters
  and FLOPs per width;
* ``--pred FILE --gt FILE``: score predictions written in the ground truth's format: a WFLW list
  against a WFLW list (line by line, same image paths), or a folder of ``.pts`` files against a
  folder of ``.pts`` files (matched by file name).

NME's default normalisation follows each data set's papers: inter-ocular (outer eye corners: 300W,
WFLW 60 / 72, COFW 8 / 9), and the box size ``sqrt(w h)`` of the ground-truth points for AFLW2000-3D.
AFLW2000-3D files are scored on AFLW's 21 points (``pt2d``), or on the 68 fitted points
(``pt3d_68``) with ``--aflw-points pt3d_68``, the default for a 68-point model.

``--json`` prints the scores as one JSON object on the last line. Malformed files end with one
line naming ``file:line`` and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..deploy.export.metadata import ExportError
from ..landmarks.evaluate import evaluate_landmarks, write_predictions
from ..landmarks.formats import AFLW2000_POINT_SETS, FORMAT_AFLW2000, FORMAT_COFW, read_pts, read_wflw_list
from ..landmarks.metrics import NORMALISATIONS, ced_curve
from ..landmarks.schemes import get_scheme
from .common import ArgumentParser, UserError, fail, number_in_range, positive_int

WIDTH = number_in_range(float, 0.0, 1.0, low_open=True)


def default_normalisation(sample_format: str) -> str:
    """NME's normalising distance the data set's papers use: the box size for AFLW2000-3D (its 21
    points have no outer eye corners on profile faces; 3DDFA / PRNet normalise the 68 by the box),
    the outer eye corners otherwise."""
    return "box" if sample_format == FORMAT_AFLW2000 else "inter-ocular"


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The argument parser of ``retinaface eval-landmarks`` (no heavy imports)."""
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="a landmark checkpoint (retinaface train-landmarks), or an .onnx file "
                        "exported from one (retinaface export; float or INT8, run on ONNX Runtime)")
    parser.add_argument("--data", help="with --weights: ground truth, a WFLW list, a folder of .pts files, a "
                        "folder of AFLW2000-3D .mat files or a COFW .mat file")
    parser.add_argument("--width", type=WIDTH, default=None,
                        help="with --weights: run a channel-prioritised checkpoint at this width, (0, 1]")
    parser.add_argument("--widths", type=WIDTH, nargs="+", default=None,
                        help="with --weights: score a channel-prioritised checkpoint at each width (e.g. 1 0.75 "
                        "0.5), with its parameters and FLOPs")
    parser.add_argument("--aflw-points", choices=AFLW2000_POINT_SETS, default=None,
                        help="AFLW2000-3D ground truth: the 21 manual points (pt2d) or the 68 fitted ones "
                        "(pt3d_68); default: pt3d_68 for a 68-point model, else pt2d")
    parser.add_argument("--image-root", help="with --weights: folder the WFLW list's image paths are relative to "
                        "(default: images/ beside the list when it exists, else the list's folder)")
    parser.add_argument("--output", help="with --weights: write the predictions here in the ground truth's "
                        "format (a WFLW list file, or a folder of .pts files)")
    parser.add_argument("--pred", help="predictions in the ground truth's format (WFLW list or .pts folder)")
    parser.add_argument("--gt", help="with --pred: the ground truth (WFLW list or .pts folder)")
    parser.add_argument("--scheme", help="the landmark scheme the faces must have (ibug68, wflw98, ...; "
                        "default: from the point count)")
    parser.add_argument("--normalisation", choices=NORMALISATIONS, default=None,
                        help="NME's normalising distance (default: box for AFLW2000-3D, else inter-ocular: "
                        "the outer eye corners)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="with --weights: faces per forward pass")
    parser.add_argument("--device", default="cpu", help="with --weights: cpu, cuda, ...")
    parser.add_argument("--json", action="store_true", help="the scores as JSON on the last line")
    parser.add_argument("--plot", metavar="CED.png", help="write the cumulative error distribution curve (matplotlib)")
    return parser


def _paired_pts(pred: Path, gt: Path, samples: List[Any]) -> List[Any]:
    if gt.is_dir() != pred.is_dir():
        raise UserError(f"--pred {pred} and --gt {gt}: both must be .pts folders or both single .pts files")
    out = []
    for sample in samples:
        source = Path(sample.source.rsplit(":", 1)[0])
        path = pred / source.relative_to(gt) if gt.is_dir() else pred
        if not path.is_file():
            raise UserError(f"{path}: no prediction for {source}")
        out.append(read_pts(path, num_points=sample.num_points))
    return out


def _paired_wflw(pred: Path, samples: List[Any]) -> List[Any]:
    predicted = read_wflw_list(pred, num_points=samples[0].num_points)
    if len(predicted) != len(samples):
        raise UserError(f"{pred}: {len(predicted)} faces, the ground truth has {len(samples)}")
    for p, s in zip(predicted, samples):
        if p.name != s.name:
            raise UserError(f"{p.source}: image {p.name}, but the ground truth's line {s.source} is {s.name}")
    return predicted


def _scores(result: Any) -> Dict[str, Any]:
    def value(x: float) -> Optional[float]:
        return None if math.isnan(x) else round(float(x), 6)

    t = f"{result.threshold:g}"
    out: Dict[str, Any] = {"count": result.count, "normalisation": result.normalisation, "nme": value(result.nme),
                           f"fr@{t}": value(result.failure_rate), f"auc@{t}": value(result.auc)}
    if result.subsets:
        out["subsets"] = {name: {"count": s.count, "nme": value(s.nme), f"fr@{t}": value(s.failure_rate),
                                 f"auc@{t}": value(s.auc)} for name, s in result.subsets.items()}
    return out


def _plot(result: Any, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib (pip install matplotlib)") from None
    xs, shares = ced_curve(result.per_face, result.threshold)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(xs, shares, label=f"NME {100 * result.nme:.2f} %, AUC {result.auc:.4f}")
    ax.set_xlabel(f"NME ({result.normalisation})")
    ax.set_ylabel("share of faces")
    ax.set_xlim(0, result.threshold)
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    """Run ``retinaface eval-landmarks``; returns the exit status (0, 2 for user mistakes)."""
    prog = prog or "retinaface eval-landmarks"
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad flag (2), already printed by argparse
        return int(exit_.code or 0)
    if bool(args.weights) == bool(args.pred):
        return fail(prog, "give --weights W --data GT, or --pred FILE --gt GT")
    if args.weights and not args.data:
        return fail(prog, "--weights needs --data (a WFLW list or a folder of .pts files)")
    if args.pred and not args.gt:
        return fail(prog, "--pred needs --gt (the ground truth in the same format)")
    if args.pred and args.output:
        return fail(prog, "--output goes with --weights (the predictions it makes)")
    if (args.width is not None or args.widths) and not args.weights:
        return fail(prog, "--width / --widths go with --weights (a channel-prioritised checkpoint)")
    if args.width is not None and args.widths:
        return fail(prog, "give --width W or --widths W [W ...], not both")
    if args.widths and args.output:
        return fail(prog, "--output writes the predictions of one width: give --width, not --widths")
    try:
        return _run(args)
    except (UserError, ValueError, FileNotFoundError, OSError, ExportError) as exc:
        # LandmarkFormatError and CheckpointError are ValueErrors naming file:line / the file; ExportError
        # names an .onnx file that is not a landmark export
        return fail(prog, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def _run(args: argparse.Namespace) -> int:

    # lazy: 'retinaface eval-landmarks --help' and flag errors answer without OpenCV and torch
    from ..landmarks.task import load_samples

    model = None
    if args.weights:
        # lazy: only --weights needs torch
        from ..landmarks.task import load_landmark_model

        model = load_landmark_model(args.weights, args.device, width=args.width)
    aflw_points = args.aflw_points or ("pt3d_68" if model is not None and model.num_points == 68 else "pt2d")
    gt_path = Path(args.gt or args.data)
    samples = load_samples(gt_path, args.image_root, aflw_points)
    counts = {s.num_points for s in samples}
    if len(counts) != 1:
        raise UserError(f"{gt_path}: faces with {sorted(counts)} points; score one scheme at a time")
    scheme = get_scheme(args.scheme or counts.pop())
    if scheme.num_points != samples[0].num_points:
        raise UserError(f"--scheme {scheme.name} has {scheme.num_points} points, {gt_path} has {samples[0].num_points}")
    normalisation = args.normalisation or default_normalisation(samples[0].format)
    if args.pred:
        if samples[0].format in (FORMAT_AFLW2000, FORMAT_COFW):
            raise UserError(f"--gt {gt_path}: AFLW2000-3D / COFW predictions have no file format of their own "
                            "to pair; score a checkpoint with --weights --data instead")
        pred = Path(args.pred)
        if not pred.exists():
            raise UserError(f"--pred {pred}: no such file or folder")
        paired = _paired_wflw(pred, samples) if gt_path.suffix.lower() == ".txt" else _paired_pts(pred, gt_path, samples)
        predictions = [p.points for p in paired]
        label = str(pred)
    else:
        if model.num_points != scheme.num_points:
            raise UserError(f"--weights {args.weights} predicts {model.num_points} points, {gt_path} has "
                            f"{scheme.num_points}")
        if args.widths:
            return _run_widths(args, model, samples, gt_path, scheme.name, normalisation)
        predictions = _predict(model, samples, args.batch_size)
        label = str(args.weights) + (f" at width {args.width:g}" if args.width is not None else "")
        if args.output:
            written = write_predictions(predictions, samples, args.output)
            print(f"wrote {len(written)} prediction file(s) to {args.output}")
    result = evaluate_landmarks(predictions, samples, normalisation=normalisation)
    print(f"{label} on {gt_path} ({scheme.name}, NME {normalisation}):")
    print(result.table())
    if args.plot:
        _plot(result, args.plot)
        print(f"wrote {args.plot}")
    if args.json:
        print(json.dumps(_scores(result)))
    return 0


def _predict(model: Any, samples: List[Any], batch_size: int) -> Any:
    # lazy: only --weights needs torch
    from ..landmarks.task import predict_landmarks

    return predict_landmarks(model, samples, model.crop_margin, batch_size)


def _run_widths(args: argparse.Namespace, model: Any, samples: List[Any], gt_path: Path, scheme: str,
                normalisation: str) -> int:
    """``--widths``: NME / FR / AUC, parameters and FLOPs (the seed report's convention) per width."""
    # lazy: only --weights needs torch
    from ..adaptive.slim import set_width
    from ..landmarks.models import model_complexity

    rows, lines = [], []
    for width in args.widths:
        set_width(model, width)  # a plain checkpoint refuses a width below 1 (ValueError: one line)
        cost = model_complexity(model, int(model.config.input_size))
        result = evaluate_landmarks(_predict(model, samples, args.batch_size), samples, normalisation=normalisation)
        rows.append({"width": float(width), "params": int(cost["params"]), "flops": int(cost["flops"]),
                     **_scores(result)})
        lines.append(f"{width:>6g} {cost['params'] / 1e6:>9.4f} {cost['flops'] / 1e6:>8.2f} {100 * result.nme:>7.3f} "
                     f"{100 * result.failure_rate:>10.2f} {result.auc:>8.4f}")
    t = f"{result.threshold:g}"
    print(f"{args.weights} on {gt_path} ({scheme}, NME {normalisation}):")
    print(f"{'width':>6} {'params M':>9} {'MFLOPs':>8} {'NME %':>7} {'FR@' + t + ' %':>10} {'AUC@' + t:>8}")
    print("\n".join(lines))
    if args.json:
        print(json.dumps({"widths": rows}))
    return 0
