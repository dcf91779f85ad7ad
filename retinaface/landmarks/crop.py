"""The crop a landmark network sees, its exact inverse, and the training augmentation.

Policy: from a face box (a data set's box or a detector's), a **square** crop centred on the box
centre whose side is the box's longer side times ``1 + 2 * margin`` (``margin`` of that side added on
each side; :data:`DEFAULT_MARGIN` = 0.1), resized to ``size x size``. Parts of the square outside the
image are filled with :data:`FILL_BGR`.

Coordinates (the toolkit's convention): pixel centres at integer coordinates, 0-based, in the image
and in the crop alike. The crop square ``[cx - side / 2, cx + side / 2]`` (in the box's coordinates)
maps onto the crop's full extent, its outer pixel edges ``[-0.5, size - 0.5]``, so an image point ``x``
lands at ``(x - left) * size / side - 0.5`` with ``left = cx - side / 2``.
Every crop is one affine map (:class:`CropTransform`, a 2 x 3 matrix image -> crop, applied with
``cv2.warpAffine``, whose pixel convention is the same); :meth:`CropTransform.to_image` is its exact
inverse. Networks predict **normalised** crop coordinates: ``(u + 0.5) / size``, so 0 and 1 are the
crop's edges.

Augmentation (:func:`augment_face`) is a function of a ``numpy.random.Generator``: the same generator
state gives the same crop. A horizontal flip mirrors the crop and reorders the points with the
scheme's mirror permutation, so every index keeps its meaning (the outer corner of the eye on the
image's left stays index 36 of 68, and stays on the left).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import cv2
import numpy as np

from .schemes import LandmarkScheme, get_scheme

DEFAULT_MARGIN = 0.1
FILL_BGR: Tuple[int, int, int] = (0, 0, 0)


@dataclass(frozen=True)
class CropTransform:
    """An affine map from image pixels to crop pixels (``matrix`` 2 x 3, ``size`` the crop side)."""

    matrix: np.ndarray
    size: int

    def _full(self) -> np.ndarray:
        return np.vstack([np.asarray(self.matrix, dtype=np.float64), [0.0, 0.0, 1.0]])

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Image pixel coordinates ``(..., 2)`` -> crop pixel coordinates."""
        points = np.asarray(points, dtype=np.float64)
        m = np.asarray(self.matrix, dtype=np.float64)
        return points @ m[:, :2].T + m[:, 2]

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Crop pixel coordinates ``(..., 2)`` -> image pixel coordinates (the exact inverse)."""
        inverse = np.linalg.inv(self._full())[:2]
        points = np.asarray(points, dtype=np.float64)
        return points @ inverse[:, :2].T + inverse[:, 2]

    def normalise(self, crop_points: np.ndarray) -> np.ndarray:
        """Crop pixels -> normalised crop coordinates ``(u + 0.5) / size`` (0 and 1: the crop's edges)."""
        return (np.asarray(crop_points, dtype=np.float64) + 0.5) / self.size

    def denormalise(self, normalised: np.ndarray) -> np.ndarray:
        """Normalised crop coordinates -> crop pixels."""
        return np.asarray(normalised, dtype=np.float64) * self.size - 0.5

    def normalised_to_image(self, normalised: np.ndarray) -> np.ndarray:
        """A network's normalised output -> image pixels."""
        return self.to_image(self.denormalise(normalised))

    def warp(self, image: np.ndarray, fill: Sequence[int] = FILL_BGR) -> np.ndarray:
        """The crop of ``image`` (bilinear; outside the image: ``fill``)."""
        return cv2.warpAffine(image, np.asarray(self.matrix, dtype=np.float64), (self.size, self.size),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=tuple(int(v) for v in fill))


def _check_box(box: Sequence[float]) -> np.ndarray:
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"face box must be finite x_min y_min x_max y_max with x_max > x_min and "
                         f"y_max > y_min, got {box.tolist()}")
    return box


def square_region(box: Sequence[float], margin: float = DEFAULT_MARGIN) -> Tuple[float, float, float]:
    """``(cx, cy, side)``: the crop square of a face box, in continuous image coordinates."""
    box = _check_box(box)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    side = max(box[2] - box[0], box[3] - box[1]) * (1.0 + 2.0 * margin)
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0, float(side)


