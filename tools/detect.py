#!/usr/bin/env python
"""Detect faces in images, folders, videos and webcams; write annotated copies and JSON lines.

Example: python tools/detect.py --weights weights/mobilenet0.25_Final.pth photos/ clip.mp4 --output out/
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

from retinaface import Detector  # noqa: E402
from retinaface.checkpoint import CheckpointError  # noqa: E402
from retinaface.fileio import atomic_write  # noqa: E402
from retinaface.sources import (OutputNames, SourceError, detections_record, iter_frames,  # noqa: E402
                                iter_sources, video_fps)
from retinaface.visualize import draw_detections  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files, folders, video files or webcam indices")
    parser.add_argument("--weights", required=True, help="checkpoint (.pth of this toolkit or Pytorch_Retinaface, or .onnx)")
    parser.add_argument("--backbone", default=None, help="backbone of a Pytorch_Retinaface checkpoint, if it cannot be inferred")
    parser.add_argument("--output", default="detections", help="output folder (default: %(default)s)")
    parser.add_argument("--conf", type=float, default=0.02, help="score threshold (default: %(default)s)")
    parser.add_argument("--nms", type=float, default=0.4, help="NMS IoU threshold (default: %(default)s)")
    parser.add_argument("--max-size", type=int, default=None, help="downscale so the long side is at most this")
    parser.add_argument("--vis-threshold", type=float, default=0.6, help="score needed to draw a face (default: %(default)s)")
    parser.add_argument("--width", type=float, default=None, help="run an adaptive-width checkpoint at this width")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-frames", type=int, default=None, help="stop a video/webcam after this many frames")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = dict(conf_threshold=args.conf, nms_threshold=args.nms, max_size=args.max_size)
    try:
        detector = Detector.from_checkpoint(args.weights, backbone=args.backbone, device=args.device,
                                            width=args.width, **settings)
    except (CheckpointError, ValueError, RuntimeError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    failures = faces = frames = 0
    interrupted = False
    output_names = OutputNames(output)  # inputs never overwrite each other's outputs
    with atomic_write(output / "detections.jsonl") as log:
        try:
            for source in iter_sources(args.inputs):
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
                except SourceError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    failures += 1
                finally:
                    if writer is not None:
                        writer.release()
        except KeyboardInterrupt:
            # Ctrl-C is how a webcam run ends: keep what was detected so far (the JSON lines file is
            # written atomically and would otherwise be thrown away with everything in it)
            interrupted = True
            print("interrupted: stopping; results so far are kept", file=sys.stderr)
    print(f"{frames} frame(s), {faces} face(s) at score >= {args.vis_threshold}; "
          f"results in {output}" + (f"; {failures} input(s) failed" if failures else ""))
    return 130 if interrupted else 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
