"""``retinaface detect``: faces in images, folders, videos and webcams -> annotated copies + JSON lines.

The output folder is never written over: a run claims its folder (an exclusive create, so two runs
started at once into one ``--output`` each get their own); when ``--output`` already holds files or
another run holds it, the run writes to the first free numbered sibling (``detections2``,
``detections3``, ...) and says so, so an earlier run's results and any input in that folder stay as
they are, and every output folder holds one complete, consistent run. Walking input folders skips
the output folder and every earlier output folder (one holding ``detections.jsonl``), and takes
each file once (a second link or a symbolic-link loop is skipped with a warning). Ctrl-C stops the
run and keeps what was detected so far (exit 130). Exit status: 0 done, 1 some inputs could not be
read fully (a JPEG cut short counts, unless --allow-partial; the others ran), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ..conventions import (ALIGNED_FACE_SIZE, CONF_THRESHOLD, DEFAULT_MAX_PIXELS, NMS_THRESHOLD, TILE_OVERLAP,
                           VIS_THRESHOLD, first_line)
from ..fileio import CLAIM_FILE, release_claim
from ..runtime_interface import RUNTIMES
from ..zoo import announce_default_detector
from .common import ArgumentParser, UserError, fail, number_in_range, positive_int, probability

EPILOG = """\
output folder policy: a run never writes into a folder that already holds files or that another
run has claimed. If --output is taken, the results go to <output>2 (or the next free number) and
the last line printed names the folder used. An --output that is an existing file, or a place that
cannot be written, is refused before any work is done. Each line of detections.jsonl names its
"source" and the annotated copy written for it ("output"; "crops" with --crops).

examples:
  retinaface detect photo.jpg                # the zoo's default detector (retinaface_mnet025)
  retinaface detect --weights weights/mobilenet0.25_Final.pth photos/ clip.mp4 --output out/
  retinaface detect --weights model.onnx 0 --max-frames 100      # webcam 0 on ONNX Runtime
  retinaface detect photo.jpg --landmarks runs/landmarks/best.pth  # + dense points and head pose
