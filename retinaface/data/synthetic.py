"""The built-in synthetic WIDER FACE: drawn faces with exact boxes and five landmarks.

Owns :func:`generate_synthetic_widerface`, which writes a small data set in the layouts the real
data uses, so every reader, the training loop and the evaluation run end to end without the real
data:

* ``train/label.txt`` + ``train/images/<event>/<file>.jpg`` (Pytorch_Retinaface layout, with
  landmark visibility flags and a blur field);
* ``val/wider_val.txt`` + ``val/images/<event>/<file>.jpg``, ``val/label.txt`` (same layout as
  train, for a validation loss) and the official-style ground truth
  ``val/ground_truth/wider_{face,easy,medium,hard}_val.mat`` (easy: faces at least
  :data:`EASY_MIN_HEIGHT` px tall, medium: :data:`MEDIUM_MIN_HEIGHT`, hard: all);
* ``manifest.json``, written last: a root holding a manifest with the same parameters is complete
  and is not generated again.

Each face is a skin-coloured ellipse with hair, eyes, brows, a nose and a mouth, placed with an
in-plane rotation, a slight anisotropic scale and a small yaw; its box (the bounding box of the
face ellipse) and landmarks (left eye, right eye, nose tip, left and right mouth corner, as seen
in the image) come from the same geometry that draws it. Backgrounds hold gradients, random
shapes, lines and noise, and face-like distractors (featureless skin ellipses, coloured ellipses
with two dots, pairs of dots). Everything is a function of the seed: each image draws from its
own generator seeded by ``(seed, split, index)``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import time
from statistics import NormalDist
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..fileio import atomic_write
from ..formats.ground_truth import WiderGroundTruth, save_ground_truth

PathLike = Union[str, "os.PathLike[str]"]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MANIFEST_NAME = "manifest.json"
_IN_PROGRESS = ".synthetic_generation_in_progress"

EASY_MIN_HEIGHT = 50
MEDIUM_MIN_HEIGHT = 25

# Skin tones, light to dark (BGR).
SKIN_TONES = np.array([(172, 219, 255), (150, 200, 245), (125, 194, 241), (105, 172, 224),
                       (66, 134, 198), (50, 105, 170), (36, 85, 141), (40, 58, 92)], dtype=np.float64)
HAIR_COLOURS = np.array([(20, 20, 25), (25, 40, 65), (40, 70, 110), (90, 170, 210), (150, 150, 155),
                         (30, 50, 140)], dtype=np.float64)

# Standard normal quantiles at the centres of 256 equal-probability bins.
_NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((u + 0.5) / 256) for u in range(256)])

_SHIFT = 4                # fractional bits for sub-pixel drawing
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class _Scene:
    """How an event's images look: face count range and face height distribution."""

    name: str
    faces: Tuple[int, int]           # inclusive range of faces per image
    heights: Tuple[float, float]     # log-uniform range of face heights (px) for most faces
    wide_prob: float                 # probability of a face from the wide 8..300 px range instead


SCENES = (
    _Scene("0--Synthetic", (1, 8), (16, 150), 0.25),
    _Scene("1--Crowd", (8, 22), (14, 60), 0.10),
    _Scene("2--Portrait", (1, 2), (90, 280), 0.10),
    _Scene("3--Street", (2, 10), (16, 120), 0.20),
    _Scene("4--Group", (3, 12), (24, 90), 0.15),
)


@dataclass(frozen=True)
class SyntheticPaths:
    """Where :func:`generate_synthetic_widerface` put things."""

    root: Path
    train_labels: Path      # train/label.txt
    train_images: Path      # train/images
    val_list: Path          # val/wider_val.txt
    val_labels: Path        # val/label.txt
    val_images: Path        # val/images
    ground_truth: Path      # val/ground_truth (the four .mat files)
    manifest: Path


@dataclass
class _Face:
    box: Tuple[int, int, int, int]      # x y w h (integers, like WIDER)
    landmarks: np.ndarray               # (5, 2) float
    flags: np.ndarray                   # (5,) 0 visible, 1 occluded
    blur: float


