"""Training data pipeline cost at WIDER scale: decode + square crop + photometric distortion +
mirror + resize + targets, per image on one core, for the library's pipeline against a
straightforward implementation of the recipe (benchmarks/recipe_reference.py), in the same run.

    python benchmarks/bench_data.py [--images 48] [--repeats 3] [--sizes 640 320]
                                    [--gpu-images-per-s 1500] [--check 2000]

Inputs: synthetic WIDER-like JPEGs (1024 x 768, quality 92, crowd and group scenes: ~12 faces),
drawn by retinaface.data.synthetic into a temporary folder. Every variant sees the same files and
the same per-sample seeds; OpenCV runs on one thread, so the figures are per core.
``--check N`` compares, over N samples with the same generators, the reduced-resolution decode path
with the full decode: targets must be identical, and the images' per-sample mean, spread and
sharpness statistics are printed side by side (their distributions must agree).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Tuple

import cv2
import numpy as np

import recipe_reference
from retinaface.data.augment import TrainTransform
from retinaface.data.synthetic import SCENES, _render_image

Sample = Tuple[str, np.ndarray, np.ndarray, np.ndarray]


def make_inputs(folder: Path, count: int, height: int = 768, width: int = 1024, seed: int = 0) -> List[Sample]:
    """``count`` JPEGs with their (boxes, landmarks, labels); 30 % of faces without landmarks."""
    scenes = [s for s in SCENES if s.name in ("1--Crowd", "4--Group")]
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        img, faces = _render_image(seed, 0, i, scenes[i % len(scenes)], height, width)
        path = folder / f"{i:04d}.jpg"
        ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        path.write_bytes(data.tobytes())
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (f.box for f in faces)], np.float32).reshape(-1, 4)
        lms = np.array([f.landmarks.reshape(10) for f in faces], np.float32).reshape(-1, 10)
        labels = np.where(rng.random(len(faces)) < 0.7, 1.0, -1.0).astype(np.float32)
        lms[labels < 0] = -1.0
        samples.append((str(path), boxes, lms, labels))
    return samples


def time_pipeline(fn: Callable[[Sample, np.random.Generator], object], samples: List[Sample],
                  repeats: int) -> float:
    """Median over repeats of the mean seconds per image (each sample seeded by its index)."""
    runs = []
    for r in range(repeats):
        start = time.perf_counter()
        for i, sample in enumerate(samples):
            fn(sample, np.random.default_rng([r, i]))
        runs.append((time.perf_counter() - start) / len(samples))
    return statistics.median(runs)


def check_reduced(samples: List[Sample], size: int, count: int) -> None:
    """Reduced decode vs full decode, same generators: targets equal; image statistics compared."""
    fast, full = TrainTransform(size, reduced_decode=True), TrainTransform(size)
    stats = {"fast": [], "full": []}
    reduced = mismatched = 0
    diffs = []
    for n in range(count):
        path, boxes, lms, labels = samples[n % len(samples)]
        a_img, a_t = fast.load(path, boxes, lms, labels, np.random.default_rng([7, n]))
        b_img, b_t = full.load(path, boxes, lms, labels, np.random.default_rng([7, n]))
        mismatched += not np.array_equal(a_t, b_t)
        if np.array_equal(a_img, b_img):
            continue
        reduced += 1
        diffs.append(float(np.abs(a_img - b_img).mean()))
        for key, img in (("fast", a_img), ("full", b_img)):
            lap = cv2.Laplacian(np.ascontiguousarray(img[1]), cv2.CV_32F)
            stats[key].append((*img.reshape(3, -1).mean(1), img.std(), float(np.abs(lap).mean())))
    print(f"\n--check {count} samples at {size}: targets identical in {count - mismatched}/{count}; "
          f"{reduced} samples took the reduced decode")
    if reduced:
        f, g = np.array(stats["fast"]), np.array(stats["full"])
        print(f"mean |pixel difference| reduced vs full decode: {np.mean(diffs):.2f} (pixel units, 0..255)")
        print("| statistic over reduced samples | reduced decode mean (sd) | full decode mean (sd) |")
        print("|---|---|---|")
        for j, name in enumerate(["B mean", "G mean", "R mean", "std", "mean |Laplacian| (sharpness)"]):
            print(f"| {name} | {f[:, j].mean():.2f} ({f[:, j].std():.2f}) | {g[:, j].mean():.2f} ({g[:, j].std():.2f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[640, 320])
    parser.add_argument("--gpu-images-per-s", type=float, default=1500.0,
                        help="training images/s one GPU can consume (mobilenet0.25 at 640 on a modern GPU)")
    parser.add_argument("--check", type=int, default=0, help="compare reduced and full decode over N samples")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # per-core figures, as in a DataLoader worker

    with tempfile.TemporaryDirectory() as tmp:
        samples = make_inputs(Path(tmp), args.images)
        faces = np.mean([len(s[1]) for s in samples])
        decode = time_pipeline(lambda s, rng: cv2.imread(s[0]), samples, args.repeats)
        print(f"{len(samples)} JPEGs 1024x768, {faces:.1f} faces each; one OpenCV thread; "
              f"full decode alone {decode * 1e3:.2f} ms/image")
        print("| size | straightforward (ms/img) | library (ms/img) | library, reduced_decode=True (ms/img) | "
              f"library / straightforward (reduced) | cores per GPU at {args.gpu_images_per_s:.0f} img/s: "
              "straightforward / library (reduced) |")
        print("|---|---|---|---|---|---|")
        for size in args.sizes:
            fast, full = TrainTransform(size, reduced_decode=True), TrainTransform(size)
            t_ref = time_pipeline(lambda s, rng: recipe_reference.load_and_transform(*s, rng, image_size=size),
                                  samples, args.repeats)
            t_full = time_pipeline(lambda s, rng: full.load(*s, rng), samples, args.repeats)
            t_fast = time_pipeline(lambda s, rng: fast.load(*s, rng), samples, args.repeats)
            g = args.gpu_images_per_s
            print(f"| {size} | {t_ref * 1e3:.2f} | {t_full * 1e3:.2f} | {t_fast * 1e3:.2f} | "
                  f"{t_full / t_ref:.2f} ({t_fast / t_ref:.2f}) | {g * t_ref:.1f} / {g * t_full:.1f} "
                  f"({g * t_fast:.1f}) |", flush=True)
        if args.check:
            for size in args.sizes:
                check_reduced(samples, size, args.check)


if __name__ == "__main__":
    main()
