"""A straightforward implementation of the reference training augmentation
(``shared/specs/training_recipe.md``), written the plain way: one crop try at a time in Python,
the photometric distortion in float over the whole crop, targets built face by face.

It is the baseline for ``bench_data.py`` / ``bench_step.py`` and the oracle of the exactness tests
in ``tests/test_augment_pipeline.py``; the library's pipeline is ``retinaface.data.augment`` and
``retinaface.data.fast_decode``. The distortion functions take their parameters explicitly so that
a test can give both implementations the same draws.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import cv2
import numpy as np

MEAN = (104, 117, 123)
SCALES = (0.3, 0.45, 0.6, 0.8, 1.0)
INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)


def crop(image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray, labels: np.ndarray,
         rng: np.random.Generator, tries: int = 250):
    """Step 1, one try after another. Returns (image, boxes, landmarks, labels, failed)."""
    height, width = image.shape[:2]
    for _ in range(tries):
        scale = SCALES[int(rng.integers(0, len(SCALES)))]
        side = int(scale * min(width, height))
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - side + 1))
        roi = np.array([left, top, left + side, top + side], dtype=np.float64)
        inside = 0
        for b in boxes:
            if b[2] > b[0] and b[3] > b[1] and b[0] >= roi[0] and b[1] >= roi[1] and b[2] <= roi[2] \
                    and b[3] <= roi[3]:
                inside += 1
        if inside == 0:
            continue
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        keep = np.logical_and(roi[:2] < centres, centres < roi[2:]).all(axis=1)
        if not keep.any():
            continue
        out = image[top:top + side, left:left + side].copy()
        kb = boxes[keep].astype(np.float64).copy()
        kb[:, :2] = np.maximum(kb[:, :2], roi[:2]) - roi[:2]
        kb[:, 2:] = np.minimum(kb[:, 2:], roi[2:]) - roi[:2]
        kl = landmarks[keep].astype(np.float64).copy()
        klab = labels[keep]
        for i in range(len(kl)):
            if klab[i] > 0:
                pts = kl[i].reshape(5, 2) - roi[:2]
                kl[i] = np.clip(pts, 0, side).reshape(10)
        return out, kb, kl, klab, False
    return image, boxes.astype(np.float64), landmarks.astype(np.float64), labels, True


def convert(image: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> None:
    """In place: ``image = clip(image * alpha + beta, 0, 255)`` through float64 (the reference's)."""
    tmp = image.astype(float) * alpha + beta
    tmp[tmp < 0] = 0
    tmp[tmp > 255] = 255
    image[:] = tmp


def _no_stage(name: str) -> None:
    """The default stage hook: nothing (``benchmarks/bench_data.py`` passes a clock)."""


def distort_with(image: np.ndarray, contrast_first: bool, brightness: Optional[float],
                 contrast: Optional[float], saturation: Optional[float], hue: Optional[int],
                 stage: Callable[[str], None] = _no_stage) -> np.ndarray:
    """Step 2 with its draws given (``None``: that step does not fire). ``stage(name)`` is called
    at the end of each part: ``values`` (the value maps) and ``hsv`` (the colour conversions)."""
    image = image.copy()
    if brightness is not None:
        convert(image, beta=brightness)
    if contrast_first and contrast is not None:
        convert(image, alpha=contrast)
    stage("values")
    # the reference converts to HSV and back whether or not a HSV step fires
    image = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    stage("hsv")
    if saturation is not None:
        convert(image[:, :, 1], alpha=saturation)
    if hue is not None:
        h = image[:, :, 0].astype(int) + hue
        image[:, :, 0] = h % 180
    stage("values")
    image = cv2.cvtColor(image, cv2.COLOR_HSV2BGR)
    stage("hsv")
    if not contrast_first and contrast is not None:
        convert(image, alpha=contrast)
    stage("values")
    return image


def draw_distortion(rng: np.random.Generator) -> Tuple[bool, Optional[float], Optional[float],
                                                          Optional[float], Optional[int]]:
    """The draws of step 2, in the order ``retinaface.data.augment.photometric_distort`` makes them."""
    contrast_first = rng.random() < 0.5
    brightness = rng.uniform(-32, 32) if rng.random() < 0.5 else None
    contrast = None
    if contrast_first and rng.random() < 0.5:
        contrast = rng.uniform(0.5, 1.5)
    do_sat = rng.random() < 0.5
    sat = rng.uniform(0.5, 1.5)
    do_hue = rng.random() < 0.5
    hue = int(rng.integers(-18, 19))
    if not contrast_first and rng.random() < 0.5:
        contrast = rng.uniform(0.5, 1.5)
    return contrast_first, brightness, contrast, sat if do_sat else None, hue if do_hue else None


def transform(image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray, labels: np.ndarray,
              rng: np.random.Generator, image_size: int = 640, mean: Sequence[float] = MEAN,
              stage: Callable[[str], None] = _no_stage) -> Tuple[np.ndarray, np.ndarray]:
    """The whole recipe: (3, S, S) float32 image and (K, 15) targets. ``stage(name)`` is called
    at the end of each step (crop, values, hsv, pad, mirror, resize, mean, targets)."""
    image, boxes, landmarks, labels, failed = crop(image, boxes, landmarks, labels, rng)
    stage("crop")
    image = distort_with(image, *draw_distortion(rng), stage=stage)
    if failed:
        h, w = image.shape[:2]
        side = max(h, w)
        square = np.empty((side, side, 3), dtype=image.dtype)
        square[:, :] = mean
        square[:h, :w] = image
        image = square
    stage("pad")
    if rng.random() < 0.5:
        width = image.shape[1]
        image = image[:, ::-1]
        boxes = boxes.copy()
        boxes[:, 0::2] = width - boxes[:, 2::-2]
        landmarks = landmarks.copy()
        for i in range(len(landmarks)):
            if labels[i] > 0:
                pts = landmarks[i].reshape(5, 2)
                pts[:, 0] = width - pts[:, 0]
                landmarks[i] = pts[[1, 0, 2, 4, 3]].reshape(10)
    stage("mirror")
    height, width = image.shape[:2]
    interpolation = INTERPOLATIONS[int(rng.integers(0, len(INTERPOLATIONS)))]
    image = cv2.resize(image, (image_size, image_size), interpolation=interpolation)
    stage("resize")
    image = image.astype(np.float32)
    image -= np.asarray(mean, dtype=np.float32)
    chw = image.transpose(2, 0, 1).copy()
    stage("mean")
    targets = np.zeros((len(boxes), 15), dtype=np.float32)
    for i in range(len(boxes)):
        targets[i, 0:4] = boxes[i] / (width, height, width, height)
        if labels[i] > 0:
            targets[i, 4:14] = landmarks[i] / np.tile((width, height), 5)
            targets[i, 14] = 1
        else:
            targets[i, 4:14] = -1
            targets[i, 14] = -1
    stage("targets")
    return chw, targets


def load_and_transform(path: str, boxes: np.ndarray, landmarks: np.ndarray, labels: np.ndarray,
                       rng: np.random.Generator, image_size: int = 640) -> Tuple[np.ndarray, np.ndarray]:
    """Decode the whole file, then :func:`transform`."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    return transform(image, boxes, landmarks, labels, rng, image_size)
