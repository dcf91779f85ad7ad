"""Built-in synthetic identities: drawn faces with fixed per-identity traits, aligned 112 x 112 crops.

Each identity is a fixed set of traits drawn from ``seed`` and its index: face shape (width, height,
chin), skin, hair and eye colours, hair line and style, eye size and spacing, brow height, thickness
and tilt, nose length and width, mouth width, height and lip colour, optional beard, glasses and
moles at fixed places. Each image varies what a photo varies: pose (in-plane rotation, a small yaw
that shifts the features sideways), scale and position, expression (smile, open mouth, squint),
background, lighting (gain, tint, a gradient), blur, noise and an occluding patch. The face is drawn
on a larger canvas with its true five landmarks, which go through :func:`retinaface.inference.align.norm_crop`
(with a little landmark noise, as from a detector) exactly like a detected face would.

Layout (folder per identity, LFW file names, so :class:`~retinaface.recognition.data.FaceFolderDataset`
and :func:`~retinaface.recognition.data.read_lfw_pairs` read it as they are)::

    root/train/<identity>/<identity>_0001.jpg ...   training identities
    root/test/<identity>/<identity>_0001.jpg ...    held-out identities (none of them in train/)
    root/pairs.txt                                  LFW pairs over test/: "folds per_fold" header,
                                                    folds of identity-disjoint same / different pairs
    root/manifest.json                              the parameters; written last

Deterministic from the parameters: the same call gives byte-identical files. The set is written into
a temporary folder beside ``root`` and renamed into place, so an interrupted run leaves nothing
half-written; a complete set is reused; an existing folder that is something else is refused.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np

from ..inference.align import norm_crop
from ..conventions import ALIGNED_FACE_SIZE

PathLike = Union[str, "os.PathLike[str]"]
FORMAT = "retinaface-synthetic-identities"
VERSION = 1
CANVAS = 160          # drawing canvas; the face's half-width is about 36 px on it
_SUB = 4              # cv2 drawing: 4 fractional bits (1/16 px)


@dataclasses.dataclass
class SyntheticIdentityPaths:
    """Where a synthetic identity set lies, and how it was made."""

    root: Path
    train: Path
    test: Path
    pairs: Path
    manifest: Path
    num_train_identities: int
    num_test_identities: int
    images_per_identity: int
    size: int
    seed: int


def identity_name(index: int) -> str:
    return f"id{index:05d}"


def _traits(seed: int, index: int) -> Dict[str, object]:
    """The fixed look of identity ``index`` (face units: half face width = 1, y down)."""
    rng = np.random.default_rng([seed, 1, index])
    skin_tone = rng.uniform(0, 1)
    skin = np.array([90 + 110 * skin_tone, 120 + 100 * skin_tone, 150 + 90 * skin_tone]) + rng.normal(0, 8, 3)
    hair_dark = rng.uniform(0, 1)
    hair = np.array([20, 30, 40]) + np.array([rng.uniform(0, 80), rng.uniform(20, 120), rng.uniform(30, 170)]) * hair_dark
    traits = {
        "face_h": rng.uniform(1.2, 1.5), "chin": rng.uniform(0.55, 0.9),
        "skin": skin, "hair": hair, "hair_line": rng.uniform(-0.95, -0.6), "hair_side": rng.uniform(0.0, 0.25),
        "hair_volume": rng.uniform(1.02, 1.2),
        "eye_y": rng.uniform(-0.32, -0.18), "eye_dx": rng.uniform(0.32, 0.46), "eye_r": rng.uniform(0.08, 0.14),
        "iris": np.array([rng.uniform(20, 160), rng.uniform(30, 130), rng.uniform(10, 90)]),
        "brow_dy": rng.uniform(0.13, 0.24), "brow_w": rng.uniform(0.04, 0.09), "brow_tilt": rng.uniform(-15, 15),
        "nose_len": rng.uniform(0.16, 0.32), "nose_w": rng.uniform(0.09, 0.18),
        "mouth_y": rng.uniform(0.42, 0.6), "mouth_dx": rng.uniform(0.2, 0.34), "lip": rng.uniform(0.03, 0.08),
        "lip_colour": np.array([rng.uniform(60, 130), rng.uniform(50, 110), rng.uniform(130, 200)]),
        "beard": bool(rng.random() < 0.25), "glasses": bool(rng.random() < 0.2),
        "moles": [(rng.uniform(-0.7, 0.7), rng.uniform(-0.4, 0.8), rng.uniform(0.03, 0.06))
                  for _ in range(int(rng.integers(0, 3)))],
    }
    return traits


def _to_fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * (1 << _SUB)).astype(np.int32)


def _render(traits: Dict[str, object], rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """``(canvas uint8 (CANVAS, CANVAS, 3), landmarks (5, 2))`` of one photo of an identity."""
    import cv2

    t = traits
    # -- the photo's pose and expression
    angle = math.radians(rng.uniform(-25, 25))
    scale = 36.0 * rng.uniform(0.88, 1.12)
    centre = CANVAS / 2 + rng.uniform(-6, 6, 2)
    yaw = rng.uniform(-0.18, 0.18)     # features slide sideways, the far eye narrows
    smile = rng.uniform(-0.03, 0.08)
    mouth_open = max(0.0, rng.uniform(-0.04, 0.06))
    squint = rng.uniform(0.55, 1.0)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def img(points) -> np.ndarray:
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        return (points @ rot.T) * scale + centre

    cos_a, sin_a, cx, cy = math.cos(angle), math.sin(angle), float(centre[0]), float(centre[1])
    unit = 1 << _SUB

    def colour_of(colour) -> Tuple[float, ...]:
        return tuple(min(255.0, max(0.0, float(v))) for v in colour)

    def ellipse(image, c, axes, tilt, colour, thickness=-1, start=0, end=360) -> None:
        # plain floats: this runs ~15 times per photo and numpy's per-call overhead dominated
        x, y = float(c[0]), float(c[1])
        px, py = (x * cos_a - y * sin_a) * scale + cx, (x * sin_a + y * cos_a) * scale + cy
        cv2.ellipse(image, (int(round(px * unit)), int(round(py * unit))),
                    (int(round(float(axes[0]) * scale * unit)), int(round(float(axes[1]) * scale * unit))),
                    math.degrees(angle) + tilt, start, end, colour_of(colour), thickness, cv2.LINE_AA, _SUB)

    def poly(image, points, colour) -> None:
        cv2.fillPoly(image, [_to_fixed(img(points))], colour_of(colour),
                     cv2.LINE_AA, _SUB)

    # -- background: a colour, a gradient and a few blobs
    ends = rng.uniform(0, 255, (2, 1, 3)).astype(np.uint8)
    if rng.random() < 0.5:
        ends = ends.transpose(1, 0, 2)
    canvas = cv2.resize(ends, (CANVAS, CANVAS), interpolation=cv2.INTER_LINEAR)  # a two-colour gradient
    for _ in range(int(rng.integers(0, 4))):
        cv2.circle(canvas, tuple(int(v) for v in rng.integers(0, CANVAS, 2)), int(rng.integers(8, 40)),
                   tuple(float(v) for v in rng.uniform(0, 255, 3)), -1, cv2.LINE_AA)

    skin, hair = np.asarray(t["skin"]), np.asarray(t["hair"])
    face_h = float(t["face_h"])
    # hair behind the head, face, chin
    ellipse(canvas, (0, -0.1), (t["hair_volume"] + t["hair_side"], face_h * t["hair_volume"]), 0, hair)
    ellipse(canvas, (0, 0), (1.0, face_h), 0, skin)
    ellipse(canvas, (0, face_h * 0.35), (t["chin"], face_h * 0.7), 0, skin)
    if t["beard"]:
        ellipse(canvas, (0, face_h * 0.45), (t["chin"] * 0.95, face_h * 0.55), 0, hair * 0.9 + skin * 0.1, -1, 0, 180)
    # hair over the forehead: the top of an ellipse cut at the hair line
    ellipse(canvas, (0, t["hair_line"]), (1.02 + t["hair_side"] * 0.5, face_h * 0.55), 0, hair, -1, 180, 360)

    shift = np.array([yaw, 0.0])
    eyes = np.array([[-t["eye_dx"], t["eye_y"]], [t["eye_dx"], t["eye_y"]]]) + shift
    for side, eye in zip((-1, 1), eyes):
        narrow = 1.0 - 1.5 * max(0.0, side * -yaw)   # the eye turned away narrows
        r = t["eye_r"]
        ellipse(canvas, eye, (r * 1.5 * narrow, r * squint), 0, (235, 235, 235))
        ellipse(canvas, eye, (r * 0.7 * narrow, min(r * 0.7, r * squint)), 0, t["iris"])
        ellipse(canvas, eye, (r * 0.3 * narrow, min(r * 0.3, r * squint)), 0, (15, 15, 15))
        brow = eye + np.array([0.0, -t["brow_dy"]])
        ellipse(canvas, brow, (r * 1.8 * narrow, t["brow_w"]), side * t["brow_tilt"], hair * 0.8)
    if t["glasses"]:
        for eye in eyes:
            ellipse(canvas, eye, (t["eye_r"] * 2.2, t["eye_r"] * 1.7), 0, (30, 30, 30), max(1, int(scale * 0.05)))
    nose_tip = np.array([0.0, t["eye_y"] + t["nose_len"] + 0.12]) + shift * 1.3
    poly(canvas, [[shift[0] * 0.8, t["eye_y"] + 0.02], [nose_tip[0] - t["nose_w"], nose_tip[1]],
                  [nose_tip[0] + t["nose_w"], nose_tip[1]]], skin * 0.8)
    mouth_centre = np.array([0.0, t["mouth_y"]]) + shift
    corners = mouth_centre + np.array([[-t["mouth_dx"], -smile], [t["mouth_dx"], -smile]])
    lip = t["lip"]
    poly(canvas, [corners[0], mouth_centre + [0, -lip], corners[1], mouth_centre + [0, lip + mouth_open + smile * 0.5]],
         t["lip_colour"])
    if mouth_open > 0.01:
        ellipse(canvas, mouth_centre + [0, smile * 0.2], (t["mouth_dx"] * 0.6, mouth_open * 0.8), 0, (30, 20, 40))
    for mx, my, mr in t["moles"]:
        ellipse(canvas, np.array([mx, my]) + shift * 0.5, (mr, mr), 0, skin * 0.45)
    landmarks = img(np.vstack([eyes, nose_tip[None], corners]))
    return canvas, landmarks


_NOISE: Dict[int, np.ndarray] = {}


def _noise_bank(size: int) -> np.ndarray:
    """A fixed tile of unit Gaussian noise; photos take a random window of it (drawing fresh noise
    for every pixel of every photo was two thirds of the generation time)."""
    side = max(384, 2 * size)
    if side not in _NOISE:
        _NOISE[side] = np.random.default_rng(12345).standard_normal((side, side, 3), dtype=np.float32)
    return _NOISE[side]


def _photo(traits: Dict[str, object], rng: np.random.Generator, size: int) -> np.ndarray:
    """One aligned ``(size, size, 3)`` crop: render, align on jittered landmarks, photometric changes."""
    import cv2

    canvas, landmarks = _render(traits, rng)
    crop = norm_crop(canvas, landmarks + rng.normal(0, 1.0, landmarks.shape), size)
    # photometric changes with OpenCV's whole-image arithmetic (numpy broadcasting over the
    # 3-channel axis was most of the cost)
    gain = rng.uniform(0.7, 1.3) * rng.uniform(0.9, 1.1, 3)
    image = cv2.multiply(crop.astype(np.float32), tuple(float(g) for g in gain) + (0.0,))
    ramp = np.float32(rng.uniform(-35, 35)) * np.array([[-1.0, 1.0]], np.float32)
    ramp = ramp if rng.random() < 0.5 else ramp.T
    image += cv2.resize(ramp, (size, size), interpolation=cv2.INTER_LINEAR)[:, :, None]  # lighting gradient
    if rng.random() < 0.35:   # an occluding patch (a hand, a scarf, a sticker)
        h, w = (rng.uniform(0.15, 0.4, 2) * size).astype(int)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        image[y:y + h, x:x + w] = rng.uniform(0, 255, 3)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
    bank = _noise_bank(size)
    y, x = rng.integers(0, bank.shape[0] - size, 2)
    image = cv2.scaleAdd(np.ascontiguousarray(bank[y:y + size, x:x + size]), float(rng.uniform(0, 8)), image)
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_identities(folder: Path, first: int, count: int, images: int, size: int, seed: int) -> None:
    import cv2

    for index in range(first, first + count):
        traits = _traits(seed, index)
        name = identity_name(index)
        (folder / name).mkdir(parents=True)
        for number in range(1, images + 1):
            crop = _photo(traits, np.random.default_rng([seed, 2, index, number]), size)
            ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
            (folder / name / f"{name}_{number:04d}.jpg").write_bytes(data.tobytes())


def _pairs_lines(test_names: List[str], images: int, folds: int, per_fold: int, seed: int) -> List[str]:
    """LFW ``pairs.txt`` lines: header, then per fold ``per_fold`` same and ``per_fold`` different
    pairs among that fold's identities (folds are identity-disjoint, like LFW's)."""
    rng = np.random.default_rng([seed, 3])
    groups = [test_names[f::folds] for f in range(folds)]
    lines = [f"{folds}\t{per_fold}"]
    for group in groups:
        same, seen = [], set()
        while len(same) < per_fold:
            name = group[int(rng.integers(len(group)))]
            i, j = sorted(rng.choice(images, 2, replace=False) + 1)
            if (name, i, j) not in seen:
                seen.add((name, i, j))
                same.append(f"{name}\t{i}\t{j}")
        different, seen = [], set()
        while len(different) < per_fold:
            a, b = rng.choice(len(group), 2, replace=False)
            i, j = rng.integers(1, images + 1, 2)
            key = (group[a], int(i), group[b], int(j))
            if key not in seen:
                seen.add(key)
                different.append(f"{group[a]}\t{i}\t{group[b]}\t{j}")
        lines += same + different
    return lines


def generate_synthetic_identities(root: PathLike, num_train_identities: int = 200, num_test_identities: int = 50,
                                  images_per_identity: int = 20, size: int = ALIGNED_FACE_SIZE, seed: int = 0,
                                  folds: int = 10, pairs_per_fold: int = 30) -> SyntheticIdentityPaths:
    """Write (or reuse) a synthetic identity set under ``root`` (module doc) and say where it is.

    ``folds`` x (``pairs_per_fold`` same + ``pairs_per_fold`` different) verification pairs over the
    ``num_test_identities`` held-out identities. Raises ``ValueError`` for impossible parameters, or
    when ``root`` holds something else (another set's manifest, or files without one).
    """
    if num_train_identities < 2 or images_per_identity < 2 or size < 16:
        raise ValueError("need at least 2 training identities, 2 images per identity and a 16-pixel crop size")
    if folds < 1 or pairs_per_fold < 1 or num_test_identities < 2 * folds:
        raise ValueError(f"{folds} identity-disjoint folds need at least {2 * folds} test identities, "
                         f"got {num_test_identities}")
    smallest = num_test_identities // folds  # identities in the smallest fold
    if pairs_per_fold > min(smallest * images_per_identity * (images_per_identity - 1) // 2,
                            smallest * (smallest - 1) * images_per_identity ** 2):
        raise ValueError(f"{pairs_per_fold} distinct same and different pairs per fold need more than "
                         f"{smallest} identities x {images_per_identity} images per fold")
    root = Path(root)
    params = {"format": FORMAT, "version": VERSION, "num_train_identities": int(num_train_identities),
              "num_test_identities": int(num_test_identities), "images_per_identity": int(images_per_identity),
              "size": int(size), "seed": int(seed), "folds": int(folds), "pairs_per_fold": int(pairs_per_fold)}
    paths = SyntheticIdentityPaths(root, root / "train", root / "test", root / "pairs.txt", root / "manifest.json",
                                   int(num_train_identities), int(num_test_identities), int(images_per_identity),
                                   int(size), int(seed))
    manifest = root / "manifest.json"
    if manifest.is_file():
        try:
            existing = json.loads(manifest.read_text())
        except (OSError, ValueError):
            raise ValueError(f"{manifest}: unreadable manifest; remove {root} to regenerate") from None
        if existing != params:
            changed = sorted(k for k in set(params) | set(existing) if params.get(k) != existing.get(k))
            raise ValueError(f"{root} holds a synthetic identity set made with other parameters ({', '.join(changed)}); "
                             "choose another folder or remove it")
        return paths
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root} exists and is not a synthetic identity set (no manifest.json); refusing to write into it")

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_identities(staging / "train", 0, num_train_identities, images_per_identity, size, seed)
        _write_identities(staging / "test", num_train_identities, num_test_identities, images_per_identity, size, seed)
        test_names = [identity_name(i) for i in range(num_train_identities, num_train_identities + num_test_identities)]
        lines = _pairs_lines(test_names, images_per_identity, folds, pairs_per_fold, seed)
        (staging / "pairs.txt").write_text("\n".join(lines) + "\n")
        (staging / "manifest.json").write_text(json.dumps(params, indent=1, sort_keys=True) + "\n")
        if root.is_dir():
            root.rmdir()  # empty (checked above)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


__all__ = ["SyntheticIdentityPaths", "generate_synthetic_identities", "identity_name"]
