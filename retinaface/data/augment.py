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

from ..conventions import (BGR_MEAN, MIRROR_ORDER, NUM_LANDMARKS, TARGET_BOX, TARGET_COLUMNS, TARGET_LABEL,
                           TARGET_LANDMARKS, TRAIN_IMAGE_SIZE, mirror_x)
from .fast_decode import decode_full, decode_reduced, image_size, read_bytes, reduction_factor

CROP_SCALES = (0.3, 0.45, 0.6, 0.8, 1.0)
CROP_TRIES = 250
_FIRST_TRIES = 16   # draw_square_crop tests these tries before the others
INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST,
                  cv2.INTER_LANCZOS4)
# the earlier, misleading name of the mean subtracted from the BGR images: these are BGR values
DEFAULT_RGB_MEAN = BGR_MEAN
LABEL_COLUMN = TARGET_LABEL  # the earlier name of the label column

# Mirroring swaps left/right landmarks (left eye <-> right eye, left mouth <-> right mouth): the
# landmark columns x, y of each point's partner.
_MIRROR_COLUMNS = np.stack([2 * np.array(MIRROR_ORDER), 2 * np.array(MIRROR_ORDER) + 1], axis=1).ravel()


@dataclass
class CropResult:
    image: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    keep: np.ndarray            # indices of the input faces that were kept
    roi: Optional[np.ndarray]   # x1 y1 x2 y2 of the crop in the input image; None if every try failed


@dataclass
class CropPlan:
    """Step 1 drawn from the image's size alone (so the crop is known before decoding)."""

    boxes: np.ndarray           # (K', 4) float32 kept boxes, in crop pixels
    landmarks: np.ndarray       # (K', 10) float32
    keep: np.ndarray            # indices of the input faces that were kept
    roi: Optional[np.ndarray]   # x1 y1 x2 y2 (float64, whole pixels) of the crop; None if every try failed


def draw_square_crop(height: int, width: int, boxes: np.ndarray, landmarks: np.ndarray,
                     has_landmarks: np.ndarray, rng: np.random.Generator, tries: int = CROP_TRIES,
                     scales: Sequence[float] = CROP_SCALES) -> CropPlan:
    """Step 1 for an image of ``height x width``: the reference's random square crop, without the
    pixels (see :func:`random_square_crop` for the rule).

    All tries are drawn at once and the first that succeeds is used, which has the same
    distribution as trying one after another. A try succeeds when at least one face box lies
    entirely inside it and at least one face centre lies strictly inside it; the faces with their
    centre strictly inside are kept, their boxes clipped, their landmarks shifted and clipped
    (only for faces that have landmarks). On failure the faces come back unchanged, ``roi=None``.
    """
    k = len(boxes)
    if k == 0:
        return CropPlan(boxes, landmarks, np.arange(0), None)
    short = min(width, height)
    side = (np.asarray(scales, dtype=np.float64)[rng.integers(0, len(scales), size=tries)] * short).astype(np.int64)
    # Top-left uniform over every valid position (0 .. width - side inclusive).
    left = np.floor(rng.random(tries) * (width - side + 1)).astype(np.int64)
    top = np.floor(rng.random(tries) * (height - side + 1)).astype(np.int64)
    # Each try as (x1, y1, -x2, -y2): a box (b0, b1, b2, b3) lies entirely inside it when all four are
    # <= (b0, b1, -b2, -b3), and a centre (cx, cy) lies strictly inside when all four are
    # < (cx, cy, -cx, -cy); two broadcast comparisons instead of eight (negation is exact).
    roi = np.stack([left, top, -(left + side), -(top + side)], axis=1).astype(np.float64)  # (T, 4)
    b = boxes.astype(np.float64)
    corners = np.concatenate([b[:, :2], -b[:, 2:]], axis=1)                          # (K, 4)
    # Degenerate (zero-area) boxes cannot satisfy "intersection / area >= 1" in the reference.
    corners[~((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))] = -np.inf
    centre = (b[:, :2] + b[:, 2:]) / 2
    centres = np.concatenate([centre, -centre], axis=1)                              # (K, 4)
    # The first success is nearly always among the first few tries: test those first, the rest
    # only when none of them succeeds (the same first success either way).
    t = -1
    for lo, hi in ((0, min(_FIRST_TRIES, tries)), (min(_FIRST_TRIES, tries), tries)):
        if lo >= hi:
            continue
        r = roi[lo:hi, None, :]
        centre_in = (r < centres).all(axis=2)                                       # (T', K)
        ok = (r <= corners).all(axis=2).any(axis=1) & centre_in.any(axis=1)
        if ok.any():
            t = int(np.argmax(ok))
            keep = np.flatnonzero(centre_in[t])
            t += lo
            break
    if t < 0:
        return CropPlan(boxes, landmarks, np.arange(k), None)
    x1, y1 = float(left[t]), float(top[t])
    x2, y2 = float(left[t] + side[t]), float(top[t] + side[t])

    kb = b[keep]
    kb[:, 0:2] = np.maximum(kb[:, 0:2], (x1, y1)) - (x1, y1)
    kb[:, 2:4] = np.minimum(kb[:, 2:4], (x2, y2)) - (x1, y1)
    kl = landmarks[keep].astype(np.float64)
    lm = has_landmarks[keep]
    shifted = kl.reshape(-1, 5, 2) - (x1, y1)
    shifted = np.clip(shifted, 0, (x2 - x1, y2 - y1)).reshape(-1, 10)
    kl = np.where(lm[:, None], shifted, kl)
    return CropPlan(kb.astype(np.float32), kl.astype(np.float32), keep, np.array([x1, y1, x2, y2]))