"""

# below one stride-32 cell the network sees a single location
MIN_SIDE = 32


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The argument parser of ``retinaface detect`` (no heavy imports: ``--help`` is instant)."""
    parser = ArgumentParser(prog=prog, description=__doc__,
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files, folders, video files or webcam indices")
    parser.add_argument("--weights", default=None,
                        help="checkpoint (.pth of this toolkit or Pytorch_Retinaface, or .onnx for ONNX Runtime), "
                             "or a zoo name (`retinaface models`); default: the zoo's retinaface_mnet025, "
                             "downloaded and verified on first use")
    parser.add_argument("--backbone", default=None,
                        help="backbone of a Pytorch_Retinaface checkpoint, if it cannot be inferred")
    parser.add_argument("--output", default="detections",
                        help="output folder (default: %(default)s; see the policy below)")
    parser.add_argument("--conf", type=number_in_range(float, 0.0, 1.0, high_open=True), default=CONF_THRESHOLD,
                        help="score threshold in [0, 1) (default: %(default)s)")
    parser.add_argument("--nms", type=number_in_range(float, 0.0, 1.0, low_open=True), default=NMS_THRESHOLD,
                        help="NMS IoU threshold in (0, 1] (default: %(default)s)")
    parser.add_argument("--target-size", type=number_in_range(int, MIN_SIDE), default=None,
                        help=f"resize so the short side is this (>= {MIN_SIDE}; default: original size)")
    parser.add_argument("--max-size", type=number_in_range(int, MIN_SIDE), default=None,
                        help=f"downscale so the long side is at most this (>= {MIN_SIDE})")
    parser.add_argument("--vis-threshold", type=probability, default=VIS_THRESHOLD,
                        help="score needed to draw a face (default: %(default)s)")
    parser.add_argument("--width", type=number_in_range(float, 0.0, 1.0, low_open=True), default=None,
                        help="run an adaptive-width checkpoint at this width in (0, 1]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-frames", type=positive_int, default=None,
                        help="stop each video/webcam after this many frames (>= 1)")
    parser.add_argument("--crops", default=None, metavar="DIR",
                        help="also write one aligned 112x112 crop per face at score >= --vis-threshold "
                             "(ArcFace five-point template) to DIR, named <image>_<k>.jpg; images only")
    parser.add_argument("--crop-size", type=number_in_range(int, 16, 1024), default=ALIGNED_FACE_SIZE,
                        help="side of the aligned crops (default: %(default)s)")
    parser.add_argument("--landmarks", default=None, metavar="MODEL",
                        help="a landmark checkpoint of `retinaface train-landmarks` (best.pth): each face at "
                             "score >= --vis-threshold gets its dense points drawn and, in detections.jsonl, "
                             "\"landmarks_dense\" ([[x, y], ...]) and \"head_pose\" ({yaw, pitch, roll} in "
                             "degrees; for 68-, 98- and 21-point models); images only (videos and webcams "
                             "get the detector's five points)")
    speed = parser.add_argument_group("runtime and speed (docs/edge.md)")
    speed.add_argument("--runtime", choices=RUNTIMES, default="auto",
                       help="auto (default): ONNX Runtime for a .onnx file, else PyTorch; a .pth with "
                            "onnxruntime or openvino is exported once to a cache file beside it")
    speed.add_argument("--threads", type=positive_int, default=None, help="CPU threads of the runtime (>= 1)")
    speed.add_argument("--batch", type=positive_int, default=1,
                       help="video frames per forward pass (>= 1; decoding and encoding run in their own "
                            "threads either way)")
    speed.add_argument("--tile", type=number_in_range(int, MIN_SIDE), default=None,
                       help=f"detect in SIZE x SIZE tiles merged by NMS (>= {MIN_SIDE}): large photos with small faces")
    speed.add_argument("--overlap", type=number_in_range(int, 0), default=TILE_OVERLAP,
                       help="pixels shared by neighbouring tiles (default: %(default)s); faces up to this size are "
                            "whole in a full-resolution tile, larger ones are found in the half, quarter, ... "
                            "resolution levels tiled too")
    speed.add_argument("--max-pixels", type=number_in_range(int, 1024), default=DEFAULT_MAX_PIXELS,
                       help="largest forward pass in input pixels (default: %(default)s, about 1.2 GiB for "
                            "mobilenet0.25 on CPU); a larger image is tiled (or, with --target-size / "
                            "--max-size, downscaled) and a line says so")
    parser.add_argument("--allow-partial", action="store_true",
                        help="detect on the decodable part of a JPEG cut short (default: it is an unreadable "
                             "input, exit 1)")
    return parser


def _output_folder(requested: str, flag: str = "--output") -> Path:
    """The folder this run writes to, claimed for it alone (created), following the policy of the
    module docstring."""
    # lazy: OpenCV only once a run starts (detect --help stays instant)
    from ..inference.sources import claim_output_folder

    if Path(requested).exists() and not Path(requested).is_dir():
        raise UserError(f"{flag} {requested}: is an existing file; name a folder")
    folder = None
    try:
        folder = claim_output_folder(Path(requested))
        probe = folder / ".retinaface-write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        if folder is not None and (folder / CLAIM_FILE).exists():
            release_claim(folder, remove_if_empty=True)
        raise UserError(f"{flag} {requested}: cannot write there ({exc.strerror or exc})") from None
    return folder


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    """Run ``retinaface detect``; returns the exit status (0, 1 some inputs failed, 2, 130)."""
    prog = prog or "retinaface detect"
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad flag (2), already printed by argparse
        return int(exit_.code or 0)
    if args.tile is not None and args.overlap >= args.tile:
        return fail(prog, f"--overlap {args.overlap} must be smaller than --tile {args.tile}")
    claimed: List[Path] = []
    try:
        output = _output_folder(args.output)
        claimed.append(output)
        crops = _output_folder(args.crops, "--crops") if args.crops is not None else None
        if crops is not None:
            claimed.append(crops)
    except UserError as exc:
        for folder in claimed:
            release_claim(folder, remove_if_empty=True)
        return fail(prog, str(exc))
    try:
        # the landmark model first: a wrong --landmarks fails before any detector download
        landmarker = _load_landmarker(args)
        detector = _load_detector(args)
    except (ValueError, RuntimeError, TypeError, OSError) as exc:
        for folder in claimed:
            release_claim(folder, remove_if_empty=True)
        return fail(prog, first_line(exc))
    except KeyboardInterrupt:
        for folder in claimed:
            release_claim(folder, remove_if_empty=True)
        raise
    try:
        return _detect_all(args, detector, output, crops, prog, landmarker)
    finally:
        for folder in claimed:
            release_claim(folder, remove_if_empty=True)


def _load_detector(args: argparse.Namespace):
    """The detector ``--weights`` / ``--runtime`` name (checkpoint errors are ``ValueError`` /
    ``RuntimeError`` / ``OSError`` subclasses naming the file)."""
    # lazy: torch and OpenCV only once a run starts (detect --help stays instant)
    import torch

    from ..inference.detector import Detector
    from ..deploy.runtime import resolve_runtime

    if args.weights is None:  # no --weights: the zoo's default detector, named once
        args.weights = announce_default_detector()
    if args.threads:
        torch.set_num_threads(args.threads)
    on_pytorch = resolve_runtime(args.weights, args.runtime) == "pytorch"
    # an external runtime runs on the CPU, where the Detector then builds its batches
    device = args.device if on_pytorch else "cpu"
    detector = Detector.from_checkpoint(args.weights, backbone=args.backbone, device=device, backend=args.runtime,
                                        width=args.width, threads=args.threads, conf_threshold=args.conf,
                                        nms_threshold=args.nms, target_size=args.target_size, max_size=args.max_size)
    if not on_pytorch:
        # the runtime runs the network on its own threads; torch only post-processes, and its
        # idle workers would compete with the runtime's (detect overhead: docs/edge.md)
        torch.set_num_threads(1)
    return detector


def _load_landmarker(args: argparse.Namespace):
    """``None`` without ``--landmarks``; else the function that gives the dense points and head
    poses of the faces in an image's boxes (the checkpoint's network bound to
    :func:`retinaface.landmarks.inference.dense_faces`), on ``--device``."""
    if args.landmarks is None:
        return None
    # lazy: torch only once a run starts (detect --help stays instant)
    from ..landmarks.inference import dense_faces
    from ..landmarks.task import load_landmark_model

    try:
        model = load_landmark_model(args.landmarks, device=args.device)
    except (ValueError, RuntimeError, TypeError, OSError) as exc:
        # the checkpoint's errors name its file; the flag says which of the two files it is
        raise ValueError(f"--landmarks {first_line(exc)}") from None
    return lambda image, boxes: dense_faces(model, image, boxes)


def _detect_all(args: argparse.Namespace, detector, output: Path, crops: Optional[Path], prog: str,
                landmarker=None) -> int:
    # lazy: OpenCV only once a run starts (detect --help stays instant)
    from ..inference.detect_files import DetectOptions, detect_inputs

    if output != Path(args.output):
        print(f"{args.output} already holds files or another run is writing there; writing this run to {output}",
              file=sys.stderr)
    if crops is not None and crops != Path(args.crops):
        print(f"{args.crops} already holds files or another run is writing there; writing the crops to {crops}",
              file=sys.stderr)
    options = DetectOptions(vis_threshold=args.vis_threshold, max_frames=args.max_frames, batch=args.batch,
                            tile=args.tile, overlap=args.overlap, crops_folder=crops, crop_size=args.crop_size,
                            allow_partial=args.allow_partial, max_pixels=args.max_pixels,
                            progress=sys.stderr.isatty())

    def report(kind: str, message: str) -> None:
        print(f"{prog}: {kind}: {message}", file=sys.stderr)

    summary = detect_inputs(detector, args.inputs, output, options, report, landmarker=landmarker)
    if summary.interrupted:
        print(f"{prog}: interrupted: stopping; results so far are kept", file=sys.stderr)
    notes = [f"{len(summary.failures)} input(s) failed"] if summary.failures else []
    if summary.repeated:
        notes.append(f"{len(summary.repeated)} repeated input(s) skipped")
    if summary.capped:
        notes.append(f"{len(summary.capped)} image(s) over --max-pixels tiled or downscaled")
    print(f"{summary.frames} frame(s), {summary.faces} face(s) at score >= {args.vis_threshold}; "
          f"results in {output}" + "".join(f"; {note}" for note in notes))
    return 130 if summary.interrupted else 1 if summary.failures else 0
