"""Training-time augmentation: the reference RetinaFace recipe, step for step, vectorised over faces.

Owns the image/target transforms and the ``(K, 15)`` target layout handed to matching and loss:
columns 0:4 box ``x1 y1 x2 y2``, 4:14 the five landmarks as ``x, y`` pairs (left eye, right eye,
nose, left mouth corner, right mouth corner), 14 the label (1 face with landmarks, -1 without), all
coordinates divided by the width/height of the image before resizing, so in [0, 1]. Faces without
landmarks keep exactly -1 in columns 4:14 through every step.

The order (``shared/specs/training_recipe.md``): random square crop -> photometric distortion ->
pad to square (only when the crop failed) -> horizontal mirror -> resize with a random
interpolation, subtract the BGR mean, HWC -> CHW float32.

All randomness comes from a ``numpy.random.Generator`` passed in, so a fixed generator gives a
fixed result; the data set derives one per (seed, epoch, index).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

TARGET_COLUMNS = 15
LABEL_COLUMN = 14

CROP_SCALES = (0.3, 0.45, 0.6, 0.8, 1.0)
CROP_TRIES = 250
INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST,
                  cv2.INTER_LANCZOS4)
DEFAULT_RGB_MEAN = (104, 117, 123)  # BGR order, as the images are read by OpenCV

# Mirroring swaps left/right landmarks: left eye <-> right eye, left mouth <-> right mouth.
_MIRROR_ORDER = np.array([1, 0, 2, 4, 3])
_MIRROR_COLUMNS = np.stack([2 * _MIRROR_ORDER, 2 * _MIRROR_ORDER + 1], axis=1).ravel()


@dataclass
class CropResult:
    image: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    keep: np.ndarray            # indices of the input faces that were kept
    roi: Optional[np.ndarray]   # x1 y1 x2 y2 of the crop in the input image; None if every try failed


def random_square_crop(image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray,
                       has_landmarks: np.ndarray, rng: np.random.Generator,
                       tries: int = CROP_TRIES, scales: Sequence[float] = CROP_SCALES) -> CropResult:
    """Step 1: the reference's random square crop.

    All tries are drawn at once and the first that succeeds is used, which has the same
    distribution as trying one after another. A try succeeds when at least one face box lies
    entirely inside it and at least one face centre lies strictly inside it; the faces with their
    centre strictly inside are kept, their boxes clipped, their landmarks shifted and clipped
    (only for faces that have landmarks). On failure the input comes back unchanged, ``roi=None``.
    """
    height, width = image.shape[:2]
    k = len(boxes)
    if k == 0:
        return CropResult(image, boxes, landmarks, np.arange(0), None)
    short = min(width, height)
    side = (np.asarray(scales, dtype=np.float64)[rng.integers(0, len(scales), size=tries)] * short).astype(np.int64)
    # Top-left uniform over every valid position (0 .. width - side inclusive).
    left = np.floor(rng.random(tries) * (width - side + 1)).astype(np.int64)
    top = np.floor(rng.random(tries) * (height - side + 1)).astype(np.int64)
    roi = np.stack([left, top, left + side, top + side], axis=1).astype(np.float64)  # (T, 4)

    b = boxes.astype(np.float64)
    inside = ((b[None, :, 0] >= roi[:, None, 0]) & (b[None, :, 1] >= roi[:, None, 1])
              & (b[None, :, 2] <= roi[:, None, 2]) & (b[None, :, 3] <= roi[:, None, 3]))  # (T, K)
    # Degenerate (zero-area) boxes cannot satisfy "intersection / area >= 1" in the reference.
    inside &= ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))[None, :]
    cx = (b[:, 0] + b[:, 2]) / 2
    cy = (b[:, 1] + b[:, 3]) / 2
    centre_in = ((roi[:, None, 0] < cx[None]) & (cx[None] < roi[:, None, 2])
                 & (roi[:, None, 1] < cy[None]) & (cy[None] < roi[:, None, 3]))  # (T, K)
    ok = inside.any(axis=1) & centre_in.any(axis=1)
    if not ok.any():
        return CropResult(image, boxes, landmarks, np.arange(k), None)
    t = int(np.argmax(ok))
    x1, y1, x2, y2 = roi[t]
    keep = np.flatnonzero(centre_in[t])
    crop = image[int(y1):int(y2), int(x1):int(x2)]

    kb = b[keep]
    kb[:, 0:2] = np.maximum(kb[:, 0:2], (x1, y1)) - (x1, y1)
    kb[:, 2:4] = np.minimum(kb[:, 2:4], (x2, y2)) - (x1, y1)
    kl = landmarks[keep].astype(np.float64)
    lm = has_landmarks[keep]
    shifted = kl.reshape(-1, 5, 2) - (x1, y1)
    shifted = np.clip(shifted, 0, (x2 - x1, y2 - y1)).reshape(-1, 10)
    kl = np.where(lm[:, None], shifted, kl)
    return CropResult(crop, kb.astype(np.float32), kl.astype(np.float32), keep, roi[t].copy())


def _lut(alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    # Per-value map of the reference's "x * alpha + beta, clip to [0, 255], store in uint8"
    # (storing truncates), applied with cv2.LUT instead of float math over the whole image.
    values = np.arange(256, dtype=np.float64) * alpha + beta
    return np.clip(values, 0, 255).astype(np.uint8)


def photometric_distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Step 2: brightness, contrast, saturation, hue, each with probability 1/2; a fair coin puts
    contrast before or after the HSV steps. Returns a new uint8 BGR image."""
    image = np.ascontiguousarray(image)
    contrast_first = rng.random() < 0.5
    if rng.random() < 0.5:
        image = cv2.LUT(image, _lut(beta=rng.uniform(-32, 32)))
    if contrast_first and rng.random() < 0.5:
        image = cv2.LUT(image, _lut(alpha=rng.uniform(0.5, 1.5)))
    do_sat = rng.random() < 0.5
    sat = rng.uniform(0.5, 1.5)
    do_hue = rng.random() < 0.5
    hue = int(rng.integers(-18, 19))
    # The reference converts to HSV and back even when neither step fires; that round trip only
    # adds quantisation noise, so it is skipped here.
    if do_sat or do_hue:
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)  # uint8: H in 0..179
        h, s, v = cv2.split(hsv)
        if do_sat:
            s = cv2.LUT(s, _lut(alpha=sat))
        if do_hue:
            h = cv2.LUT(h, ((np.arange(256) + hue) % 180).astype(np.uint8))
        image = cv2.cvtColor(cv2.merge([h, s, v]), cv2.COLOR_HSV2BGR)
    if not contrast_first and rng.random() < 0.5:
        image = cv2.LUT(image, _lut(alpha=rng.uniform(0.5, 1.5)))
    return image


