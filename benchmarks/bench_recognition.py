"""Cost of the recognition pipeline at VGA: detect, align and embed, per face and per image.

For 1, 5 and 20 faces in a 640 x 480 image it times the detector's forward + post-processing
(``Detector.detect``), the alignment of every face (``align.align_faces``: one batched similarity
fit, one warp per face) and the embedding of all faces in one batch, then prints milliseconds per
face and the pipeline's images/s. The faces' landmarks are placed directly (a template face at
several positions and scales) so that every run aligns and embeds exactly N faces whatever the
detector finds; the detector runs on the same image, so its cost is real.

Two checks of issue 14, measured, not assumed:
* alignment costs under 5 % of the pipeline;
* embedding 20 faces in one batch beats 20 single-face calls by at least 2x.

Detector: ``runs/ref_synthetic/best.pth`` when present, else an untrained mobilenet0.25 (its cost is
the same). Embedder: untrained (speed does not depend on the weights), ``--network`` / ``--width``.
Timings are medians over ``--repeats`` rounds, the compared variants run in alternation within each
round (a shared machine's load then hits both alike).

    python benchmarks/bench_recognition.py [--threads 2] [--repeats 7] [--network mobiface --width 1.0]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from retinaface.inference.align import align_faces
from retinaface.conventions import ARCFACE_TEMPLATE_112
from retinaface.recognition.analyzer import FaceAnalyzer
from retinaface.recognition.models import create_embedder

REFERENCE_DETECTOR = Path("runs/ref_synthetic/best.pth")


def detector():
    from retinaface.inference.detector import Detector

    if REFERENCE_DETECTOR.is_file():
        return Detector.from_checkpoint(REFERENCE_DETECTOR, conf_threshold=0.5), str(REFERENCE_DETECTOR)
    from retinaface import create_model

    return Detector(create_model("mobilenet0.25").eval(), conf_threshold=0.5), "untrained mobilenet0.25"


def face_rows(n: int, height: int = 480, width: int = 640) -> np.ndarray:
    """``n`` detections (15 columns) of template faces on a grid over the image."""
    rng = np.random.default_rng(n)
    cols = int(np.ceil(np.sqrt(n * width / height)))
    rows = int(np.ceil(n / cols))
    cell = min(width / cols, height / rows)
    out = []
    for i in range(n):
        cx, cy = (i % cols + 0.5) * width / cols, (i // cols + 0.5) * height / rows
        scale = 0.8 * cell / 112 * rng.uniform(0.7, 1.0)
        angle = np.radians(rng.uniform(-20, 20))
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = (np.asarray(ARCFACE_TEMPLATE_112) - 56.0) @ rot.T * scale + [cx, cy]
        half = 56 * scale
        out.append(np.concatenate([[cx - half, cy - half, cx + half, cy + half, 0.99], pts.reshape(-1)]))
    return np.asarray(out, dtype=np.float32)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--network", default="mobiface")
    parser.add_argument("--width", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    det, det_name = detector()
    torch.manual_seed(0)
    embedder = create_embedder(args.network, width=args.width).eval()
    analyzer = FaceAnalyzer(det, embedder)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    print(f"detector: {det_name}; embedder: {args.network} x{args.width:g} (untrained); 640x480; "
          f"{args.threads} threads; median of {args.repeats}")

    # warm-up (first calls allocate and pick kernels)
    det.detect(image)
    analyzer.embed(align_faces(image, face_rows(20)))

    print("\n| faces | detect (ms) | align (ms/face) | embed (ms/face) | align share | images/s |")
    print("|---|---|---|---|---|---|")
    shares = {}
    for n in (1, 5, 20):
        rows = face_rows(n)
        crops = align_faces(image, rows)
        analyzer.embed(crops)  # warm-up at this batch size (oneDNN picks kernels per shape)
        t_det, t_align, t_embed = [], [], []
        for _ in range(args.repeats):
            t_det.append(timed(lambda: det.detect(image)))
            t_align.append(timed(lambda: align_faces(image, rows)))
            t_embed.append(timed(lambda: analyzer.embed(crops)))
        d, a, e = (statistics.median(t) for t in (t_det, t_align, t_embed))
        total = d + a + e
        shares[n] = a / total
        print(f"| {n} | {d * 1e3:.1f} | {a / n * 1e3:.3f} | {e / n * 1e3:.2f} | {100 * a / total:.2f} % | "
              f"{1.0 / total:.2f} |")

    crops = align_faces(image, face_rows(20))
    analyzer.embed(crops[:1])
    single, batched = [], []
    for _ in range(args.repeats):
        single.append(timed(lambda: [analyzer.embed(crops[i:i + 1]) for i in range(20)]))
        batched.append(timed(lambda: analyzer.embed(crops)))
    s, b = statistics.median(single), statistics.median(batched)
    print(f"\n20 faces: 20 single embed calls {s * 1e3:.1f} ms, one batch {b * 1e3:.1f} ms: {s / b:.2f}x")
    worst = max(shares.values())
    print(f"alignment share of the pipeline at most {100 * worst:.2f} % "
          f"({'under' if worst < 0.05 else 'NOT under'} the 5 % goal)")
    print(f"batched / single speed-up {s / b:.2f}x ({'meets' if s / b >= 2 else 'does NOT meet'} the 2x goal)")


if __name__ == "__main__":
    main()
