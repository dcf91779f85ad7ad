"""``retinaface embed``: detect, align and embed every face of images, folders and videos.

Writes into ``--output`` (a folder that already holds files gets a numbered sibling, so nothing is
overwritten): ``embeddings.jsonl``, one line per image or video frame with its faces (box, score,
landmarks, and the rows of their embeddings), and ``<input stem>.npy`` per input, the ``(N, D)``
float32 L2-normalized embeddings of its faces in the order of the JSON lines. ``--crops`` also
writes the aligned crops. Every file is written atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from ..fileio import atomic_write
from .common import fail, number_in_range, positive_int

OUTPUT_FILE = "embeddings.jsonl"


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
    from ..detector import Detector
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


def _save_npy(array, path: Path) -> None:
    import numpy as np

    with atomic_write(path, "wb") as handle:
        np.save(handle, array)


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    # lazy: 'retinaface embed --help' and flag errors answer without loading OpenCV
    import cv2
    import numpy as np

    from ..sources import OutputNames, SourceError, fresh_output_folder, iter_frames, iter_sources

    prog = prog or "retinaface embed"
    args = build_parser(prog).parse_args(argv)
    analyzer = build_analyzer(args, prog)
    if isinstance(analyzer, int):
        return analyzer
    try:
        folder = fresh_output_folder(Path(args.output))
    except NotADirectoryError as exc:
        return fail(prog, f"--output: {exc}")
    sources = iter_sources(args.inputs, skip=[folder])
    if not sources:
        return fail(prog, f"no images or videos found in {' '.join(args.inputs)}")
    names = OutputNames(folder)
    lines: List[str] = []
    errors = 0
    total_faces = 0
    folder.mkdir(parents=True, exist_ok=True)
    for source in sources:
        npy_path = names(source, ".npy")
        embeddings = []
        rows = 0
        try:
            for frame, image in iter_frames(source):
                faces = analyzer.analyze(image)
                record = {"source": source.location, "frame": frame, "embeddings": npy_path.name,
                          "rows": [rows, rows + len(faces)], "faces": [f.to_dict() for f in faces]}
                lines.append(json.dumps(record))
                for i, face in enumerate(faces):
                    embeddings.append(face.embedding)
                    if args.crops:
                        crop_path = folder / f"{npy_path.stem}_f{frame}_{i}.jpg"
                        ok, buffer = cv2.imencode(".jpg", face.crop)
                        with atomic_write(crop_path, "wb") as handle:
                            handle.write(buffer.tobytes())
                rows += len(faces)
        except SourceError as exc:
            print(f"{prog}: warning: {exc}", file=sys.stderr)
            errors += 1
            if not embeddings:
                continue
        dim = analyzer.embedding_size
        array = np.stack(embeddings).astype(np.float32) if embeddings else np.zeros((0, dim), np.float32)
        _save_npy(array, npy_path)
        total_faces += rows
    with atomic_write(folder / OUTPUT_FILE) as handle:
        handle.write("\n".join(lines) + ("\n" if lines else ""))
    print(f"{total_faces} faces from {len(sources) - errors} inputs -> {folder}")
    return 0 if errors == 0 else 1
