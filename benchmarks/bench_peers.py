#!/usr/bin/env python
"""Latency of the face detectors a CPU user installs from the package index, next to this toolkit.

Peers (installed with ``pip install --no-deps facenet-pytorch mediapipe absl-py requests``: their
own pins would replace this project's torch and OpenCV): MediaPipe's BlazeFace short range (``mediapipe``; its
``.tflite`` model is a separate download, pass ``--blazeface-model PATH`` or it is skipped),
facenet-pytorch's MTCNN (weights ship in the wheel; install it with ``--no-deps`` to keep this
project's torch), OpenCV's Haar cascade (``cv2.CascadeClassifier`` with
``haarcascade_frontalface_default.xml``; OpenCV 5 wheels no longer ship either, so it is skipped
unless ``--haar-xml PATH`` is given and the class exists). A peer that is missing, or needs a file
that cannot be downloaded here, is skipped with the reason.

All detectors see the same frames (synthetic val images, 640x480) in the same run, timed in
rotating blocks (:func:`retinaface.quantize.median_latency_ms`), and the ratio to this toolkit's
mobilenet0.25 on its fastest runtime is printed. Accuracy is not compared: the peers are trained
on real photographs and our model on the synthetic set, so neither would be measured fairly on
the other's data.
Example: python benchmarks/bench_peers.py --threads 2
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="runs/ref_synthetic/best.pth")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=4, help="distinct frames, cycled")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--blazeface-model", default=None, help="blaze_face_short_range.tflite, if you have it")
    parser.add_argument("--haar-xml", default=None, help="haarcascade_frontalface_default.xml, if you have it")
    return parser.parse_args(argv)


def _cycle(frames):
    state = {"i": 0}

    def next_frame():
        state["i"] = (state["i"] + 1) % len(frames)
        return frames[state["i"]]
    return next_frame


def peers(args, frames) -> Tuple[Dict[str, Callable[[], object]], List[str]]:
    """Callables of the peers that can run here, and the reasons for those that cannot."""
    calls: Dict[str, Callable[[], object]] = {}
    skipped: List[str] = []
    import cv2

    try:
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions
        import mediapipe as mp

        if not args.blazeface_model or not Path(args.blazeface_model).is_file():
            skipped.append("MediaPipe BlazeFace: the wheel has no model; blaze_face_short_range.tflite is a "
                           "separate download (not possible offline): pass --blazeface-model")
        else:
            detector = vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_path=args.blazeface_model)))
            images = [mp.Image(image_format=mp.ImageFormat.SRGB, data=cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
                      for f in frames]
            nxt = _cycle(images)
            calls["MediaPipe BlazeFace short range"] = lambda: detector.detect(nxt())
    except ImportError as exc:
        skipped.append(f"MediaPipe BlazeFace: mediapipe not importable ({exc})")
    try:
        import torch
        from facenet_pytorch import MTCNN

        mtcnn = MTCNN(keep_all=True, device="cpu")
        rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]
        nxt_rgb = _cycle(rgb)

        def run_mtcnn():
            with torch.inference_mode():
                return mtcnn.detect(nxt_rgb())
        calls["facenet-pytorch MTCNN"] = run_mtcnn
    except ImportError as exc:
        skipped.append(f"facenet-pytorch MTCNN: not importable ({exc})")
    if not hasattr(cv2, "CascadeClassifier"):
        skipped.append(f"OpenCV Haar cascade: cv2 {cv2.__version__} has no CascadeClassifier (moved out of "
                       f"OpenCV 5's main modules)")
    elif not args.haar_xml or not Path(args.haar_xml).is_file():
        skipped.append("OpenCV Haar cascade: haarcascade_frontalface_default.xml not shipped; pass --haar-xml")
    else:
        cascade = cv2.CascadeClassifier(args.haar_xml)
        grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
        nxt_grey = _cycle(grey)
        calls["OpenCV Haar cascade"] = lambda: cascade.detectMultiScale(nxt_grey(), 1.1, 5)
    return calls, skipped


def main(argv=None) -> int:
    args = parse_args(argv)
    import cv2
    import torch

    from retinaface import Detector
    from retinaface.data.synthetic import generate_synthetic_widerface
    from retinaface.openvino_backend import openvino_available
    from retinaface.quantize import calibration_images, median_latency_ms, quantize_onnx
    from retinaface.runtime import cached_onnx_export, load_runtime_model

    torch.set_num_threads(args.threads)
    generate_synthetic_widerface("data/synthetic")
    paths = sorted(Path("data/synthetic/val/images").rglob("*.jpg"))[:args.frames]
    frames = [cv2.imread(str(p)) for p in paths]
    weights = Path(args.weights)
    if not weights.is_file():
        raise SystemExit(f"{weights}: checkpoint not found (train it with the README's command)")
    ours: Dict[str, Callable[[], object]] = {}
    runtimes = ["pytorch", "onnxruntime"] + (["openvino"] if openvino_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = cached_onnx_export(weights)
        int8 = Path(tmp) / "int8.onnx"
        images, source = calibration_images("synthetic", 32)
        quantize_onnx(onnx_file, int8, Detector(load_runtime_model(onnx_file, "onnxruntime")), images,
                      calibration_source=source)
        models = {f"ours mobilenet0.25 {r}": load_runtime_model(weights, r, threads=args.threads) for r in runtimes}
        models["ours mobilenet0.25 onnxruntime int8"] = load_runtime_model(int8, "onnxruntime", threads=args.threads)
        if openvino_available():
            models["ours mobilenet0.25 openvino int8"] = load_runtime_model(int8, "openvino", threads=args.threads)
        for name, model in models.items():
            detector = Detector(model, conf_threshold=0.5)
            nxt = _cycle(frames)
            single = name.endswith("pytorch")

            def call(d=detector, n=nxt, t=args.threads if single else 1):
                torch.set_num_threads(t)
                return d.detect(n())
            ours[name] = call
        theirs, skipped = peers(args, frames)
        ms = median_latency_ms({**ours, **theirs}, repeats=args.runs)
    h, w = frames[0].shape[:2]
    best = min(ms[k] for k in ours)
    print(f"{w}x{h} synthetic frames, {args.threads} threads, full detect path, median of {args.runs}")
    print("| detector | median ms | FPS | vs our fastest |")
    print("|---|---|---|---|")
    for name in sorted(ms, key=ms.get):
        print(f"| {name} | {ms[name]:.1f} | {1000 / ms[name]:.0f} | {ms[name] / best:.2f}x slower |"
              if ms[name] > best else f"| {name} | {ms[name]:.1f} | {1000 / ms[name]:.0f} | fastest |")
    for reason in skipped:
        print(f"skipped: {reason}")
    print("accuracy is not compared: the peers are trained on real photos, our model on the synthetic set")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
