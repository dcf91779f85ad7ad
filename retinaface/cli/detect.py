"""``retinaface detect``: faces in images, folders, videos and webcams -> annotated copies + JSON lines.

The output folder is never written over: when ``--output`` already holds files, the run writes to
the first free numbered sibling (``detections2``, ``detections3``, ...) and says so, so an earlier
run's results and any input in that folder stay as they are, and every output folder holds one
complete, consistent run. Walking input folders skips the output folder and every earlier output
folder (one holding ``detections.jsonl``). Ctrl-C stops the run and keeps what was detected so far
(exit 130). Exit status: 0 done, 1 some inputs could not be read (the others ran), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from .common import UserError, fail, number_in_range, positive_int, probability

EPILOG = """\
output folder policy: a run never writes into a folder that already holds files. If --output
exists and is not empty, the results go to <output>2 (or the next free number) and the last line
printed names the folder used. An --output that is an existing file, or a place that cannot be
written, is refused before any work is done.

examples:
  retinaface detect --weights weights/mobilenet0.25_Final.pth photos/ clip.mp4 --output out/
  retinaface detect --weights model.onnx 0 --max-frames 100      # webcam 0 on ONNX Runtime
"""

# below one stride-32 cell the network sees a single location
MIN_SIDE = 32


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The argument parser of ``retinaface detect`` (no heavy imports: ``--help`` is instant)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files, folders, video files or webcam indices")
    parser.add_argument("--weights", required=True,
                        help="checkpoint (.pth of this toolkit or Pytorch_Retinaface, or .onnx for ONNX Runtime)")
    parser.add_argument("--backbone", default=None,
                        help="backbone of a Pytorch_Retinaface checkpoint, if it cannot be inferred")
    parser.add_argument("--output", default="detections",
                        help="output folder (default: %(default)s; see the policy below)")
    parser.add_argument("--conf", type=number_in_range(float, 0.0, 1.0, high_open=True), default=0.02,
                        help="score threshold in [0, 1) (default: %(default)s)")
    parser.add_argument("--nms", type=number_in_range(float, 0.0, 1.0, low_open=True), default=0.4,
                        help="NMS IoU threshold in (0, 1] (default: %(default)s)")
    parser.add_argument("--target-size", type=number_in_range(int, MIN_SIDE), default=None,
                        help=f"resize so the short side is this (>= {MIN_SIDE}; default: original size)")
    parser.add_argument("--max-size", type=number_in_range(int, MIN_SIDE), default=None,
                        help=f"downscale so the long side is at most this (>= {MIN_SIDE})")
    parser.add_argument("--vis-threshold", type=probability, default=0.6,
                        help="score needed to draw a face (default: %(default)s)")
    parser.add_argument("--width", type=number_in_range(float, 0.0, 1.0, low_open=True), default=None,
                        help="run an adaptive-width checkpoint at this width in (0, 1]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-frames", type=positive_int, default=None,
                        help="stop each video/webcam after this many frames (>= 1)")
    return parser


def _output_folder(requested: str) -> Path:
    """The folder this run writes to (created), following the policy of the module docstring."""
    from ..sources import fresh_output_folder

    if Path(requested).exists() and not Path(requested).is_dir():
        raise UserError(f"--output {requested}: is an existing file; name a folder")
    try:
        folder = fresh_output_folder(Path(requested))
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".retinaface-write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--output {requested}: cannot write there ({exc.strerror or exc})") from None
    return folder


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    """Run ``retinaface detect``; returns the exit status (0, 1 some inputs failed, 2, 130)."""
    prog = prog or "retinaface detect"
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad flag (2), already printed by argparse
        return int(exit_.code or 0)
    try:
        output = _output_folder(args.output)
    except UserError as exc:
        return fail(prog, str(exc))
    try:
        from ..checkpoint import CheckpointError
        from ..detector import Detector
        from ..export.metadata import ExportError

        settings = dict(conf_threshold=args.conf, nms_threshold=args.nms, target_size=args.target_size,
                        max_size=args.max_size)
        detector = Detector.from_checkpoint(args.weights, backbone=args.backbone, device=args.device,
                                            width=args.width, **settings)
    except (CheckpointError, ExportError, ValueError, RuntimeError, TypeError, OSError) as exc:
        _remove_if_empty(output)
        return fail(prog, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    except KeyboardInterrupt:
        _remove_if_empty(output)
        raise
    return _detect_all(args, detector, output, prog)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only succeeds when this run created nothing in it
    except OSError:
        pass


def _detect_all(args: argparse.Namespace, detector, output: Path, prog: str) -> int:
    import cv2

    from ..fileio import atomic_write
    from ..sources import OUTPUT_MARKER, OutputNames, SourceError, detections_record, iter_frames, iter_sources, \
        video_fps
    from ..visualize import draw_detections

    if output != Path(args.output):
        print(f"{args.output} already holds files; writing this run to {output}", file=sys.stderr)
    failures = faces = frames = 0
    interrupted = False
    output_names = OutputNames(output)  # inputs never overwrite each other's outputs
    with atomic_write(output / OUTPUT_MARKER) as log:
        try:
            for source in iter_sources(args.inputs, skip=[output]):
                writer = None
                try:
                    for index, frame in iter_frames(source):
                        if args.max_frames is not None and index >= args.max_frames:
                            break
                        dets = detector.detect(frame)
                        log.write(detections_record(source.location, index, dets) + "\n")
                        frames += 1
                        faces += int((dets[:, 4] >= args.vis_threshold).sum())
                        annotated = draw_detections(frame, dets, args.vis_threshold)
                        if source.kind == "image":
                            cv2.imwrite(str(output_names(source, ".jpg")), annotated)
                            continue
                        if writer is None:
                            fps = video_fps(source.location) if source.kind == "video" else 25.0
                            writer = cv2.VideoWriter(str(output_names(source, ".mp4")),
                                                     cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                     (frame.shape[1], frame.shape[0]))
                        writer.write(annotated)
                except (SourceError, ValueError) as exc:  # unreadable input, or one the model refuses
                    print(f"{prog}: error: {exc}", file=sys.stderr)
                    failures += 1
                finally:
                    if writer is not None:
                        writer.release()
        except KeyboardInterrupt:
            # Ctrl-C is how a webcam run ends: keep what was detected so far (the JSON lines file is
            # written atomically and would otherwise be thrown away with everything in it)
            interrupted = True
            print(f"{prog}: interrupted: stopping; results so far are kept", file=sys.stderr)
    print(f"{frames} frame(s), {faces} face(s) at score >= {args.vis_threshold}; "
          f"results in {output}" + (f"; {failures} input(s) failed" if failures else ""))
    return 130 if interrupted else 1 if failures else 0