def _paths(root: Path) -> SyntheticPaths:
    return SyntheticPaths(root=root, train_labels=root / "train" / "label.txt",
                          train_images=root / "train" / "images", val_list=root / "val" / "wider_val.txt",
                          val_labels=root / "val" / "label.txt", val_images=root / "val" / "images",
                          ground_truth=root / "val" / "ground_truth", manifest=root / MANIFEST_NAME)


# ---------------------------------------------------------------------------- drawing helpers
def _fix(points: np.ndarray) -> np.ndarray:
    """Pixel coordinates -> OpenCV's fixed point (``shift`` fractional bits). Pixel centres are at
    integer coordinates in OpenCV drawing; labels use the same convention."""
    return np.round(np.asarray(points, dtype=np.float64) * _ONE).astype(np.int32)


def _colour(c) -> Tuple[int, int, int]:
    c = np.clip(np.asarray(c, dtype=np.float64), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def _ellipse(img, centre, axes, angle_deg, colour, thickness=-1) -> None:
    c = _fix(centre)
    ax = _fix(np.maximum(axes, 0.3))
    cv2.ellipse(img, (int(c[0]), int(c[1])), (int(ax[0]), int(ax[1])), float(angle_deg), 0, 360,
                _colour(colour), thickness, cv2.LINE_AA, _SHIFT)


def _polyline(img, points, colour, thickness) -> None:
    cv2.polylines(img, [_fix(points).reshape(-1, 1, 2)], False, _colour(colour), int(thickness),
                  cv2.LINE_AA, _SHIFT)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Gradient + random shapes and lines; noise is added at the end of the image."""
    c1, c2 = _random_colour(rng), _random_colour(rng)
    angle = rng.uniform(0, 2 * math.pi)
    # A linear gradient is computed on a coarse grid and resized up: bilinear resizing reproduces
    # a linear ramp exactly and costs a fraction of a full-size float computation.
    step = 8
    gh, gw = height // step + 2, width // step + 2
    t = (np.arange(gw, dtype=np.float32)[None, :] * math.cos(angle)
         + np.arange(gh, dtype=np.float32)[:, None] * math.sin(angle))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    coarse = (c1[None, None, :] * (1 - t[..., None]) + c2[None, None, :] * t[..., None]).astype(np.float32)
    img = cv2.resize(coarse, (gw * step, gh * step), interpolation=cv2.INTER_LINEAR)[:height, :width]
    img = np.ascontiguousarray(img.astype(np.uint8))
    side = min(height, width)
    for _ in range(int(rng.integers(6, 26))):
        kind = rng.integers(0, 5)
        colour = _random_colour(rng)
        thick = -1 if rng.random() < 0.5 else int(rng.integers(1, 5))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        size = side * rng.uniform(0.03, 0.35)
        if kind == 0:
            p2 = (x + rng.uniform(-1, 1) * size, y + rng.uniform(-1, 1) * size)
            cv2.rectangle(img, tuple(_fix((x, y)).tolist()), tuple(_fix(p2).tolist()), _colour(colour), thick,
                          cv2.LINE_AA, _SHIFT)
        elif kind == 1:
            cv2.circle(img, tuple(_fix((x, y)).tolist()), int(size * _ONE / 2), _colour(colour), thick,
                       cv2.LINE_AA, _SHIFT)
        elif kind == 2:
            pts = np.stack([x + rng.uniform(-1, 1, 5) * size, y + rng.uniform(-1, 1, 5) * size], axis=1)
            if thick < 0:
                cv2.fillPoly(img, [_fix(pts).reshape(-1, 1, 2)], _colour(colour), cv2.LINE_AA, _SHIFT)
            else:
                _polyline(img, pts, colour, thick)
        elif kind == 3:
            pts = np.stack([rng.uniform(0, width, 2), rng.uniform(0, height, 2)], axis=1)
            _polyline(img, pts, colour, int(rng.integers(1, 4)))
        else:
            # Stripes: a texture with strong edges.
            n = int(rng.integers(3, 8))
            dx = rng.uniform(4, 14)
            for j in range(n):
                pts = np.array([(x + j * dx, y), (x + j * dx + size * 0.3, y + size)])
                _polyline(img, pts, colour, 2)
    return img


def _face_geometry(rng: np.random.Generator, height: float) -> Dict[str, float]:
    """Shape parameters of one face whose ellipse is ``height`` px tall before rotation."""
    b = height / 2
    a = b * rng.uniform(0.72, 0.86) * rng.uniform(0.9, 1.1)  # aspect, plus slight anisotropy
    theta = float(np.clip(rng.normal(0.0, 12.0), -30.0, 30.0))
    return {"a": a, "b": b, "theta": theta, "yaw": rng.uniform(-0.15, 0.15)}


def _to_image(local: np.ndarray, centre: np.ndarray, theta_deg: float) -> np.ndarray:
    """Face-local points (x right, y down, relative to the centre) -> image pixels. Same rotation
    sense as ``cv2.ellipse``'s angle."""
    t = math.radians(theta_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return local @ rot.T + centre


def _ellipse_extent(a: float, b: float, theta_deg: float) -> Tuple[float, float]:
    """Half width and half height of the bounding box of a rotated ellipse."""
    t = math.radians(theta_deg)
    return math.hypot(a * math.cos(t), b * math.sin(t)), math.hypot(a * math.sin(t), b * math.cos(t))


def _local_landmarks(g: Dict[str, float]) -> np.ndarray:
    a, b, yaw = g["a"], g["b"], g["yaw"]
    shift = yaw * a  # a turned head moves the inner features sideways; the nose moves most
    return np.array([(-0.38 * a + shift, -0.16 * b), (0.38 * a + shift, -0.16 * b),
                     (1.6 * shift, 0.18 * b), (-0.32 * a + shift, 0.48 * b), (0.32 * a + shift, 0.48 * b)])


def _draw_face(img: np.ndarray, rng: np.random.Generator, centre: np.ndarray, g: Dict[str, float]) -> np.ndarray:
    """Draw one face; returns its five landmarks in image pixels."""
    a, b, theta = g["a"], g["b"], g["theta"]
    size = 2 * b
    skin = SKIN_TONES[rng.integers(0, len(SKIN_TONES))] + rng.uniform(-12, 12, size=3)
    skin *= rng.uniform(0.85, 1.1)  # lighting
    if rng.random() < 0.75:
        hair = HAIR_COLOURS[rng.integers(0, len(HAIR_COLOURS))] + rng.uniform(-10, 10, size=3)
        hair_centre = _to_image(np.array([[0.0, -0.14 * b]]), centre, theta)[0]
        _ellipse(img, hair_centre, (1.1 * a, 1.02 * b), theta, hair)
    _ellipse(img, centre, (a, b), theta, skin)
    if size >= 24:
        # A slightly darker rim keeps the outline visible on skin-coloured backgrounds.
        _ellipse(img, centre, (a, b), theta, skin * 0.8, max(1, int(size / 60)))

    local = _local_landmarks(g)
    points = _to_image(local, centre, theta)
    dark = np.array([35.0, 30.0, 30.0]) + rng.uniform(0, 25)
    line = max(1, int(round(size / 35)))
    # Brows.
    if size >= 16:
        brow_colour = skin * 0.45
        for side in (-1, 1):
            ex, ey = local[0 if side < 0 else 1]
            brow = np.array([(ex - 0.16 * a, ey - 0.16 * b), (ex, ey - 0.2 * b), (ex + 0.16 * a, ey - 0.16 * b)])
            _polyline(img, _to_image(brow, centre, theta), brow_colour, line)
    # Eyes: white with a dark iris on larger faces, dark blobs on small ones.
    for p in points[:2]:
        if size >= 28:
            _ellipse(img, p, (0.17 * a, 0.085 * b), theta, (235, 235, 235))
            _ellipse(img, p, (0.075 * a, 0.075 * a), theta, dark)
        else:
            _ellipse(img, p, (max(0.14 * a, 0.7), max(0.07 * b, 0.6)), theta, dark)
    # Nose: a ridge down to the tip and a shaded tip.
    nose_shade = skin * 0.62
    ridge = np.array([(local[2, 0] * 0.6, -0.08 * b), local[2]])
    _polyline(img, _to_image(ridge, centre, theta), nose_shade, line)
    _ellipse(img, points[2], (0.1 * a, 0.05 * b), theta, nose_shade)
    # Mouth: a curve through both corners (smile, neutral or open).
    lips = np.array([150.0, 60.0, 70.0])[::-1] * rng.uniform(0.5, 1.0)
    mid_drop = rng.uniform(-0.02, 0.12) * b
    t = np.linspace(0, 1, 9)[:, None]
    p0, p2 = local[3], local[4]
    p1 = (p0 + p2) / 2 + np.array([0.0, 2 * mid_drop])
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2  # quadratic Bezier
    _polyline(img, _to_image(curve, centre, theta), lips, max(1, int(round(size / 25))))
    return points


def _draw_distractor(img: np.ndarray, rng: np.random.Generator, centre: np.ndarray, height: float) -> None:
    """Face-like things that are not faces."""
    kind = rng.integers(0, 3)
    b = height / 2
    a = b * rng.uniform(0.65, 0.95)
    theta = rng.uniform(-40, 40)
    if kind == 0:    # a skin-coloured ellipse with no eyes or mouth
        _ellipse(img, centre, (a, b), theta, SKIN_TONES[rng.integers(0, len(SKIN_TONES))] + rng.uniform(-15, 15, 3))
    elif kind == 1:  # a non-skin ellipse with two dots
        colour = rng.choice([(200, 80, 40), (60, 160, 60), (200, 200, 60), (150, 60, 150)])
        _ellipse(img, centre, (a, b), theta, np.asarray(colour, dtype=np.float64) + rng.uniform(-20, 20, 3))
        for p in _to_image(np.array([(-0.35 * a, -0.2 * b), (0.35 * a, -0.2 * b)]), centre, theta):
            _ellipse(img, p, (0.12 * a, 0.12 * a), 0, (20, 20, 20))
    else:            # two dark dots on the background
        for p in _to_image(np.array([(-0.35 * a, 0.0), (0.35 * a, 0.0)]), centre, theta):
            _ellipse(img, p, (0.12 * a, 0.1 * a), 0, (25, 25, 25))


def _sample_height(rng: np.random.Generator, scene: _Scene, max_height: float) -> float:
    lo, hi = scene.heights
    if rng.random() < scene.wide_prob:
        lo, hi = 8.0, 300.0
    hi = min(hi, max_height)
    lo = min(lo, hi)
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _render_image(seed: int, split_id: int, index: int, scene: _Scene, height: int, width: int
                  ) -> Tuple[np.ndarray, List[_Face]]:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), split_id, index]))
    img = _background(rng, height, width)

    # Face layout first (so distractors can avoid faces), drawing after.
    n_faces = int(rng.integers(scene.faces[0], scene.faces[1] + 1))
    taken: List[np.ndarray] = []   # x1 y1 x2 y2 of the space each face (with hair) occupies
    planned = []
    for _ in range(n_faces):
        for _attempt in range(30):
            h = _sample_height(rng, scene, 0.9 * min(height, width))
            g = _face_geometry(rng, h)
            hw, hh = _ellipse_extent(g["a"], g["b"], g["theta"])
            if 2 * hw + 4 > width or 2 * hh + 4 > height:
                continue
            cx = rng.uniform(hw + 1, width - hw - 1)
            cy = rng.uniform(hh + 1, height - hh - 1)
            space = np.array([cx - hw * 1.15, cy - hh * 1.3, cx + hw * 1.15, cy + hh * 1.1])
            if any(space[0] < t[2] and t[0] < space[2] and space[1] < t[3] and t[1] < space[3] for t in taken):
                continue
            taken.append(space)
            planned.append((np.array([cx, cy]), g, hw, hh))
            break

    for _ in range(int(rng.integers(0, 4))):
        h = _sample_height(rng, scene, 0.6 * min(height, width))
        c = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        box = np.array([c[0] - h, c[1] - h, c[0] + h, c[1] + h])
        if any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken):
            continue
        _draw_distractor(img, rng, c, h)

    faces: List[_Face] = []
    for centre, g, hw, hh in planned:
        points = _draw_face(img, rng, centre, g)
        x1, y1 = int(round(centre[0] - hw)), int(round(centre[1] - hh))
        x2, y2 = int(round(centre[0] + hw)), int(round(centre[1] + hh))
        flags = np.zeros(5)
        if rng.random() < 0.08 and (y2 - y1) >= 20:
            # An occluder over one side of the face; the landmarks under it are flagged.
            side = rng.integers(0, 2)
            frac = rng.uniform(0.2, 0.35)
            ox1 = x1 - 3 if side == 0 else x2 - frac * (x2 - x1)
            ox2 = x1 + frac * (x2 - x1) if side == 0 else x2 + 3
            oy1, oy2 = y1 - 3, y2 + 3
            cv2.rectangle(img, tuple(_fix((ox1, oy1)).tolist()), tuple(_fix((ox2, oy2)).tolist()),
                          _colour(_random_colour(rng)), -1, cv2.LINE_AA, _SHIFT)
            covered = (points[:, 0] >= ox1) & (points[:, 0] <= ox2)
            flags[covered] = 1.0
        faces.append(_Face((x1, y1, x2 - x1, y2 - y1), points, flags, 0.0))

    blur = 0.0
    if rng.random() < 0.15:
        blur = float(rng.uniform(0.5, 1.2))
        img = cv2.GaussianBlur(img, (0, 0), blur)
    noise_sigma = rng.uniform(0, 6)
    if noise_sigma > 0.5:
        # Gaussian noise through a 256-entry inverse-CDF table applied to random bytes: about
        # five times faster than drawing normal floats for every pixel.
        uniform = np.frombuffer(rng.bytes(img.size), dtype=np.uint8).reshape(img.shape)
        noise = cv2.LUT(uniform, np.round(_NORMAL_QUANTILES * noise_sigma).astype(np.int16))
        img = cv2.add(img, noise, dtype=cv2.CV_8U)  # saturating add
    for f in faces:
        f.blur = round(blur, 2)
    return img, faces