def _affine(cx: float, cy: float, side: float, size: int, angle_deg: float = 0.0, flip: bool = False
            ) -> np.ndarray:
    """Image -> crop: rotate by ``angle_deg`` about the square's centre (counter-clockwise on the
    screen for positive angles, as ``cv2.getRotationMatrix2D``), scale ``size / side``, centre it in
    the crop, then mirror the crop when ``flip``."""
    k = size / side
    t = math.radians(angle_deg)
    # y points down: a counter-clockwise turn on the screen is [[cos, sin], [-sin, cos]]
    rot = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]) * k
    centre_out = (size - 1) / 2.0  # the crop's centre in pixel-centre coordinates
    # the square's centre (cx, cy) lands on the crop's centre
    offset = np.array([centre_out, centre_out]) - rot @ np.array([cx, cy])
    matrix = np.hstack([rot, offset[:, None]])
    if flip:
        mirror = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        matrix = (mirror @ np.vstack([matrix, [0, 0, 1]]))[:2]
    return matrix


def crop_transform(box: Sequence[float], size: int, margin: float = DEFAULT_MARGIN) -> CropTransform:
    """The map of the module's crop policy for ``box`` (``x_min y_min x_max y_max``)."""
    if int(size) < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    cx, cy, side = square_region(box, margin)
    return CropTransform(_affine(cx, cy, side, int(size)), int(size))


def crop_face(image: np.ndarray, box: Sequence[float], size: int, margin: float = DEFAULT_MARGIN
              ) -> Tuple[np.ndarray, CropTransform]:
    """``(crop, transform)``: the ``size x size`` crop of the face in ``box`` and its map."""
    transform = crop_transform(box, size, margin)
    return transform.warp(image), transform


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the training augmentation: rotation uniform in ``+- rotation`` degrees, scale of
    the square's side uniform in ``1 +- scale``, shift of its centre uniform in ``+- shift`` of the
    side in x and y, a horizontal flip with probability ``flip``, and colour factors uniform in
    ``1 +- brightness`` / ``contrast`` / ``saturation``."""

    rotation: float = 30.0
    scale: float = 0.1
    shift: float = 0.08
    flip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self) -> None:
        if self.rotation < 0 or not 0 <= self.scale < 1 or self.shift < 0 or not 0 <= self.flip <= 1:
            raise ValueError(f"augmentation needs rotation >= 0, 0 <= scale < 1, shift >= 0, 0 <= flip <= 1; "
                             f"got {self.rotation}, {self.scale}, {self.shift}, {self.flip}")
        if min(self.brightness, self.contrast, self.saturation) < 0 or max(self.brightness, self.contrast,
                                                                             self.saturation) >= 1:
            raise ValueError("colour ranges must be in [0, 1)")


NO_AUGMENTATION = AugmentConfig(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass
class AugmentedFace:
    """One augmented training crop: ``crop`` (uint8 ``size x size x 3``), ``points`` in crop pixels
    (reordered by the mirror permutation when ``flipped``), ``transform`` (image -> crop; its
    inverse maps predictions back), ``flipped``."""

    crop: np.ndarray
    points: np.ndarray
    transform: CropTransform
    flipped: bool


def jitter_colour(crop: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Brightness, contrast, then saturation factors drawn from ``rng`` (always three draws, so the
    generator advances the same way whatever the ranges)."""
    factors = rng.uniform(-1.0, 1.0, size=3) * np.array([config.brightness, config.contrast, config.saturation]) + 1
    if np.all(factors == 1.0):
        return crop
    image = crop.astype(np.float32) * factors[0]
    grey = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
    image = (image - grey.mean()) * factors[1] + grey.mean()
    grey = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
    image = (image - grey[..., None]) * factors[2] + grey[..., None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def augment_face(image: np.ndarray, points: np.ndarray, box: Sequence[float], size: int,
                 scheme: "str | int | LandmarkScheme", rng: np.random.Generator,
                 config: AugmentConfig = AugmentConfig(), margin: float = DEFAULT_MARGIN) -> AugmentedFace:
    """A randomly rotated, scaled, shifted, possibly mirrored and colour-jittered crop of the face in
    ``box``, with its ``points`` ``(K, 2)`` carried along. Draws, in this order: angle, scale, shift
    x, shift y, flip, then the three colour factors; deterministic in the generator's state."""
    layout = get_scheme(scheme)
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (layout.num_points, 2):
        raise ValueError(f"points {points.shape} do not fit scheme {layout.name} ({layout.num_points}, 2)")
    cx, cy, side = square_region(box, margin)
    angle = rng.uniform(-config.rotation, config.rotation)
    side *= rng.uniform(1 - config.scale, 1 + config.scale)
    cx += rng.uniform(-config.shift, config.shift) * side
    cy += rng.uniform(-config.shift, config.shift) * side
    flipped = bool(rng.random() < config.flip)
    transform = CropTransform(_affine(cx, cy, side, int(size), angle, flipped), int(size))
    crop = jitter_colour(transform.warp(image), rng, config)
    moved = transform.to_crop(points)
    if flipped:
        moved = moved[list(layout.mirror)]
    return AugmentedFace(crop, moved, transform, flipped)
