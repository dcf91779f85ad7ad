"""``retinaface embed``: detect, align and embed every face of images, folders and videos.

Writes into ``--output`` (a folder that already holds files gets a numbered sibling, so nothing is
overwritten): ``embeddings.jsonl``, one line per image or video frame with its faces (box, score,
landmarks, and the rows of their embeddings), and ``<input stem>.npy`` per input, the ``(N, D)``
float32 L2-normalized embeddings of its faces in the order of the JSON lines. ``--crops`` also
writes the aligned crops. Every file is written atomically. The loop is
:func:`retinaface.inference.embed_files.embed_inputs`; this command parses the flags and reports.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ..fileio import release_claim
from .common import fail, number_in_range, positive_int


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The detector / embedder flags ``embed`` and ``identify`` share."""
    parser.add_argument("--detector", required=True, help="detector checkpoint (.pth) or .onnx")
    parser.add_argument("--weights", required=True, help="embedder checkpoint (train-recognition's best.pth)")
    parser.add_argument("--min-score", type=number_in_range(float, 0.0, 1.0), default=0.5,
                        help="faces below this detection score are ignored (default 0.5)")
    parser.add_argument("--width", type=number_in_range(float, 0.0, 1.0, low_open=True), default=None,
                        help="run a channel-prioritised embedder at this width")
    parser.add_argument("--flip", action="store_true", help="flip-feature fusion")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="crops per embedder pass (default 64)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")


def build_analyzer(args, prog: str):
    """A FaceAnalyzer from the shared flags, or an exit code after a one-line error."""
    # lazy: 'retinaface embed --help' and flag errors answer without loading torch and OpenCV
    from ..checkpoint import CheckpointError
    from ..inference.detector import Detector
    from ..recognition.analyzer import FaceAnalyzer
    from ..recognition.training import load_embedder

    try:
        detector = Detector.from_checkpoint(args.detector, device=args.device)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        return fail(prog, f"--detector: {exc}")
    try:
        embedder = load_embedder(args.weights, device=args.device, width=args.width)
    except (CheckpointError, ValueError) as exc:
        return fail(prog, f"--weights: {exc}")
    return FaceAnalyzer(detector, embedder, min_score=args.min_score, embed_batch_size=args.batch_size,
                        flip=args.flip)


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Detect, align and embed faces; JSON lines + .npy per input.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders, videos")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--crops", action="store_true", help="also write each aligned crop as <stem>_f<frame>_<i>.jpg")
    add_model_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    # lazy: 'retinaface embed --help' and flag errors answer without loading OpenCV
    from ..inference.embed_files import embed_inputs
    from ..inference.sources import claim_output_folder, iter_sources

    prog = prog or "retinaface embed"
    args = build_parser(prog).parse_args(argv)
    analyzer = build_analyzer(args, prog)
    if isinstance(analyzer, int):
        return analyzer
    try:
        folder = claim_output_folder(Path(args.output))
    except OSError as exc:
        return fail(prog, f"--output: {exc}")
    try:
        sources = iter_sources(args.inputs, skip=[folder])
        if not sources:
            return fail(prog, f"no images or videos found in {' '.join(args.inputs)}")
        summary = embed_inputs(analyzer, sources, folder, crops=args.crops,
                               warn=lambda message: print(f"{prog}: warning: {message}", file=sys.stderr))
    finally:
        release_claim(folder, remove_if_empty=True)
    errors = len(summary.failures)
    print(f"{summary.faces} faces from {summary.inputs - errors} inputs -> {folder}")
    return 0 if errors == 0 else 1