# ---------------------------------------------------------------------------- writing
def _label_block(rel: str, faces: Sequence[_Face]) -> List[str]:
    lines = [f"# {rel}"]
    for f in faces:
        x, y, w, h = f.box
        parts = [str(x), str(y), str(w), str(h)]
        for (px, py), flag in zip(f.landmarks, f.flags):
            parts += [f"{px:.3f}", f"{py:.3f}", f"{flag:.1f}"]
        parts.append(f"{f.blur:.2f}")
        lines.append(" ".join(parts))
    return lines


def _generate_split(root: Path, split: str, split_id: int, count: int, seed: int, height: int, width: int,
                    quality: int) -> List[Tuple[str, str, List[_Face]]]:
    """Render and write ``count`` images; returns ``(event, name, faces)`` grouped by event."""
    per_event: Dict[int, List[Tuple[str, List[_Face]]]] = {i: [] for i in range(len(SCENES))}
    for index in range(count):
        e = index % len(SCENES)
        scene = SCENES[e]
        img, faces = _render_image(seed, split_id, index, scene, height, width)
        short = scene.name.split("--", 1)[1]
        name = f"{e}_{short}_{split}_{index:05d}"
        ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {name}")
        out = root / split / "images" / scene.name / f"{name}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data.tobytes())
        per_event[e].append((name, faces))
    return [(SCENES[e].name, name, faces) for e in sorted(per_event) for name, faces in per_event[e]]