def random_square_crop(image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray,
                       has_landmarks: np.ndarray, rng: np.random.Generator,
                       tries: int = CROP_TRIES, scales: Sequence[float] = CROP_SCALES) -> CropResult:
    """Step 1: the reference's random square crop (:func:`draw_square_crop`), applied to ``image``.
    On failure the input comes back unchanged, ``roi=None``."""
    height, width = image.shape[:2]
    plan = draw_square_crop(height, width, boxes, landmarks, has_landmarks, rng, tries, scales)
    if plan.roi is None:
        return CropResult(image, plan.boxes, plan.landmarks, plan.keep, None)
    x1, y1, x2, y2 = (int(v) for v in plan.roi)
    return CropResult(image[y1:y2, x1:x2], plan.boxes, plan.landmarks, plan.keep, plan.roi)


def _lut(alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    # Per-value map of the reference's "x * alpha + beta, clip to [0, 255], store in uint8"
    # (storing truncates), applied with cv2.LUT instead of float math over the whole image.
    values = np.arange(256, dtype=np.float64) * alpha + beta
    return np.clip(values, 0, 255).astype(np.uint8)


def _hue_lut(shift: int) -> np.ndarray:
    # OpenCV's uint8 hue is 0..179 and wraps: (h + shift) mod 180
    return ((np.arange(256) + shift) % 180).astype(np.uint8)


@dataclass(frozen=True)
class Distortion:
    """The draws of step 2; ``None`` means that step does not fire."""

    contrast_first: bool
    brightness: Optional[float] = None   # shift in [-32, 32]
    contrast: Optional[float] = None     # factor in [0.5, 1.5]
    saturation: Optional[float] = None   # factor in [0.5, 1.5]
    hue: Optional[int] = None            # shift in [-18, 18], OpenCV hue units (0..179, wrapping)


def draw_distortion(rng: np.random.Generator) -> Distortion:
    """Step 2's random draws, in a fixed order (the image is not needed)."""
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
    return Distortion(bool(contrast_first), brightness, contrast, sat if do_sat else None,
                      hue if do_hue else None)


def value_maps(d: Distortion) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """The brightness / contrast tables of ``d``: ``(before, after)`` the HSV steps (``None``: no
    pass). Brightness and contrast are per-value maps of the same channels: consecutive ones
    compose into one table (exact, as each table holds uint8 values), one pass over the image
    instead of two; without HSV steps everything is ``before``."""
    hsv_steps = d.saturation is not None or d.hue is not None
    before: Optional[np.ndarray] = None
    if d.brightness is not None:
        before = _lut(beta=d.brightness)
    if d.contrast is not None and (d.contrast_first or not hsv_steps):
        contrast = _lut(alpha=d.contrast)
        return (contrast if before is None else contrast[before]), None
    return before, (_lut(alpha=d.contrast) if d.contrast is not None else None)


def apply_distortion(image: np.ndarray, d: Distortion) -> np.ndarray:
    """Step 2 with its draws given: uint8 BGR in, a new uint8 BGR image out.

    Every step is a 256-entry lookup table equal, value for value, to the reference's float64
    ``clip(x * alpha + beta, 0, 255)`` stored to uint8 (tests/test_augment_pipeline.py checks it
    bit for bit), so no float copy of the image is ever made. ``image`` may be a view (a crop of
    the decoded image): OpenCV reads it in place, and it is never written to."""
    hsv_steps = d.saturation is not None or d.hue is not None
    before, after = value_maps(d)
    if before is not None:
        image = cv2.LUT(image, before)
    # The reference converts to HSV and back even when neither step fires; that round trip only
    # adds quantisation noise, so it is skipped here.
    if hsv_steps:
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)  # uint8: H in 0..179
        # only the channels that change are taken out, mapped and put back (in place; cheaper
        # than splitting all three and merging them again)
        if d.saturation is not None:
            hsv = cv2.insertChannel(cv2.LUT(cv2.extractChannel(hsv, 1), _lut(alpha=d.saturation)), hsv, 1)
        if d.hue is not None:
            hsv = cv2.insertChannel(cv2.LUT(cv2.extractChannel(hsv, 0), _hue_lut(d.hue)), hsv, 0)
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if after is not None:
        image = cv2.LUT(image, after)
    return image


