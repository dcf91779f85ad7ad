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

from .common import ArgumentParser, UserError, fail, number_in_range, positive_int, probability

# the runtimes --runtime accepts (retinaface.runtime.RUNTIMES; spelled here so --help stays light)
RUNTIMES = ("auto", "pytorch", "onnxruntime", "openvino")

EPILOG = """\
output folder policy: a run never writes into a folder that already holds files. If --output
exists and is not empty, the results go to <output>2 (or the next free number) and the last line
printed names the folder used. An --output that is an existing file, or a place that cannot be
written, is refused before any work is done.

examples:
  retinaface detect photo.jpg                # the zoo's default detector (retinaface_mnet025)
  retinaface detect --weights weights/mobilenet0.25_Final.pth photos/ clip.mp4 --output out/
  retinaface detect --weights model.onnx 0 --max-frames 100      # webcam 0 on ONNX Runtime
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
    parser.add_argument("--crops", default=None, metavar="DIR",
                        help="also write one aligned 112x112 crop per face at score >= --vis-threshold "
                             "(ArcFace five-point template) to DIR, named <image>_<k>.jpg; images only")
    parser.add_argument("--crop-size", type=number_in_range(int, 16, 1024), default=112,
                        help="side of the aligned crops (default: %(default)s)")
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
    speed.add_argument("--overlap", type=number_in_range(int, 0), default=64,
                       help="pixels shared by neighbouring tiles, >= the largest face to keep whole (default: %(default)s)")
    return parser


def _output_folder(requested: str, flag: str = "--output") -> Path:
    """The folder this run writes to (created), following the policy of the module docstring."""
    from ..sources import fresh_output_folder

    if Path(requested).exists() and not Path(requested).is_dir():
        raise UserError(f"{flag} {requested}: is an existing file; name a folder")
    try:
        folder = fresh_output_folder(Path(requested))
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".retinaface-write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
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
    try:
        output = _output_folder(args.output)
        crops = _output_folder(args.crops, "--crops") if args.crops is not None else None
    except UserError as exc:
        return fail(prog, str(exc))
    args.crops_folder = crops
    try:
        from ..checkpoint import CheckpointError
        from ..detector import Detector
        from ..export.metadata import ExportError
        from ..runtime import load_runtime_model, resolve_runtime

        if args.weights is None:
            from ..zoo import announce_default_detector

            args.weights = announce_default_detector()
        settings = dict(conf_threshold=args.conf, nms_threshold=args.nms, target_size=args.target_size,
                        max_size=args.max_size)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        if resolve_runtime(args.weights, args.runtime) == "pytorch":
            detector = Detector.from_checkpoint(args.weights, backbone=args.backbone, device=args.device,
                                                width=args.width, **settings)
        else:
            model = load_runtime_model(args.weights, args.runtime, backbone=args.backbone, width=args.width,
                                       threads=args.threads)
            detector = Detector(model, **settings)
            import torch

            # the runtime runs the network on its own threads; torch only post-processes, and its
            # idle workers would compete with the runtime's (detect overhead: docs/edge.md)
            torch.set_num_threads(1)
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
    crops_folder = getattr(args, "crops_folder", None)
    if crops_folder is not None and crops_folder != Path(args.crops):
        print(f"{args.crops} already holds files; writing the crops to {crops_folder}", file=sys.stderr)
    crop_names = OutputNames(crops_folder) if crops_folder is not None else None
    failures = faces = frames = 0
    interrupted = False
    output_names = OutputNames(output)  # inputs never overwrite each other's outputs
    detect_one = _single_detector(args, detector)
    with atomic_write(output / OUTPUT_MARKER) as log:
        try:
            for source in iter_sources(args.inputs, skip=[output]):
                if source.kind != "image":
                    counts = [0, 0]
                    try:
                        _detect_video(args, detector, source, output_names(source, ".mp4"), log, counts)
                    except SourceError as exc:
                        print(f"{prog}: error: {exc}", file=sys.stderr)
                        failures += 1
                    finally:
                        frames, faces = frames + counts[0], faces + counts[1]
                    continue
                writer = None
                try:
                    for index, frame in iter_frames(source):
                        if args.max_frames is not None and index >= args.max_frames:
                            break
                        dets = detect_one(frame)
                        log.write(detections_record(source.location, index, dets) + "\n")
                        frames += 1
                        faces += int((dets[:, 4] >= args.vis_threshold).sum())
                        annotated = draw_detections(frame, dets, args.vis_threshold)
                        if source.kind == "image":
                            cv2.imwrite(str(output_names(source, ".jpg")), annotated)
                            if crop_names is not None:
                                _write_crops(frame, dets[dets[:, 4] >= args.vis_threshold], source,
                                             crop_names, args.crop_size)
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


def _write_crops(image, dets, source, names, size: int) -> None:
    """One aligned crop per row of ``dets``: ``<stem>_<k>.jpg`` (k from 0, in score order)."""
    import cv2

    from ..align import align_faces

    if len(dets) == 0:
        return
    for k, crop in enumerate(align_faces(image, dets, size)):
        cv2.imwrite(str(names(source, f"_{k}.jpg")), crop)


def _single_detector(args: argparse.Namespace, detector):
    """The per-image detect function: tiled (``--tile``) or the detector's own."""
    if args.tile is None:
        return detector.detect
    from ..tiling import detect_tiled

    return lambda image: detect_tiled(detector, image, size=args.tile, overlap=args.overlap)


def _detect_video(args: argparse.Namespace, detector, source, target: Path, log, counts: list) -> None:
    """One video or webcam through the threaded pipeline (retinaface.video): decode, detect, annotate
    and encode overlap; every detected frame is logged as it comes and counted in ``counts``
    (frames, faces). Re-raises Ctrl-C after the frames detected so far are logged and the video is
    closed."""
    from ..sources import SourceError, detections_record
    from ..video import VideoError, process_video

    if source.kind == "video" and not Path(source.location).is_file():
        raise SourceError(f"{source.location}: no such file")
    location = int(source.location) if source.kind == "webcam" else source.location

    def on_frame(index: int, dets) -> None:
        log.write(detections_record(source.location, index, dets) + "\n")
        counts[0] += 1
        counts[1] += int((dets[:, 4] >= args.vis_threshold).sum())

    single = _single_detector(args, detector)
    if args.batch == 1 or args.tile is not None:
        detect = lambda frames: [single(frame) for frame in frames]  # noqa: E731
    else:
        detect = lambda frames: detector.detect_batch(frames, batch_size=len(frames))  # noqa: E731
    try:
        result = process_video(detector, location, target, batch_size=args.batch, draw_threshold=args.vis_threshold,
                               progress=sys.stderr.isatty(), max_frames=args.max_frames, on_frame=on_frame,
                               detect=detect)
    except VideoError as exc:
        raise SourceError(str(exc).replace("cannot open this video", f"cannot open {source.kind}")) from None
    if result.interrupted:
        raise KeyboardInterrupt
    if result.frames == 0:
        raise SourceError(f"{source.location}: no frames could be read")
    expected = result.expected_frames if source.kind == "video" and args.max_frames is None else 0
    # the container's frame count is an estimate for some formats: a shortfall of a frame or two
    # (or 1 %) is not taken for damage
    if expected and result.frames < expected - max(2, expected // 100):
        raise SourceError(f"{source.location}: stopped after {result.frames} of {expected} frames "
                          f"(truncated or damaged video)")