def _write_labels(path: Path, items: Sequence[Tuple[str, str, List[_Face]]]) -> None:
    lines: List[str] = []
    for event, name, faces in items:
        lines += _label_block(f"{event}/{name}.jpg", faces)
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def _write_ground_truth(gt_dir: Path, items: Sequence[Tuple[str, str, List[_Face]]]) -> None:
    events: List[str] = []
    images: List[List[str]] = []
    boxes: List[List[np.ndarray]] = []
    keep: Dict[str, List[List[np.ndarray]]] = {"easy": [], "medium": [], "hard": []}
    for event, name, faces in items:
        if not events or events[-1] != event:
            events.append(event)
            images.append([])
            boxes.append([])
            for lists in keep.values():
                lists.append([])
        b = np.array([f.box for f in faces], dtype=np.int32).reshape(-1, 4)
        images[-1].append(name)
        boxes[-1].append(b)
        heights = b[:, 3]
        index = np.arange(1, len(b) + 1)
        keep["easy"][-1].append(index[heights >= EASY_MIN_HEIGHT])
        keep["medium"][-1].append(index[heights >= MEDIUM_MIN_HEIGHT])
        keep["hard"][-1].append(index)
    save_ground_truth(WiderGroundTruth(events, images, boxes, keep), gt_dir)