def photometric_distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Step 2: brightness, contrast, saturation, hue, each with probability 1/2; a fair coin puts
    contrast before or after the HSV steps. Returns a new uint8 BGR image."""
    return apply_distortion(image, draw_distortion(rng))


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


def mirror_targets(boxes: np.ndarray, landmarks: np.ndarray, has_landmarks: np.ndarray, width: float
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Step 4's geometry: x -> width - x for boxes (x1 and x2 swap roles) and present landmarks,
    then left/right landmarks swap. Absent landmarks stay -1."""
    boxes = boxes.copy()
    boxes[:, [0, 2]] = mirror_x(boxes[:, [2, 0]], width)
    flipped = landmarks.copy()
    flipped[:, 0::2] = mirror_x(flipped[:, 0::2], width)
    flipped = flipped[:, _MIRROR_COLUMNS]
    return boxes, np.where(has_landmarks[:, None], flipped, landmarks)


def mirror(image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray, has_landmarks: np.ndarray
           ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 4 (the deterministic part): flip left-right; x -> width - x; swap the left/right
    landmarks. Absent landmarks stay -1."""
    boxes, landmarks = mirror_targets(boxes, landmarks, has_landmarks, image.shape[1])
    return cv2.flip(image, 1), boxes, landmarks


def normalize_chw(image: np.ndarray, mean: Sequence[float]) -> np.ndarray:
    """uint8 HxWx3 -> (3, H, W) float32 minus ``mean``."""
    # Plane by plane straight into CHW: several times faster than float HWC then a transposed copy.
    # cv2.subtract converts each uint8 plane and subtracts the mean in one pass, written into the
    # output's plane: the same float32 values as NumPy's uint8 - float32 (fractional means too).
    out = np.empty((image.shape[2],) + image.shape[:2], dtype=np.float32)
    for c, plane in enumerate(cv2.split(image)):
        cv2.subtract(plane, float(np.float32(mean[c])), dst=out[c], dtype=cv2.CV_32F)
    return out


def chw_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> (3, H, W) uint8, nothing subtracted (for batches whose mean is subtracted on
    the training device: :class:`retinaface.data.dataset.MeanSubtractingLoader`)."""
    out = np.empty((image.shape[2],) + image.shape[:2], dtype=np.uint8)
    cv2.split(image, list(out))   # each plane written straight into its row of out
    return out


def resize_normalize(image: np.ndarray, size: int, interpolation: int, mean: Sequence[float]) -> np.ndarray:
    """Step 5 (image part): resize to ``size x size``, subtract ``mean``, HWC -> CHW float32."""
    return normalize_chw(cv2.resize(image, (size, size), interpolation=interpolation), mean)


def make_targets(boxes: np.ndarray, landmarks: np.ndarray, has_landmarks: np.ndarray,
                 width: int, height: int) -> np.ndarray:
    """(K, 15) targets: boxes and present landmarks divided by width/height, label 1 / -1."""
    k = len(boxes)
    targets = np.empty((k, TARGET_COLUMNS), dtype=np.float32)
    scale = np.array([width, height], dtype=np.float64)
    targets[:, TARGET_BOX] = (boxes.reshape(k, 2, 2) / scale).reshape(k, 4)
    norm = (landmarks.reshape(k, NUM_LANDMARKS, 2) / scale).reshape(k, 2 * NUM_LANDMARKS)
    targets[:, TARGET_LANDMARKS] = np.where(has_landmarks[:, None], norm, -1.0)
    targets[:, TARGET_LABEL] = np.where(has_landmarks, 1.0, -1.0)
    return targets


def _split_inputs(boxes, landmarks, labels) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    k = len(boxes)
    landmarks = np.asarray(landmarks, dtype=np.float32).reshape(k, 10)
    labels = np.asarray(labels).reshape(k)
    return boxes, landmarks, labels > 0


@dataclass
class SamplePlan:
    """Every random draw of one training sample, made before any pixel is touched.

    ``crop_roi`` is the square crop in input pixels (``None``: no crop, the image is padded to a
    square); ``canvas`` is the side of the square that is resized (crop side, or max(h, w));
    ``targets`` are final. ``distortion`` is ``None`` when distortion is switched off."""

    crop_roi: Optional[np.ndarray]
    canvas: int
    distortion: Optional[Distortion]
    flip: bool
    interpolation: int
    targets: np.ndarray


class TrainTransform:
    """The reference training augmentation.

    ``__call__(image, boxes, landmarks, labels, rng)`` takes a uint8 BGR HxWx3 image, (K, 4) pixel
    boxes ``x1 y1 x2 y2``, (K, 10) pixel landmarks, (K,) labels (> 0: has landmarks) and returns
    ``(image (3, S, S) float32, targets (K', 15) float32)`` (the image uint8 with ``normalize=False``).

    :meth:`load` does the same from an image file, bit for bit. With ``reduced_decode`` (opt-in) it
    draws the sample from the file header's size first and, when the crop will be shrunk 2x or
    more, decodes the JPEG at 1/2, 1/4 or 1/8 size: same crops, draws and targets, but the pixels
    are resampled differently, and measurably softer (``benchmarks/bench_data.py --check``: mean
    |Laplacian| about 20 % lower than ``cv2.resize``'s unfiltered downscaling), so it is not the
    reference's sample distribution.

    With ``normalize=False`` the image comes out as ``(3, S, S)`` uint8 without the mean
    subtracted: a quarter of the bytes through the DataLoader's shared memory, pinned memory and
    the host-to-device copy, and the subtraction (exactly the same float32 values) done on the
    training device (:class:`~retinaface.data.dataset.MeanSubtractingLoader`; the trainer's default
    on CUDA).

    ``distort``, ``mirror_prob`` and ``interpolations`` exist to switch steps off for tests and
    experiments; the defaults are the reference's.
    """

    def __init__(self, image_size: int = TRAIN_IMAGE_SIZE, rgb_mean: Sequence[float] = BGR_MEAN,
                 distort: bool = True, mirror_prob: float = 0.5,
                 interpolations: Sequence[int] = INTERPOLATIONS, crop: bool = True,
                 reduced_decode: bool = False, normalize: bool = True) -> None:
        self.image_size = int(image_size)
        self.rgb_mean = tuple(float(m) for m in rgb_mean)
        self.distort = distort
        self.mirror_prob = float(mirror_prob)
        self.interpolations = tuple(interpolations)
        self.crop = crop
        self.reduced_decode = bool(reduced_decode)
        self.normalize = bool(normalize)

    def plan(self, height: int, width: int, boxes: np.ndarray, landmarks: np.ndarray, labels: np.ndarray,
             rng: np.random.Generator) -> SamplePlan:
        """All draws for an image of ``height x width``, in the recipe's order (crop, distortion,
        mirror, interpolation), and the final ``(K', 15)`` targets."""
        boxes, landmarks, has_lm = _split_inputs(boxes, landmarks, labels)
        roi = None
        if self.crop:
            crop = draw_square_crop(height, width, boxes, landmarks, has_lm, rng)
            boxes, landmarks, roi = crop.boxes, crop.landmarks, crop.roi
            has_lm = has_lm[crop.keep]
        distortion = draw_distortion(rng) if self.distort else None
        canvas_w, canvas_h = (width, height) if roi is None else (int(roi[2] - roi[0]), int(roi[3] - roi[1]))
        if roi is None:
            canvas_w = canvas_h = max(height, width)   # padded to a square (step 3)
        flip = bool(rng.random() < self.mirror_prob)
        if flip:
            boxes, landmarks = mirror_targets(boxes, landmarks, has_lm, canvas_w)
        interpolation = self.interpolations[int(rng.integers(0, len(self.interpolations)))]
        targets = make_targets(boxes, landmarks, has_lm, canvas_w, canvas_h)
        return SamplePlan(roi, canvas_w, distortion, flip, interpolation, targets)

    def render(self, image: np.ndarray, plan: SamplePlan) -> np.ndarray:
        """The image part of ``plan`` on the full-resolution image: (3, S, S) float32.

        The crop stays a view of ``image`` (OpenCV reads it in place); :meth:`render_crop` does
        the rest."""
        if plan.crop_roi is not None:
            x1, y1, x2, y2 = (int(v) for v in plan.crop_roi)
            image = image[y1:y2, x1:x2]
        return self.render_crop(image, plan)

    def render_crop(self, image: np.ndarray, plan: SamplePlan) -> np.ndarray:
        """The image part of ``plan`` on its crop's pixels (the whole image when the plan has no
        crop): distortion, padding, mirror, resize and mean in the recipe's order.

        None of the steps is moved after the resize, even where that looks exact (a per-pixel
        distortion before ``INTER_NEAREST``): OpenCV's uint8 HSV -> BGR conversion rounds some
        pixels differently depending on their position in the row (vectorised blocks vs the row's
        tail), so it is a function of the whole row, not of the pixel alone."""
        if plan.distortion is not None:
            image = apply_distortion(image, plan.distortion)
        if plan.crop_roi is None:
            image = pad_to_square(image, self.rgb_mean)
        if plan.flip:
            image = cv2.flip(image, 1)
        return self._to_chw(cv2.resize(image, (self.image_size, self.image_size), interpolation=plan.interpolation))

    def _to_chw(self, image: np.ndarray) -> np.ndarray:
        """Step 5's last part: the mean subtracted into CHW float32, or CHW uint8 (``normalize=False``)."""
        return normalize_chw(image, self.rgb_mean) if self.normalize else chw_uint8(image)

    def render_reduced(self, image: np.ndarray, factor: int, height: int, width: int,
                       plan: SamplePlan) -> np.ndarray:
        """The image part of ``plan`` on ``image``, the ``height x width`` input decoded at
        ``1 / factor`` (see :mod:`retinaface.data.fast_decode` for its geometry).

        The distortion runs on the reduced crop (it is per pixel, so only its input is smaller).
        Crop, pad and resize become one ``warpAffine`` whose map sends output pixel centres exactly
        where ``cv2.resize`` of the full-resolution crop samples them; mirroring flips the output.
        ``INTER_AREA`` has no warp form: its crop is rounded to whole reduced pixels (at most
        ``factor / 2`` input pixels, under half an output pixel) and resized with ``cv2.resize``."""
        size, side = self.image_size, float(plan.canvas)
        rh, rw = image.shape[:2]
        if plan.crop_roi is None:
            x1 = y1 = 0.0
            region = image if plan.distortion is None else apply_distortion(image, plan.distortion)
            long_r = -(-max(height, width) // factor)
            region = pad_to_square(region, self.rgb_mean) if rh != rw else region
            region = region[:long_r, :long_r]
            ox = oy = 0
        else:
            x1, y1 = float(plan.crop_roi[0]), float(plan.crop_roi[1])
            if plan.interpolation == cv2.INTER_AREA:
                n = max(1, int(round(side / factor)))
                ox = min(int(round(x1 / factor)), rw - n)
                oy = min(int(round(y1 / factor)), rh - n)
                region = image[oy:oy + n, ox:ox + n]
            else:
                ox, oy = int(x1 // factor), int(y1 // factor)
                ex = min(rw, -(-int(x1 + side) // factor))
                ey = min(rh, -(-int(y1 + side) // factor))
                region = image[oy:ey, ox:ex]
            if plan.distortion is not None:
                region = apply_distortion(region, plan.distortion)
        if plan.interpolation == cv2.INTER_AREA:
            out = cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA)
        else:
            # output x (centre x + 0.5) -> input x1 + (x + 0.5) * side / S -> reduced (that / f) - 0.5
            scale = side / (size * factor)
            tx = (x1 + 0.5 * side / size) / factor - 0.5 - ox
            ty = (y1 + 0.5 * side / size) / factor - 0.5 - oy
            matrix = np.array([[scale, 0.0, tx], [0.0, scale, ty]])
            out = cv2.warpAffine(region, matrix, (size, size), flags=plan.interpolation | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REPLICATE)
        if plan.flip:
            out = cv2.flip(out, 1)
        return self._to_chw(out)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 HxWx3 BGR image, got {image.dtype} {image.shape}")
        plan = self.plan(image.shape[0], image.shape[1], boxes, landmarks, labels, rng)
        return self.render(image, plan), plan.targets

    def load(self, path: str, boxes: np.ndarray, landmarks: np.ndarray, labels: np.ndarray,
             rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """``__call__`` on the image file ``path``, decoding no more pixels than the sample needs.

        The draws come from the header's size, in ``__call__``'s order, so the crop, distortion,
        mirror, interpolation and targets are exactly those of ``__call__(cv2.imread(path), ...)``
        with the same generator. When ``reduced_decode`` is on and the
        canvas (crop side, or the padded square) is at least 2x ``image_size``, the JPEG is decoded
        at 1/2, 1/4 or 1/8 and :meth:`render_reduced` resamples it (same geometry, softer pixels:
        see the class docstring); otherwise the result is bit for bit ``__call__``'s.
        Files whose header gives no size, or whose decoded size differs from it (EXIF rotation),
        are decoded whole and go through ``__call__``. Raises ``OSError`` naming an unreadable file.
        """
        data = read_bytes(path)   # one read; decoding the bytes gives cv2.imread's pixels
        size = image_size(data) if self.reduced_decode else None
        if size is None:   # the plain path: the whole image, then __call__
            return self(decode_full(data, path), boxes, landmarks, labels, rng)
        width, height = size
        state = rng.bit_generator.state
        plan = self.plan(height, width, boxes, landmarks, labels, rng)
        factor = reduction_factor(plan.canvas, self.image_size)
        if factor > 1:
            reduced = decode_reduced(data, factor, height, width)
            if reduced is not None:
                return self.render_reduced(reduced, factor, height, width, plan), plan.targets
        image = decode_full(data, path)
        if image.shape[:2] != (height, width):   # the header's size was not the decoded one: redraw
            rng.bit_generator.state = state
            return self(image, boxes, landmarks, labels, rng)
        return self.render(image, plan), plan.targets

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(image_size={self.image_size}, rgb_mean={self.rgb_mean}, "
                f"distort={self.distort}, mirror_prob={self.mirror_prob}, crop={self.crop}, "
                f"reduced_decode={self.reduced_decode}, "
                f"normalize={self.normalize})")


class ValTransform:
    """Deterministic counterpart for a validation loss: pad to square with the mean colour, resize
    bilinearly to ``image_size``, subtract the mean. Same call signature and outputs as
    :class:`TrainTransform` (``rng`` is ignored)."""

    def __init__(self, image_size: int = TRAIN_IMAGE_SIZE, rgb_mean: Sequence[float] = BGR_MEAN) -> None:
        self.image_size = int(image_size)
        self.rgb_mean = tuple(float(m) for m in rgb_mean)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray, labels: np.ndarray,
                 rng: Optional[np.random.Generator] = None) -> Tuple[np.ndarray, np.ndarray]:
        boxes, landmarks, has_lm = _split_inputs(boxes, landmarks, labels)
        image = pad_to_square(image, self.rgb_mean)
        side = image.shape[0]
        chw = resize_normalize(image, self.image_size, cv2.INTER_LINEAR, self.rgb_mean)
        return chw, make_targets(boxes, landmarks, has_lm, side, side)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.image_size}, rgb_mean={self.rgb_mean})"
