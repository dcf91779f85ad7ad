#!/usr/bin/env python
"""End-to-end 1280x720 video FPS: the threaded pipeline next to the frame-by-frame loop.

Writes a ``--frames`` long 1280x720 clip of synthetic faces (val images tiled and moved), then runs
decode -> detect -> draw -> encode on it with mobilenet0.25 (``--weights``, the README model when
present) on each ``--runtimes`` entry, both as :func:`retinaface.inference.video.process_video_sequential`
(one frame after the other) and :func:`retinaface.inference.video.process_video` (decoder and encoder
threads, ``--batch`` frames per forward), alternating the two per runtime and repeating
``--rounds`` times; prints the median FPS of each and the ratio, measured in the same run.
The 20 FPS target of docs/edge.md is for the best line.
Example: python benchmarks/bench_video.py --frames 120 --runtimes onnxruntime openvino
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="runs/ref_synthetic/best.pth")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--runtimes", nargs="+", default=["pytorch", "onnxruntime", "openvino"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--int8", action="store_true",
                        help="also run an INT8 file (quantised here, 32 synthetic calibration images) on "
                             "ONNX Runtime and OpenVINO")
    parser.add_argument("--bf16", action="store_true", help="also run OpenVINO with bf16 float layers")
    return parser.parse_args(argv)


def make_clip(path: Path, frames: int) -> None:
    import cv2
    import numpy as np

    from retinaface.data.synthetic import generate_synthetic_widerface

    generate_synthetic_widerface("data/synthetic")
    tiles = [cv2.imread(str(p)) for p in sorted(Path("data/synthetic/val/images").rglob("*.jpg"))[:4]]
    canvas = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:4], 1)], 0)  # 960x1280
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (1280, 720))
    for i in range(frames):
        offset = (i * 4) % 240
        writer.write(np.ascontiguousarray(canvas[offset:offset + 720]))
    writer.release()


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from retinaface import Detector
    from retinaface.deploy.openvino_backend import openvino_available
    from retinaface.deploy.runtime import load_runtime
    from retinaface.inference.video import process_video, process_video_sequential

    weights = Path(args.weights)
    if not weights.is_file():
        from retinaface.build import create_model
        from retinaface.checkpoint import save_model

        print(f"{weights} not found: timing an untrained mobilenet0.25 (its detections are not faces)")
        weights = Path(tempfile.mkdtemp()) / "untrained.pth"
        torch.manual_seed(0)
        save_model(create_model("mobilenet0.25").eval(), weights)
    runtimes = [r for r in args.runtimes if r != "openvino" or openvino_available()]
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, args.frames)
        print(f"1280x720, {args.frames} frames, {args.threads} runtime threads, batch {args.batch}; "
              f"decode + detect + draw + encode (mp4v)")
        print("| runtime | frame-by-frame FPS | threaded pipeline FPS | ratio | faces/frame |")
        print("|---|---|---|---|---|")
        jobs = [(runtime, lambda r=runtime: load_runtime(weights, r, threads=args.threads))
                for runtime in runtimes]
        if args.bf16 and openvino_available():
            from retinaface.deploy.openvino_backend import OpenVinoModel
            from retinaface.deploy.runtime import cached_onnx_export

            jobs.append(("openvino bf16", lambda: OpenVinoModel(cached_onnx_export(weights), threads=args.threads,
                                                                precision="bf16")))
        if args.int8:
            from retinaface.deploy.quantize import calibration_images, quantize_onnx
            from retinaface.deploy.runtime import cached_onnx_export

            int8 = Path(tmp) / "int8.onnx"
            float_file = cached_onnx_export(weights)
            images, source = calibration_images("synthetic", 32)
            quantize_onnx(float_file, int8, Detector(load_runtime(float_file)), images,
                          calibration_source=source)
            for runtime in [r for r in runtimes if r in ("onnxruntime", "openvino")]:
                jobs.append((f"{runtime} int8", lambda r=runtime: load_runtime(int8, r, threads=args.threads)))
        for runtime, load in jobs:
            model = load()
            # external runtimes: torch only post-processes (see retinaface.cli.detect)
            torch.set_num_threads(args.threads if runtime == "pytorch" else 1)
            runtime = runtime.replace(" ", "-")
            detector = Detector(model, conf_threshold=0.5)
            plain, piped, faces = [], [], 0.0
            for r in range(args.rounds):
                out_a, out_b = Path(tmp) / f"{runtime}{r}a.mp4", Path(tmp) / f"{runtime}{r}b.mp4"  # fresh names
                seq = process_video_sequential(detector, clip, out_a)
                par = process_video(detector, clip, out_b, batch_size=args.batch, progress=False)
                plain.append(seq.fps)
                piped.append(par.fps)
                faces = sum(len(d) for d in par.detections) / max(1, par.frames)
            a, b = statistics.median(plain), statistics.median(piped)
            print(f"| {runtime} | {a:.1f} | {b:.1f} | {b / a:.2f}x | {faces:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
