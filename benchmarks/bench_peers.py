#!/usr/bin/env python
"""Latency of the face detectors a CPU user installs from the package index, next to this toolkit.

Install (facenet-pytorch pins torch<2.3, numpy<2 and Pillow<10.3, so it goes in with ``--no-deps``
to keep this project's torch; the extra brings the rest, requests included)::

    pip install -e ".[bench-peers]"
    pip install --no-deps facenet-pytorch

Peers:

* MediaPipe's BlazeFace short range, through the Tasks ``FaceDetector``. Its ``.tflite`` is not in
  the ``mediapipe`` wheel: ``--blazeface-model PATH``, else the copy cached under
  ``~/.cache/retinaface/peers`` (``$XDG_CACHE_HOME``), else downloaded there once from Google's model
  bucket, else ``face_detection_short_range.tflite`` from an installed mediapipe<=0.10.14 (the same
  network, which those wheels still bundle; Tasks accepts it, its metadata is there).
* facenet-pytorch's MTCNN (weights ship in the wheel), on torch with ``--threads``.
* OpenCV's Haar cascade, ``haarcascade_frontalface_default.xml`` from ``cv2.data.haarcascades``
  (or ``--haar-xml PATH``). OpenCV 5 wheels have neither ``cv2.CascadeClassifier`` nor the XML
  files, hence ``opencv-python-headless>=4.6,<5`` in the extra (the toolkit runs on both), and
  mediapipe's ``opencv-contrib-python`` held below 5 too: both wheels write the same ``cv2`` folder.

Our mobilenet0.25 runs on every runtime at the full frame (the ratios' base) and, for the INT8
models, also at ``--small`` px on the long side, the input size BlazeFace itself sees.

A peer that is not installed, or whose file cannot be found or downloaded, is skipped with a
one-line reason; the others still run. All detectors see the same frames (synthetic val images,
640x480) in the same run, timed in rotating blocks (:func:`retinaface.deploy.quantize.median_latency_ms`),
and the ratio to this toolkit's mobilenet0.25 on its fastest runtime is printed. Accuracy is not
compared: the peers are trained on real photographs and our model on the synthetic set, so neither
would be measured fairly on the other's data.
Example: python benchmarks/bench_peers.py --threads 2
"""
from __future__ import annotations

import argparse
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

BLAZEFACE_URL = ("https://storage.googleapis.com/mediapipe-models/face_detector/blaze_face_short_range/"
                 "float16/latest/blaze_face_short_range.tflite")
BLAZEFACE_FILE = "blaze_face_short_range.tflite"
HAAR_FILE = "haarcascade_frontalface_default.xml"
BLAZEFACE = "MediaPipe BlazeFace short range"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="runs/ref_synthetic/best.pth")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=4, help="distinct frames, cycled")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--blazeface-model", default=None,
                        help=f"BlazeFace short-range .tflite (default: cached or downloaded {BLAZEFACE_FILE})")
    parser.add_argument("--no-download", action="store_true", help="never fetch the BlazeFace model")
    parser.add_argument("--small", type=int, default=128,
                        help="also time our int8 models with the long side resized to this (BlazeFace sees "
                             "128 px); 0: off")
    parser.add_argument("--haar-xml", default=None, help=f"{HAAR_FILE} (default: cv2.data.haarcascades)")
    return parser.parse_args(argv)


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "retinaface" / "peers"


def is_tflite(path: Path) -> bool:
    """A TFLite flatbuffer carries 'TFL3' at bytes 4..8: tells a model from an HTML error page."""
    try:
        with open(path, "rb") as handle:
            return handle.read(8)[4:8] == b"TFL3"
    except OSError:
        return False


def bundled_blazeface() -> Optional[Path]:
    """face_detection_short_range.tflite of an installed mediapipe<=0.10.14, which still bundles it."""
    import importlib.util

    spec = importlib.util.find_spec("mediapipe")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        candidate = Path(folder) / "modules" / "face_detection" / "face_detection_short_range.tflite"
        if candidate.is_file():
            return candidate
    return None


