"""``retinaface verify``: face verification accuracy of an embedding checkpoint on pair sets.

The 10-fold LFW protocol (threshold chosen on nine folds, accuracy on the tenth; mean and std), TAR
at FAR 1e-3 and 1e-4, AUC, an ROC plot and the results as JSON. Pair sets: insightface ``.bin``
files (lfw, cfp_fp, agedb_30), LFW ``pairs.txt`` over an image folder, or a folder holding
``pairs.txt`` (the synthetic identities' ``data/synthetic_identities``).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from ..fileio import release_claim
from ..recognition.verification import plot_roc, roc_curve, verify, write_json
from .common import fail, number_in_range, positive_int


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("--weights", required=True, help="embedder checkpoint (train-recognition's best.pth / last.pth)")
    parser.add_argument("--pairs", required=True, nargs="+",
                        help="pair sets: .bin files, pairs.txt files or folders holding pairs.txt")
    parser.add_argument("--image-root", default=None,
                        help="folder the pairs.txt image names refer to (default: its folder, or test/ beside it)")
    parser.add_argument("--flip", action="store_true", help="flip-feature fusion (embedding of crop + mirrored crop)")
    parser.add_argument("--folds", type=number_in_range(int, 2), default=10, help="cross-validation folds (default 10)")
    parser.add_argument("--far", type=number_in_range(float, 0.0, 1.0, low_open=True, high_open=True), nargs="+",
                        default=[1e-3, 1e-4], help="false accept rates for TAR@FAR (default 1e-3 1e-4)")
    parser.add_argument("--width", type=number_in_range(float, 0.0, 1.0, low_open=True), default=None,
                        help="run a channel-prioritised embedder at this width")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="crops per forward pass (default 64)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    parser.add_argument("--output", default=None,
                        help="folder for results.json and roc.png (a folder holding files gets a numbered sibling)")
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    # lazy: 'retinaface verify --help' and flag errors answer without loading torch and OpenCV
    from ..checkpoint import CheckpointError
    from ..recognition.training import load_embedder, load_pairs
    from ..inference.sources import claim_output_folder

    prog = prog or "retinaface verify"
    args = build_parser(prog).parse_args(argv)
    try:
        model = load_embedder(args.weights, device=args.device, width=args.width)
    except CheckpointError as exc:
        return fail(prog, str(exc))
    except (RuntimeError, ValueError) as exc:
        return fail(prog, f"--device {args.device}: {exc}")
    results, curves = [], {}
    for spec in args.pairs:
        try:
            pairs = load_pairs(spec, args.image_root)
            result, scores = verify(model, pairs, flip=args.flip, n_folds=args.folds, fars=args.far,
                                    batch_size=args.batch_size, name=pairs.name or Path(spec).stem,
                                    return_scores=True)
        except (FileNotFoundError, ValueError, OSError) as exc:  # RecognitionDataError is a ValueError
            return fail(prog, f"--pairs {spec}: {exc}")
        print(result.summary())
        results.append(result.to_dict())
        fpr, tpr, _ = roc_curve(scores, pairs.issame)
        curves[result.name] = (fpr, tpr)
    if args.output:
        try:
            folder = claim_output_folder(Path(args.output))
        except OSError as exc:
            return fail(prog, f"--output: {exc}")
        try:
            write_json({"weights": str(args.weights), "flip": args.flip, "width": args.width, "results": results},
                       folder / "results.json")
            plot_roc(curves, folder / "roc.png")
        finally:
            release_claim(folder, remove_if_empty=True)
        print(f"wrote {folder / 'results.json'} and {folder / 'roc.png'}")
    return 0
