"""Synthetic faces with true dense landmarks: 68 points (iBUG / 300W layout) and 98 points (WFLW
layout) on the same drawn face.

Each face is drawn from one parametric model in face-local coordinates (x right, y down, origin at
the face centre, ``a`` / ``b`` the face ellipse's half width / half height), and every landmark is a
point *of what is drawn*:

* contour: points on the face ellipse (the drawn outline), from the image-left temple round the chin
  to the right temple at equal angles (17 points for iBUG's jaw 0-16, 33 for WFLW's 0-32);
* brows: filled bands whose outline passes through the points (iBUG 17-26: the upper edge; WFLW
  33-50: upper edge outer -> inner, lower edge inner -> outer);
* eyes: almond shapes (upper and lower lid sine arcs between the corners) filled white with an iris
  whose centre is WFLW's pupil (96 / 97); iBUG 36-47 and WFLW 60-75 are corners and lid points;
* nose: the ridge line (iBUG 27-30, WFLW 51-54) and the nostril base curve (31-35, 55-59);
* mouth: outer lip outline (48-59, 76-87) filled with the lip colour and the inner lip outline
  (60-67, 88-95) filled dark when the mouth is open; a closed mouth has coinciding inner lips, as the
  iBUG mark-up has it.

Indices and "left" follow :mod:`~retinaface.landmarks.schemes` (0-based; left as seen in the image).
Coordinates are pixel-centre coordinates (OpenCV's drawing convention, via the synthetic WIDER
FACE's drawing helpers). Faces turn in the image plane, vary in shape and get a small yaw (the inner
features shift sideways), and some are occluded, blurred, darkened or wear vivid lips; WFLW's six
attribute flags record those draws. Everything is a function of ``(seed, index)``.

:func:`write_synthetic_landmarks` writes a set in the 300W layout (``<name>.jpg`` + ``<name>.pts``)
or the WFLW layout (``images/...`` + ``list_98pt_rect_attr_<split>.txt`` and the 68-point variant
list), which :mod:`~retinaface.landmarks.formats` reads back.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import cv2
import numpy as np

from ..data.synthetic import (_SHIFT, HAIR_COLOURS, SKIN_TONES, _background, _colour, _ellipse, _ellipse_extent, _fix,
                              _to_image)
from .formats import format_wflw_line, write_pts, write_wflw_list

PathLike = Union[str, "os.PathLike[str]"]

LAYOUTS: Tuple[str, ...] = ("300w", "wflw")
_DENSE = 16  # outline samples per curve segment when drawing


@dataclass
class SyntheticLandmarkFace:
    """One drawn face: ``image`` (BGR uint8), ``points68`` (68, 2), ``points98`` (98, 2), ``box``
    (the face ellipse's bounding box, ``x_min y_min x_max y_max``), WFLW's six ``attributes`` and the
    drawing parameters (``params``)."""

    image: np.ndarray
    points68: np.ndarray
    points98: np.ndarray
    box: np.ndarray
    attributes: Dict[str, int]
    params: Dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class FaceShape:
    """The face model's parameters, in units of the face ellipse's half axes ``a`` (x) and ``b`` (y)."""

    a: float
    b: float
    yaw: float = 0.0             # shift of the inner features, in units of a
    eye_x: float = 0.36          # eye centres at x = +-eye_x * a
    eye_y: float = -0.10
    eye_w: float = 0.18          # half width of an eye
    lid_up: float = 0.085        # upper / lower lid heights (units of b)
    lid_low: float = 0.065
    brow_y: float = -0.30
    brow_arch: float = 0.05
    brow_thick: float = 0.055
    mouth_y: float = 0.50
    mouth_w: float = 0.30        # half width of the mouth
    lip_up: float = 0.07
    lip_low: float = 0.09
    opening: float = 0.0         # gap between the inner lips (units of b)
    contour_margin: float = 0.15  # the contour starts this many radians above the ellipse's equator


def _lid(shape: FaceShape, centre_x: float, t: np.ndarray, upper: bool) -> np.ndarray:
    """Points of an eye outline at ``t`` in [0, 1] from the eye's image-left corner to its right one."""
    a, b = shape.a, shape.b
    x = centre_x + (2 * t - 1) * shape.eye_w * a
    height = shape.lid_up if upper else -shape.lid_low
    y = shape.eye_y * b - height * b * np.sin(np.pi * t)
    return np.stack([x, y], axis=-1)


def _brow_edge(shape: FaceShape, side: int, t: np.ndarray, upper: bool) -> np.ndarray:
    """Brow outline at ``t`` in [0, 1] from the brow's outer end to its inner end; ``side`` -1 for the
    image-left brow. The band narrows toward its outer end."""
    a, b = shape.a, shape.b
    outer, inner = 0.62, 0.12
    x = side * (outer + (inner - outer) * t) * a + shape.yaw * a
    centre = shape.brow_y * b - shape.brow_arch * b * np.sin(np.pi * (0.25 + 0.6 * t))
    thickness = shape.brow_thick * b * (0.35 + 0.65 * t)
    y = centre - thickness / 2 if upper else centre + thickness / 2
    return np.stack([x, y], axis=-1)


def _mouth_edge(shape: FaceShape, t: np.ndarray, outer: bool, upper: bool) -> np.ndarray:
    """Lip outline at ``t`` in [0, 1] from the image-left corner to the right one."""
    a, b = shape.a, shape.b
    half = shape.mouth_w if outer else shape.mouth_w * 0.8
    x = (2 * t - 1) * half * a + shape.yaw * a
    if outer:
        height = shape.lip_up + shape.opening / 2 if upper else -(shape.lip_low + shape.opening / 2)
    else:
        height = shape.opening / 2 if upper else -shape.opening / 2
    y = shape.mouth_y * b - height * b * np.sin(np.pi * t)
    return np.stack([x, y], axis=-1)


def _nose_ridge(shape: FaceShape, t: np.ndarray) -> np.ndarray:
    a, b = shape.a, shape.b
    x = shape.yaw * a * (1.0 + 0.6 * t)
    y = (-0.10 + 0.32 * t) * b
    return np.stack([x, y], axis=-1)


def _nose_base(shape: FaceShape, t: np.ndarray) -> np.ndarray:
    """Nostril base from the image-left nostril (t = 0) to the right one (t = 1)."""
    a, b = shape.a, shape.b
    x = (2 * t - 1) * 0.14 * a + 1.6 * shape.yaw * a
    y = (0.25 + 0.04 * np.sin(np.pi * t)) * b
    return np.stack([x, y], axis=-1)


def _contour(shape: FaceShape, count: int) -> np.ndarray:
    """``count`` points on the face ellipse from the image-left temple round the chin."""
    start = math.pi + shape.contour_margin
    angles = start - np.arange(count) * (math.pi + 2 * shape.contour_margin) / (count - 1)
    return np.stack([shape.a * np.cos(angles), shape.b * np.sin(angles)], axis=-1)


def _eye_points(shape: FaceShape, per_lid: int) -> Tuple[np.ndarray, np.ndarray]:
    """Both eyes in the scheme order (outer corner, upper lid, inner corner, lower lid back), with
    ``per_lid`` points on each lid: (left eye, right eye)."""
    ts = np.arange(1, per_lid + 1) / (per_lid + 1)
    eyes = []
    for side in (-1, 1):
        centre = side * shape.eye_x * shape.a + shape.yaw * shape.a
        left_corner, right_corner = _lid(shape, centre, np.array([0.0, 1.0]), True)
        upper = _lid(shape, centre, ts, True)
        lower = _lid(shape, centre, ts, False)
        # left eye: outer corner, upper lid outer -> inner, inner corner, lower lid back; the right eye
        # runs inner corner first: both are "image-left corner, upper lid, right corner, lower lid back"
        eyes.append(np.vstack([left_corner, upper, right_corner, lower[::-1]]))
    return eyes[0], eyes[1]


def _mouth_points(shape: FaceShape) -> np.ndarray:
    """The 20 mouth points shared by both schemes (iBUG 48-67 = WFLW 76-95)."""
    outer_up = _mouth_edge(shape, np.arange(0, 7) / 6, True, True)         # corner, 5 upper, corner
    outer_low = _mouth_edge(shape, np.arange(5, 0, -1) / 6, True, False)   # right -> left
    inner_up = _mouth_edge(shape, np.arange(0, 5) / 4, False, True)        # corner, 3 upper, corner
    inner_low = _mouth_edge(shape, np.arange(3, 0, -1) / 4, False, False)
    return np.vstack([outer_up, outer_low, inner_up, inner_low])


def local_points(shape: FaceShape) -> Tuple[np.ndarray, np.ndarray]:
    """``(points68, points98)`` of the face model in face-local coordinates."""
    brow_t = np.arange(5) / 4
    left_up, right_up = _brow_edge(shape, -1, brow_t, True), _brow_edge(shape, 1, brow_t, True)
    left_low, right_low = _brow_edge(shape, -1, brow_t[::-1][:4], False), _brow_edge(shape, 1, brow_t[1:], False)
    ridge = _nose_ridge(shape, np.arange(4) / 3)
    base = _nose_base(shape, np.arange(5) / 4)
    mouth = _mouth_points(shape)
    eye68_l, eye68_r = _eye_points(shape, 2)
    eye98_l, eye98_r = _eye_points(shape, 3)
    # iBUG: the right brow runs inner -> outer
    points68 = np.vstack([_contour(shape, 17), left_up, right_up[::-1], ridge, base, eye68_l, eye68_r, mouth])
    pupils = np.array([[-shape.eye_x * shape.a + shape.yaw * shape.a, shape.eye_y * shape.b],
                       [shape.eye_x * shape.a + shape.yaw * shape.a, shape.eye_y * shape.b]])
    points98 = np.vstack([_contour(shape, 33), left_up, left_low,               # 33-37 outer->inner, 38-41 back
                          right_up[::-1], right_low,                            # 42-46 inner->outer, 47-50 back
                          ridge, base, eye98_l, eye98_r, mouth, pupils])
    return points68, points98


# ----------------------------------------------------------------------------------- drawing
def _fill(img: np.ndarray, outline: np.ndarray, colour) -> None:
    cv2.fillPoly(img, [_fix(outline).reshape(-1, 1, 2)], _colour(colour), cv2.LINE_AA, _SHIFT)


def _line(img: np.ndarray, points: np.ndarray, colour, thickness: int, closed: bool = False) -> None:
    cv2.polylines(img, [_fix(points).reshape(-1, 1, 2)], closed, _colour(colour), int(thickness), cv2.LINE_AA, _SHIFT)


def _draw(img: np.ndarray, rng: np.random.Generator, shape: FaceShape, centre: np.ndarray, theta: float,
          vivid_lips: bool) -> None:
    to_image = lambda local: _to_image(np.asarray(local), centre, theta)  # noqa: E731
    a, b = shape.a, shape.b
    dense = np.linspace(0.0, 1.0, _DENSE + 1)
    skin = SKIN_TONES[rng.integers(0, len(SKIN_TONES))] + rng.uniform(-12, 12, size=3)
    if rng.random() < 0.7:
        hair = HAIR_COLOURS[rng.integers(0, len(HAIR_COLOURS))] + rng.uniform(-10, 10, size=3)
        _ellipse(img, to_image([[0.0, -0.16 * b]])[0], (1.08 * a, 1.0 * b), theta, hair)
    _ellipse(img, centre, (a, b), theta, skin)
    _ellipse(img, centre, (a, b), theta, skin * 0.7, max(1, int(2 * b / 70)))  # the contour, visible
    line = max(1, int(round(2 * b / 90)))
    # brows
    brow_colour = skin * rng.uniform(0.25, 0.5)
    for side in (-1, 1):
        outline = np.vstack([_brow_edge(shape, side, dense, True), _brow_edge(shape, side, dense[::-1], False)])
        _fill(img, to_image(outline), brow_colour)
    # eyes
    iris_colour = np.array([60.0, 50.0, 30.0]) + rng.uniform(0, 60, size=3)
    for side in (-1, 1):
        centre_x = side * shape.eye_x * a + shape.yaw * a
        outline = to_image(np.vstack([_lid(shape, centre_x, dense, True), _lid(shape, centre_x, dense[::-1], False)]))
        _fill(img, outline, (235, 235, 235))
        _ellipse(img, to_image([[centre_x, shape.eye_y * b]])[0], (0.045 * b, 0.045 * b), theta, iris_colour)
        _ellipse(img, to_image([[centre_x, shape.eye_y * b]])[0], (0.018 * b, 0.018 * b), theta, (15, 15, 15))
        _line(img, outline, skin * 0.35, line, closed=True)
    # nose
    nose_shade = skin * 0.6
    _line(img, to_image(_nose_ridge(shape, dense)), nose_shade, line)
    _line(img, to_image(_nose_base(shape, dense)), nose_shade * 0.8, line)
    # mouth
    lips = (np.array([60.0, 40.0, 200.0]) if vivid_lips else skin * np.array([0.7, 0.6, 0.95])) \
        + rng.uniform(-15, 15, size=3)
    outer = np.vstack([_mouth_edge(shape, dense, True, True), _mouth_edge(shape, dense[::-1], True, False)])
    _fill(img, to_image(outer), lips)
    if shape.opening > 0:
        inner = np.vstack([_mouth_edge(shape, dense, False, True), _mouth_edge(shape, dense[::-1], False, False)])
        _fill(img, to_image(inner), (30, 25, 40))
    else:
        _line(img, to_image(_mouth_edge(shape, dense, False, True)), lips * 0.5, line)


def render_landmark_face(seed: int, index: int, size: int = 160) -> SyntheticLandmarkFace:
    """Face ``index`` of the set of ``seed``: one face on a ``size x size`` image."""
    if size < 64:
        raise ValueError(f"size must be at least 64, got {size}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 26, int(index)]))
    img = _background(rng, size, size)
    height = size * rng.uniform(0.5, 0.68)
    b = height / 2
    a = b * rng.uniform(0.72, 0.86)
    theta = float(np.clip(rng.normal(0.0, 14.0), -35.0, 35.0))
    yaw = float(rng.uniform(-0.18, 0.18))
    opening = float(rng.uniform(0.0, 0.12)) if rng.random() < 0.4 else 0.0
    shape = FaceShape(a, b, yaw=yaw, eye_y=rng.uniform(-0.13, -0.07), eye_w=rng.uniform(0.16, 0.20),
                      brow_arch=rng.uniform(0.02, 0.07), mouth_y=rng.uniform(0.45, 0.55),
                      mouth_w=rng.uniform(0.26, 0.34), opening=opening)
    hw, hh = _ellipse_extent(a, b, theta)
    centre = np.array([size / 2 + rng.uniform(-0.08, 0.08) * size, size / 2 + rng.uniform(-0.06, 0.06) * size])
    centre = np.clip(centre, [hw + 1, hh + 1], [size - hw - 2, size - hh - 2])
    vivid_lips = bool(rng.random() < 0.1)
    _draw(img, rng, shape, centre, theta, vivid_lips)

    local68, local98 = local_points(shape)
    points68, points98 = _to_image(local68, centre, theta), _to_image(local98, centre, theta)
    box = np.array([round(centre[0] - hw), round(centre[1] - hh), round(centre[0] + hw), round(centre[1] + hh)],
                   dtype=np.float64)

    occluded = bool(rng.random() < 0.1)
    if occluded:
        # an occluder over one side; the points under it keep their true positions (as WFLW's do)
        side = int(rng.integers(0, 2))
        frac = rng.uniform(0.2, 0.4)
        x1 = box[0] - 4 if side == 0 else box[2] - frac * (box[2] - box[0])
        x2 = box[0] + frac * (box[2] - box[0]) if side == 0 else box[2] + 4
        cv2.rectangle(img, tuple(_fix((x1, box[1] - 4)).tolist()), tuple(_fix((x2, box[3] + 4)).tolist()),
                      _colour(rng.uniform(0, 255, size=3)), -1, cv2.LINE_AA, _SHIFT)
    dark = bool(rng.random() < 0.15)
    if dark:
        # one side of the image in shadow
        ramp = np.linspace(rng.uniform(0.25, 0.5), 1.0, size, dtype=np.float32)
        ramp = ramp[::-1] if rng.random() < 0.5 else ramp
        img = np.clip(img.astype(np.float32) * ramp[None, :, None], 0, 255).astype(np.uint8)
    blurred = bool(rng.random() < 0.1)
    if blurred:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.0, 2.0))
    noise = rng.normal(0.0, rng.uniform(0.0, 4.0), size=img.shape)
    img = np.clip(img.astype(np.float64) + noise, 0, 255).astype(np.uint8)

    attributes = {"pose": int(abs(theta) > 25 or abs(yaw) > 0.15), "expression": int(opening > 0.06),
                  "illumination": int(dark), "make-up": int(vivid_lips), "occlusion": int(occluded),
                  "blur": int(blurred)}
    params = {"theta": theta, "yaw": yaw, "a": a, "b": b, "centre": centre.tolist(), "opening": opening}
    return SyntheticLandmarkFace(img, points68, points98, box, attributes, params)