def download(url: str, target: Path, timeout: float = 20.0) -> None:
    """``url`` to ``target``, atomically (a broken download never sits in the cache)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while True:
                block = response.read(1 << 16)
                if not block:
                    break
                out.write(block)
        if not is_tflite(Path(tmp)):
            raise ValueError("the download is not a .tflite model")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def blazeface_model(given: Optional[str], allow_download: bool = True, url: str = BLAZEFACE_URL,
                    cache: Optional[Path] = None) -> Tuple[Optional[Path], str]:
    """(model file, where it came from), or (None, why there is none): given > cache > download > bundled."""
    if given:
        return Path(given), "--blazeface-model"
    target = (cache or cache_dir()) / BLAZEFACE_FILE
    if is_tflite(target):
        return target, f"cached {target}"
    failure = "download disabled (--no-download)"
    if allow_download:
        try:
            download(url, target)
            return target, f"downloaded to {target}"
        except (OSError, ValueError) as exc:  # URLError is an OSError: offline, DNS, HTTP errors
            failure = f"download failed ({getattr(exc, 'reason', exc)})"
    bundled = bundled_blazeface()
    if bundled is not None:
        return bundled, f"bundled {bundled.name}"
    return None, f"no {BLAZEFACE_FILE} cached and {failure}: pass --blazeface-model PATH"


def haar_xml(cv2, given: Optional[str]) -> Tuple[Optional[Path], str]:
    """(cascade file, ''), or (None, why Haar cannot run with this OpenCV)."""
    if not hasattr(cv2, "CascadeClassifier"):
        return None, (f"cv2 {cv2.__version__} has no CascadeClassifier (OpenCV 5 moved it out of the main "
                      f"modules): pip install 'opencv-python-headless>=4.6,<5'")
    if given:
        return Path(given), ""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if folder and (Path(folder) / HAAR_FILE).is_file():
        return Path(folder) / HAAR_FILE, ""
    return None, f"cv2 {cv2.__version__} ships no {HAAR_FILE}: pass --haar-xml PATH"


def _cycle(frames):
    state = {"i": 0}

    def next_frame():
        state["i"] = (state["i"] + 1) % len(frames)
        return frames[state["i"]]
    return next_frame


def peers(args, frames) -> Tuple[Dict[str, Callable[[], object]], Dict[str, str], List[str], List[Callable]]:
    """Callables of the peers that can run here, what each is fed, notes (one line each: why a peer
    cannot run, which model file it used) and the closers to call once timing is done."""
    calls: Dict[str, Callable[[], object]] = {}
    inputs: Dict[str, str] = {}
    notes: List[str] = []
    closers: List[Callable] = []
    import cv2
    import numpy as np

    h, w = frames[0].shape[:2]
    try:
        os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's graph logs, not ours to show
        import mediapipe as mp
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        model, source = blazeface_model(args.blazeface_model, allow_download=not args.no_download)
        if model is None:
            notes.append(f"skipped: MediaPipe BlazeFace: {source}")
        else:
            detector = vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_path=str(model))))
            closers.append(detector.close)  # its __del__ fails at interpreter exit otherwise
            images = [mp.Image(image_format=mp.ImageFormat.SRGB,
                               data=np.ascontiguousarray(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))) for f in frames]
            nxt = _cycle(images)
            calls[BLAZEFACE] = lambda: detector.detect(nxt())
            inputs[BLAZEFACE] = f"{w}x{h} -> 128x128"
            notes.append(f"BlazeFace model: {model} ({source}); MediaPipe picks its own XNNPACK threads")
    except ImportError as exc:
        notes.append(f"skipped: MediaPipe BlazeFace: mediapipe not importable ({exc})")
    except (RuntimeError, ValueError) as exc:  # a file Tasks rejects (no metadata, not a flatbuffer)
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        notes.append(f"skipped: MediaPipe BlazeFace: FaceDetector rejected the model ({first_line})")
    try:
        import torch
        from facenet_pytorch import MTCNN

        mtcnn = MTCNN(keep_all=True, device="cpu")
        rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]
        nxt_rgb = _cycle(rgb)

        def run_mtcnn(threads: int = args.threads):
            torch.set_num_threads(threads)  # ours set it per call too; the rotation interleaves them
            with torch.inference_mode():
                return mtcnn.detect(nxt_rgb())
        calls["facenet-pytorch MTCNN"] = run_mtcnn
        inputs["facenet-pytorch MTCNN"] = f"{w}x{h}, pyramid from 20 px faces"
    except ImportError as exc:
        notes.append(f"skipped: facenet-pytorch MTCNN: not importable ({exc}); "
                     f"pip install --no-deps facenet-pytorch")
    xml, reason = haar_xml(cv2, args.haar_xml)
    try:
        cascade = cv2.CascadeClassifier(str(xml)) if xml is not None else None
    except (cv2.error, SystemError):  # not XML at all (cv2 4.x wraps its error in a SystemError)
        cascade = None
        reason = f"{xml} is not a cascade OpenCV {cv2.__version__} can load"
    if cascade is None:
        notes.append(f"skipped: OpenCV Haar cascade: {reason}")
    elif cascade.empty():
        notes.append(f"skipped: OpenCV Haar cascade: {xml} is not a cascade OpenCV {cv2.__version__} can load")
    else:
        grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
        nxt_grey = _cycle(grey)
        calls["OpenCV Haar cascade"] = lambda: cascade.detectMultiScale(nxt_grey(), 1.1, 5)
        inputs["OpenCV Haar cascade"] = f"{w}x{h} grey, pyramid x1.1"
    return calls, inputs, notes, closers


def table(ms: Dict[str, float], ours: List[str], inputs: Dict[str, str]) -> List[str]:
    """Markdown rows, fastest first, each with its ratio to the fastest of ``ours``."""
    best = min(ms[k] for k in ours)
    rows = ["| detector | input | median ms | FPS | vs our fastest |", "|---|---|---|---|---|"]
    for name in sorted(ms, key=ms.get):
        ratio = ms[name] / best
        verdict = ("our fastest" if name in ours and ms[name] == best else
                   f"{ratio:.2f}x slower" if ratio >= 1 else f"{1 / ratio:.2f}x faster")
        rows.append(f"| {name} | {inputs.get(name, '')} | {ms[name]:.1f} | {1000 / ms[name]:.0f} | {verdict} |")
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    for flag, value in (("--blazeface-model", args.blazeface_model), ("--haar-xml", args.haar_xml)):
        if value and not Path(value).is_file():
            raise SystemExit(f"{flag} {value}: file not found")
    weights = Path(args.weights)
    if not weights.is_file():
        raise SystemExit(f"{weights}: checkpoint not found (train it with the README's command)")
    import cv2
    import torch

    from retinaface import Detector
    from retinaface.data.synthetic import generate_synthetic_widerface
    from retinaface.deploy.openvino_backend import openvino_available
    from retinaface.deploy.quantize import calibration_images, median_latency_ms, quantize_onnx
    from retinaface.deploy.runtime import cached_onnx_export, load_runtime

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)  # Haar's pyramid and everyone's colour conversions alike
    generate_synthetic_widerface("data/synthetic")
    paths = sorted(Path("data/synthetic/val/images").rglob("*.jpg"))[:args.frames]
    frames = [cv2.imread(str(p)) for p in paths]
    h, w = frames[0].shape[:2]
    ours: Dict[str, Callable[[], object]] = {}
    runtimes = ["pytorch", "onnxruntime"] + (["openvino"] if openvino_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = cached_onnx_export(weights)
        int8 = Path(tmp) / "int8.onnx"
        images, source = calibration_images("synthetic", 32)
        quantize_onnx(onnx_file, int8, Detector(load_runtime(onnx_file, "onnxruntime")), images,
                      calibration_source=source)
        models = {f"ours mobilenet0.25 {r}": load_runtime(weights, r, threads=args.threads) for r in runtimes}
        models["ours mobilenet0.25 onnxruntime int8"] = load_runtime(int8, "onnxruntime", threads=args.threads)
        if openvino_available():
            models["ours mobilenet0.25 openvino int8"] = load_runtime(int8, "openvino", threads=args.threads)
        small: Dict[str, Callable[[], object]] = {}  # beside BlazeFace's input, not the ratios' base
        inputs: Dict[str, str] = {}
        for name, model in models.items():
            single = name.endswith("pytorch")
            sizes = [None] + ([args.small] if args.small and name.endswith("int8") else [])
            for size in sizes:
                detector = Detector(model, conf_threshold=0.5, max_size=size)
                nxt = _cycle(frames)

                def call(d=detector, n=nxt, t=args.threads if single else 1):
                    torch.set_num_threads(t)  # ORT/OpenVINO run their own threads; torch only decodes
                    return d.detect(n())
                if size is None:
                    ours[name] = call
                    inputs[name] = f"{w}x{h}"
                else:
                    small[f"{name}, {size} px"] = call
                    scale = size / max(w, h)
                    inputs[f"{name}, {size} px"] = f"{w}x{h} -> {round(w * scale)}x{round(h * scale)}"
        theirs, their_inputs, notes, closers = peers(args, frames)
        inputs.update(their_inputs)
        ms = median_latency_ms({**ours, **small, **theirs}, repeats=args.runs)
        for close in closers:
            close()
    print(f"{w}x{h} synthetic frames, {args.threads} threads, full detect path, median of {args.runs}, "
          f"OpenCV {cv2.__version__}")
    print("\n".join(table(ms, list(ours), inputs)))
    for note in notes:
        print(note)
    print("accuracy is not compared: the peers are trained on real photos, our model on the synthetic set")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