def _manifest_params(num_train: int, num_val: int, image_size: Tuple[int, int], seed: int, quality: int) -> dict:
    return {"generator": "retinaface.data.synthetic", "version": GENERATOR_VERSION, "num_train": int(num_train),
            "num_val": int(num_val), "image_size": [int(image_size[0]), int(image_size[1])], "seed": int(seed),
            "jpeg_quality": int(quality)}


def _is_complete(paths: SyntheticPaths, params: dict) -> bool:
    try:
        manifest = json.loads(paths.manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if manifest.get("params") != params:
        return False
    needed = [paths.train_labels, paths.val_list, paths.val_labels]
    needed += [paths.ground_truth / f"wider_{s}_val.mat" for s in ("face", "easy", "medium", "hard")]
    needed += [paths.root / p for p in manifest.get("images", [])]
    return all(p.is_file() for p in needed)


def generate_synthetic_widerface(root: PathLike, num_train: int = 400, num_val: int = 100,
                                 image_size: Tuple[int, int] = (480, 640), seed: int = 0,
                                 jpeg_quality: int = 92, overwrite: bool = False) -> SyntheticPaths:
    """Write a synthetic WIDER FACE under ``root`` (see the module docstring for the layout) and
    return where things are. ``image_size`` is ``(height, width)``.

    Deterministic in its parameters. Returns at once when ``root`` already holds a complete set
    made with the same parameters (unless ``overwrite``). Refuses (``FileExistsError``) to write
    into a non-empty folder that this generator did not create, so real data is never replaced.
    """
    root = Path(root)
    paths = _paths(root)
    height, width = int(image_size[0]), int(image_size[1])
    if height < 64 or width < 64:
        raise ValueError(f"image_size must be at least 64 x 64, got {image_size}")
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must be >= 0")
    params = _manifest_params(num_train, num_val, (height, width), seed, jpeg_quality)
    if not overwrite and _is_complete(paths, params):
        logger.info("synthetic data set already complete at %s", root)
        return paths

    ours = paths.manifest.exists() or (root / _IN_PROGRESS).exists()
    if root.exists() and any(root.iterdir()) and not ours:
        raise FileExistsError(f"{root} is not empty and holds no synthetic-data manifest; refusing to "
                              f"generate synthetic data into it")
    root.mkdir(parents=True, exist_ok=True)
    (root / _IN_PROGRESS).touch()
    if paths.manifest.exists():
        paths.manifest.unlink()
    for sub in ("train", "val"):
        shutil.rmtree(root / sub, ignore_errors=True)

    start = time.perf_counter()
    train = _generate_split(root, "train", 0, num_train, seed, height, width, jpeg_quality)
    val = _generate_split(root, "val", 1, num_val, seed, height, width, jpeg_quality)
    _write_labels(paths.train_labels, train)
    _write_labels(paths.val_labels, val)
    paths.val_images.mkdir(parents=True, exist_ok=True)
    with atomic_write(paths.val_list, "w", encoding="utf-8") as handle:
        handle.write("".join(f"/{event}/{name}.jpg\n" for event, name, _ in val))
    _write_ground_truth(paths.ground_truth, val)

    images = [f"train/images/{e}/{n}.jpg" for e, n, _ in train] + [f"val/images/{e}/{n}.jpg" for e, n, _ in val]
    manifest = {"params": params,
                "counts": {"train_images": len(train), "train_faces": sum(len(f) for *_, f in train),
                           "val_images": len(val), "val_faces": sum(len(f) for *_, f in val)},
                "images": images}
    with atomic_write(paths.manifest, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
    (root / _IN_PROGRESS).unlink()
    logger.info("synthetic data set written to %s in %.1f s (%d train, %d val images)", root,
                time.perf_counter() - start, len(train), len(val))
    return paths


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic WIDER FACE data set.")
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = generate_synthetic_widerface(args.root, args.num_train, args.num_val, (args.height, args.width),
                                         args.seed, overwrite=args.overwrite)
    print(paths.root)


if __name__ == "__main__":
    main()