# ----------------------------------------------------------------------------------- writing
def write_synthetic_landmarks(root: PathLike, count: int = 200, size: int = 160, seed: int = 0,
                              layout: str = "wflw", split: str = "synthetic", jpeg_quality: int = 95) -> List[Path]:
    """Write ``count`` faces under ``root`` and return the annotation files written:

    * ``layout="wflw"``: ``root/images/synthetic/<name>.jpg``, ``root/list_98pt_rect_attr_<split>.txt``
      and ``root/list_68pt_rect_attr_<split>.txt`` (paths in the lists relative to ``root/images``);
    * ``layout="300w"``: ``root/<name>.jpg`` and ``root/<name>.pts`` (68 points, 1-based as 300W's).

    Deterministic in ``(seed, count, size)``; files of the same names are overwritten.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    root = Path(root)
    written: List[Path] = []
    lines98: List[str] = []
    lines68: List[str] = []
    for index in range(int(count)):
        face = render_landmark_face(seed, index, size)
        name = f"synthetic_{seed}_{index:05d}"
        ok, data = cv2.imencode(".jpg", face.image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {name}")
        if layout == "300w":
            root.mkdir(parents=True, exist_ok=True)
            (root / f"{name}.jpg").write_bytes(data.tobytes())
            written.append(write_pts(root / f"{name}.pts", face.points68))
        else:
            rel = f"synthetic/{name}.jpg"
            image_path = root / "images" / rel
            image_path.parent.mkdir(parents=True, exist_ok=True)
            image_path.write_bytes(data.tobytes())
            lines98.append(format_wflw_line(face.points98, face.box, face.attributes, rel))
            lines68.append(format_wflw_line(face.points68, face.box, face.attributes, rel))
    if layout == "wflw":
        root.mkdir(parents=True, exist_ok=True)
        written.append(write_wflw_list(root / f"list_98pt_rect_attr_{split}.txt", lines98))
        written.append(write_wflw_list(root / f"list_68pt_rect_attr_{split}.txt", lines68))
    return written