def pad_to_square(image: np.ndarray, fill: Sequence[float]) -> np.ndarray:
    """Step 3: the image at the top-left of a square of side max(h, w) filled with ``fill``."""
    height, width = image.shape[:2]
    if height == width:
        return image
    side = max(height, width)
    out = np.empty((side, side, image.shape[2]), dtype=image.dtype)
    out[:] = np.asarray(fill, dtype=image.dtype)
    out[:height, :width] = image
    return out


def mirror(image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray, has_landmarks: np.ndarray
           ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 4 (the deterministic part): flip left-right; x -> width - x; swap the left/right
    landmarks. Absent landmarks stay -1."""
    width = image.shape[1]
    image = cv2.flip(image, 1)
    boxes = boxes.copy()
    boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    flipped = landmarks.copy()
    flipped[:, 0::2] = width - flipped[:, 0::2]
    flipped = flipped[:, _MIRROR_COLUMNS]
    landmarks = np.where(has_landmarks[:, None], flipped, landmarks)
    return image, boxes, landmarks


def resize_normalise(image: np.ndarray, size: int, interpolation: int, mean: Sequence[float]) -> np.ndarray:
    """Step 5 (image part): resize to ``size x size``, subtract ``mean``, HWC -> CHW float32."""
    resized = cv2.resize(image, (size, size), interpolation=interpolation)
    mean = np.asarray(mean, dtype=np.float32)
    # Plane by plane straight into CHW: several times faster than float HWC then a transposed copy.
    out = np.empty((resized.shape[2], size, size), dtype=np.float32)
    for c, plane in enumerate(cv2.split(resized)):
        np.subtract(plane, mean[c], out=out[c], dtype=np.float32)
    return out


def make_targets(boxes: np.ndarray, landmarks: np.ndarray, has_landmarks: np.ndarray,
                 width: int, height: int) -> np.ndarray:
    """(K, 15) targets: boxes and present landmarks divided by width/height, label 1 / -1."""
    k = len(boxes)
    targets = np.empty((k, TARGET_COLUMNS), dtype=np.float32)
    scale = np.array([width, height], dtype=np.float64)
    targets[:, 0:4] = (boxes.reshape(k, 2, 2) / scale).reshape(k, 4)
    norm = (landmarks.reshape(k, 5, 2) / scale).reshape(k, 10)
    targets[:, 4:14] = np.where(has_landmarks[:, None], norm, -1.0)
    targets[:, LABEL_COLUMN] = np.where(has_landmarks, 1.0, -1.0)
    return targets


def _split_inputs(boxes, landmarks, labels) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    k = len(boxes)
    landmarks = np.asarray(landmarks, dtype=np.float32).reshape(k, 10)
    labels = np.asarray(labels).reshape(k)
    return boxes, landmarks, labels > 0


class TrainTransform:
    """The reference training augmentation.

    ``__call__(image, boxes, landmarks, labels, rng)`` takes a uint8 BGR HxWx3 image, (K, 4) pixel
    boxes ``x1 y1 x2 y2``, (K, 10) pixel landmarks, (K,) labels (> 0: has landmarks) and returns
    ``(image (3, S, S) float32, targets (K, 15) float32)``.

    ``distort``, ``mirror_prob`` and ``interpolations`` exist to switch steps off for tests and
    experiments; the defaults are the reference's.
    """

    def __init__(self, image_size: int = 640, rgb_mean: Sequence[float] = DEFAULT_RGB_MEAN,
                 distort: bool = True, mirror_prob: float = 0.5,
                 interpolations: Sequence[int] = INTERPOLATIONS, crop: bool = True) -> None:
        self.image_size = int(image_size)
        self.rgb_mean = tuple(float(m) for m in rgb_mean)
        self.distort = distort
        self.mirror_prob = float(mirror_prob)
        self.interpolations = tuple(interpolations)
        self.crop = crop

    def __call__(self, image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 HxWx3 BGR image, got {image.dtype} {image.shape}")
        boxes, landmarks, has_lm = _split_inputs(boxes, landmarks, labels)
        if self.crop:
            cropped = random_square_crop(image, boxes, landmarks, has_lm, rng)
            image, boxes, landmarks = cropped.image, cropped.boxes, cropped.landmarks
            has_lm = has_lm[cropped.keep]
            crop_failed = cropped.roi is None
        else:
            crop_failed = True
        if self.distort:
            image = photometric_distort(image, rng)
        if crop_failed:
            image = pad_to_square(image, self.rgb_mean)
        if rng.random() < self.mirror_prob:
            image, boxes, landmarks = mirror(image, boxes, landmarks, has_lm)
        height, width = image.shape[:2]
        interpolation = self.interpolations[int(rng.integers(0, len(self.interpolations)))]
        chw = resize_normalise(image, self.image_size, interpolation, self.rgb_mean)
        return chw, make_targets(boxes, landmarks, has_lm, width, height)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(image_size={self.image_size}, rgb_mean={self.rgb_mean}, "
                f"distort={self.distort}, mirror_prob={self.mirror_prob}, crop={self.crop})")


class ValTransform:
    """Deterministic counterpart for a validation loss: pad to square with the mean colour, resize
    bilinearly to ``image_size``, subtract the mean. Same call signature and outputs as
    :class:`TrainTransform` (``rng`` is ignored)."""

    def __init__(self, image_size: int = 640, rgb_mean: Sequence[float] = DEFAULT_RGB_MEAN) -> None:
        self.image_size = int(image_size)
        self.rgb_mean = tuple(float(m) for m in rgb_mean)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray, labels: np.ndarray,
                 rng: Optional[np.random.Generator] = None) -> Tuple[np.ndarray, np.ndarray]:
        boxes, landmarks, has_lm = _split_inputs(boxes, landmarks, labels)
        image = pad_to_square(image, self.rgb_mean)
        side = image.shape[0]
        chw = resize_normalise(image, self.image_size, cv2.INTER_LINEAR, self.rgb_mean)
        return chw, make_targets(boxes, landmarks, has_lm, side, side)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.image_size}, rgb_mean={self.rgb_mean})"
