"""Readers and writers of the dense-landmark data sets' own annotation files.

Every reader returns :class:`LandmarkSample` records, and every problem in a file raises
:class:`LandmarkFormatError` (a ``ValueError``) whose message is one line starting with
``path:lineno:`` (for ``.mat`` files, whose records have no lines, the number is the 1-based face
record, or 0 for the file as a whole).

Coordinates: points are ``(K, 2)`` float64 ``x, y`` in image pixels, in the toolkit's convention:
**0-based, pixel centres at integer coordinates** (the top-left pixel's centre is ``(0, 0)``, as in
OpenCV). A format whose files count from 1 (MATLAB's convention) has its ``origin`` subtracted on
reading and added back on writing:

* 300W ``.pts``: ``origin=1`` (the iBUG files are 1-based; menpo subtracts 1 the same way).
* WFLW lists: ``origin=0`` (values as stored; WFLW's own evaluation and the public PyTorch code use
  them as they are).
* AFLW2000-3D ``.mat`` (``pt2d``): ``origin=0`` (as stored; PRNet's and 3DDFA's evaluations use them
  as they are). A point that AFLW does not mark is stored as ``-1`` and comes back with
  ``valid[i] = False``.
* COFW ``.mat``: ``origin=1`` (annotated and stored by MATLAB code, RCPR).

NME is translation invariant, so ``origin`` never changes a metric; it matters when points meet
image pixels (crops, drawing, training).

Formats:

* 300W ``.pts``: ``version: 1``, ``n_points: 68``, ``{``, one ``x y`` line per point, ``}``; the image
  is the file beside it with the same stem.
* WFLW ``list_98pt_rect_attr_*.txt``: one face a line, 196 coordinates ``x0 y0 ... x97 y97``, the face
  box ``x_min y_min x_max y_max``, six attribute flags (pose, expression, illumination, make-up,
  occlusion, blur: 0 or 1) and the image path (relative to WFLW's ``WFLW_images``). The 68-point
  variant (``list_68pt_rect_attr_*.txt``) has 136 coordinates in the same layout.
* AFLW2000-3D ``.mat`` (PRNet / 3DDFA release): ``pt2d`` ``2 x 21`` (AFLW's 21 manual points) and
  ``pt3d_68`` ``3 x 68`` (the fitted 68 points; read as the points with ``points="pt3d_68"``).
* COFW ``COFW_test_color.mat`` / ``COFW_train_color.mat``: ``IsT`` / ``IsTr`` (a cell of images),
  ``phisT`` / ``phisTr`` (one row per face: x of 29 points, y of 29 points, 29 occlusion flags with
  1 = occluded) and ``bboxesT`` / ``bboxesTr`` (``x y w h``). MATLAB v7.3 files (HDF5) are read
  with h5py when it is installed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..fileio import atomic_write

PathLike = Union[str, "os.PathLike[str]"]

PTS_ORIGIN = 1.0
WFLW_ORIGIN = 0.0
AFLW2000_ORIGIN = 0.0
COFW_ORIGIN = 1.0

# WFLW's six attribute flags, in the order of its list files (and of its six test subsets).
WFLW_ATTRIBUTES: Tuple[str, ...] = ("pose", "expression", "illumination", "make-up", "occlusion", "blur")
IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpg", ".png", ".jpeg", ".ppm", ".bmp", ".JPG", ".PNG")

FORMAT_PTS = "300w-pts"
FORMAT_WFLW = "wflw"
FORMAT_AFLW2000 = "aflw2000"
FORMAT_COFW = "cofw"


class LandmarkFormatError(ValueError):
    """A malformed annotation file; the message is ``path:lineno: what is wrong``."""

    def __init__(self, path: PathLike, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = str(path)
        self.line = int(line)


@dataclass
class LandmarkSample:
    """One annotated face.

    ``image_path``: the image as the annotation names it (joined to ``image_root`` when the reader
    was given one; ``None`` when the image is embedded, see ``image``); ``points``: ``(K, 2)``
    float64 in 0-based pixel-centre coordinates; ``box``: ``(4,)`` ``x_min y_min x_max y_max`` or
    ``None``; ``attributes``: per-face facts of the data set (WFLW's six flags as ints, COFW's
    per-point ``occluded`` array, ...); ``valid``: ``(K,)`` bool, ``False`` where the file marks a
    point as absent, ``None`` when all are present; ``image``: the pixels when the annotation file
    holds them (COFW); ``source``: ``path:lineno`` of the annotation; ``format``: the reader's
    format name (``FORMAT_*``); ``name``: the face's name in its file (a WFLW list's image path as
    written, a ``.pts`` / ``.mat`` file's stem, COFW's 1-based record number); ``origin``: what the
    reader subtracted from the file's numbers. :func:`retinaface.landmarks.evaluate.write_predictions`
    uses the last three to write predictions the way the ground truth is written.
    """

    image_path: Optional[str]
    points: np.ndarray
    box: Optional[np.ndarray] = None
    attributes: Dict[str, Any] = field(default_factory=dict)
    valid: Optional[np.ndarray] = None
    image: Optional[np.ndarray] = None
    source: str = ""
    format: str = ""
    name: str = ""
    origin: float = 0.0

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    def valid_mask(self) -> np.ndarray:
        """``(K,)`` bool, all ``True`` when the sample has no ``valid`` array."""
        return np.ones(self.num_points, dtype=bool) if self.valid is None else np.asarray(self.valid, dtype=bool)


def _float(token: str, path: PathLike, line: int, what: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise LandmarkFormatError(path, line, f"{what} {token!r} is not a number") from None
    if not np.isfinite(value):
        raise LandmarkFormatError(path, line, f"{what} {token!r} is not finite")
    return value


def _number_text(value: float) -> str:
    """A box number as WFLW writes it: an integer without decimals, else six decimals."""
    return str(int(value)) if float(value).is_integer() else f"{value:.6f}"


# ----------------------------------------------------------------------------------- 300W .pts
def read_pts(path: PathLike, num_points: Optional[int] = 68, origin: float = PTS_ORIGIN) -> LandmarkSample:
    """One 300W ``.pts`` file (see the module docstring). ``num_points=None`` accepts any count the
    header states; the image is the first file beside it with the same stem and an image extension
    (``image_path=None`` when there is none)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
    except UnicodeDecodeError as exc:
        raise LandmarkFormatError(path, 1, f"not a text file ({exc.reason})") from None
    # (line number, stripped text) of every non-blank line
    rows = [(i + 1, text.strip()) for i, text in enumerate(lines) if text.strip()]
    if not rows:
        raise LandmarkFormatError(path, 1, "empty file; a .pts file starts with 'version: 1'")
    header: Dict[str, str] = {}
    k = 0
    while k < len(rows) and rows[k][1] != "{":
        lineno, text = rows[k]
        key, sep, value = text.partition(":")
        if not sep:
            raise LandmarkFormatError(path, lineno, f"expected 'version: 1', 'n_points: N' or '{{', got {text!r}")
        header[key.strip()] = value.strip()
        k += 1
    first = rows[0][0]
    if header.get("version") != "1":
        raise LandmarkFormatError(path, first, f"expected 'version: 1', got version {header.get('version')!r}")
    if "n_points" not in header:
        raise LandmarkFormatError(path, first, "no 'n_points: N' line before '{'")
    try:
        stated = int(header["n_points"])
    except ValueError:
        raise LandmarkFormatError(path, first, f"n_points {header['n_points']!r} is not an integer") from None
    if num_points is not None and stated != num_points:
        raise LandmarkFormatError(path, first, f"n_points is {stated}, expected {num_points}")
    if k == len(rows):
        raise LandmarkFormatError(path, rows[-1][0], "no '{' opening the point block")
    body = rows[k + 1:]
    if not body or body[-1][1] != "}":
        raise LandmarkFormatError(path, (body[-1][0] if body else rows[k][0]), "no '}' closing the point block")
    body = body[:-1]
    if len(body) != stated:
        where = body[stated][0] if len(body) > stated else (body[-1][0] + 1 if body else rows[k][0] + 1)
        raise LandmarkFormatError(path, where, f"{len(body)} point lines, n_points says {stated}")
    points = np.empty((stated, 2), dtype=np.float64)
    for i, (lineno, text) in enumerate(body):
        tokens = text.split()
        if len(tokens) != 2:
            raise LandmarkFormatError(path, lineno, f"point {i}: expected 'x y', got {text!r}")
        points[i] = [_float(tokens[0], path, lineno, f"point {i} x"), _float(tokens[1], path, lineno, f"point {i} y")]
    image = next((path.with_suffix(ext) for ext in IMAGE_EXTENSIONS if path.with_suffix(ext).is_file()), None)
    return LandmarkSample(str(image) if image is not None else None, points - origin, source=f"{path}:{first}",
                          format=FORMAT_PTS, name=path.stem, origin=origin)


def write_pts(path: PathLike, points: np.ndarray, origin: float = PTS_ORIGIN) -> Path:
    """Write ``points`` ``(K, 2)`` (0-based) as a 300W ``.pts`` file (``origin`` added back)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (K, 2), got {points.shape}")
    body = "".join(f"{x:.6f} {y:.6f}\n" for x, y in points + origin)
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(f"version: 1\nn_points:  {len(points)}\n{{\n{body}}}\n")
    return path


# ----------------------------------------------------------------------------------- WFLW lists
def wflw_field_count(num_points: int) -> int:
    """Fields of one WFLW list line: 2K coordinates, 4 box numbers, 6 flags, the image path."""
    return 2 * num_points + 4 + len(WFLW_ATTRIBUTES) + 1


def parse_wflw_line(text: str, path: PathLike, lineno: int, num_points: int,
                    image_root: Optional[PathLike] = None, origin: float = WFLW_ORIGIN) -> LandmarkSample:
    """One WFLW list line (see the module docstring) as a :class:`LandmarkSample`."""
    tokens = text.split()
    expected = wflw_field_count(num_points)
    if len(tokens) != expected:
        raise LandmarkFormatError(path, lineno, f"expected {expected} fields ({2 * num_points} coordinates, "
                                                f"4 box numbers, 6 attribute flags, image path), got {len(tokens)}")
    coords = [_float(t, path, lineno, f"coordinate {i}") for i, t in enumerate(tokens[:2 * num_points])]
    box = np.array([_float(t, path, lineno, "box number") for t in tokens[2 * num_points:2 * num_points + 4]])
    if box[2] < box[0] or box[3] < box[1]:
        raise LandmarkFormatError(path, lineno, f"box {tokens[2 * num_points:2 * num_points + 4]} is not "
                                                "x_min y_min x_max y_max")
    attributes: Dict[str, Any] = {}
    for name, token in zip(WFLW_ATTRIBUTES, tokens[2 * num_points + 4:-1]):
        if token not in ("0", "1"):
            raise LandmarkFormatError(path, lineno, f"{name} flag {token!r} is not 0 or 1")
        attributes[name] = int(token)
    name = tokens[-1]
    image = str(Path(image_root) / name) if image_root is not None else name
    points = np.asarray(coords, dtype=np.float64).reshape(num_points, 2) - origin
    return LandmarkSample(image, points, box - origin, attributes, source=f"{path}:{lineno}", format=FORMAT_WFLW,
                          name=name, origin=origin)


def read_wflw_list(path: PathLike, num_points: Optional[int] = None, image_root: Optional[PathLike] = None,
                   origin: float = WFLW_ORIGIN) -> List[LandmarkSample]:
    """Every face of a WFLW list file. ``num_points=None`` takes 98 or 68 from the first line's
    field count (207 or 147); every line must then have as many. Blank lines are skipped."""
    path = Path(path)
    samples: List[LandmarkSample] = []
    with open(path, encoding="utf-8") as handle:
        for lineno, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            if num_points is None:
                count = len(text.split())
                known = {wflw_field_count(k): k for k in (98, 68)}
                if count not in known:
                    raise LandmarkFormatError(path, lineno, f"{count} fields: neither a 98-point line "
                                                            f"({wflw_field_count(98)} fields) nor a 68-point "
                                                            f"line ({wflw_field_count(68)} fields)")
                num_points = known[count]
            samples.append(parse_wflw_line(text, path, lineno, num_points, image_root, origin))
    return samples


def format_wflw_line(points: np.ndarray, box: Sequence[float], attributes: Dict[str, Any], image_path: str,
                     origin: float = WFLW_ORIGIN) -> str:
    """One WFLW list line (no newline) of 0-based ``points``; missing attribute flags are 0."""
    points = np.asarray(points, dtype=np.float64) + origin
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (K, 2), got {points.shape}")
    if any(c.isspace() for c in image_path) or not image_path:
        raise ValueError(f"a WFLW list cannot hold the image path {image_path!r} (empty or with white space)")
    coords = " ".join(f"{v:.6f}" for v in points.reshape(-1))
    box_text = " ".join(_number_text(float(v) + origin) for v in box)
    flags = " ".join(str(int(attributes.get(name, 0))) for name in WFLW_ATTRIBUTES)
    return f"{coords} {box_text} {flags} {image_path}"


def write_wflw_list(path: PathLike, lines: Sequence[str]) -> Path:
    """Write WFLW list lines (from :func:`format_wflw_line`) atomically."""
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return path


# ----------------------------------------------------------------------------------- .mat files
def _loadmat(path: Path) -> Dict[str, Any]:
    import scipy.io

    try:
        return scipy.io.loadmat(str(path))
    except (ValueError, OSError, TypeError) as exc:
        raise LandmarkFormatError(path, 0, f"not a readable MATLAB .mat file ({str(exc).splitlines()[0]})") from None


def _is_v73(path: Path) -> bool:
    import scipy.io.matlab

    try:
        with open(path, "rb") as handle:
            major, _minor = scipy.io.matlab.matfile_version(handle)
    except (ValueError, OSError):
        return False
    return major == 2


AFLW2000_POINT_SETS: Tuple[str, ...] = ("pt2d", "pt3d_68")


def read_aflw2000_mat(path: PathLike, origin: float = AFLW2000_ORIGIN, points: str = "pt2d") -> LandmarkSample:
    """One AFLW2000-3D ``.mat`` (``pt2d``, ``2 x 21``): AFLW's 21 points; points stored as -1 (not
    marked in AFLW) come back with ``valid[i] = False``. The image is the ``.jpg`` beside it.
    ``attributes["pt3d_68"]`` holds the fitted ``(68, 3)`` points when the file has them.

    ``points="pt3d_68"`` makes the 68 fitted points (their x, y; the iBUG 68 layout, all present)
    the sample's points instead: the landmarks 68-point models are scored on in AFLW2000-3D's usual
    protocol (3DDFA, PRNet), normalised by the points' box size."""
    path = Path(path)
    if points not in AFLW2000_POINT_SETS:
        raise ValueError(f"points must be one of {AFLW2000_POINT_SETS}, got {points!r}")
    data = _loadmat(path)
    if points not in data:
        names = sorted(k for k in data if not k.startswith("__"))
        raise LandmarkFormatError(path, 0, f"no {points!r} variable (has {names})")
    if points == "pt3d_68":
        pt3d = np.asarray(data["pt3d_68"], dtype=np.float64)
        if pt3d.shape != (3, 68):
            raise LandmarkFormatError(path, 0, f"pt3d_68 has shape {pt3d.shape}, expected (3, 68)")
        if not np.all(np.isfinite(pt3d)):
            raise LandmarkFormatError(path, 0, "pt3d_68 holds non-finite values")
        image = next((path.with_suffix(ext) for ext in IMAGE_EXTENSIONS if path.with_suffix(ext).is_file()), None)
        return LandmarkSample(str(image) if image is not None else None, pt3d[:2].T - origin, None,
                              {"pt3d_68": pt3d.T - [origin, origin, 0.0]}, source=f"{path}:1",
                              format=FORMAT_AFLW2000, name=path.stem, origin=origin)
    pt2d = np.asarray(data["pt2d"], dtype=np.float64)
    if pt2d.shape != (2, 21):
        raise LandmarkFormatError(path, 0, f"pt2d has shape {pt2d.shape}, expected (2, 21)")
    points = pt2d.T.copy()
    valid = ~np.any(points < 0, axis=1)  # AFLW marks a point it does not annotate as -1
    points[valid] -= origin
    points[~valid] = np.nan
    attributes: Dict[str, Any] = {}
    if "pt3d_68" in data and np.asarray(data["pt3d_68"]).shape == (3, 68):
        attributes["pt3d_68"] = np.asarray(data["pt3d_68"], dtype=np.float64).T - [origin, origin, 0.0]
    image = next((path.with_suffix(ext) for ext in IMAGE_EXTENSIONS if path.with_suffix(ext).is_file()), None)
    return LandmarkSample(str(image) if image is not None else None, points, None, attributes, valid,
                          source=f"{path}:1", format=FORMAT_AFLW2000, name=path.stem, origin=origin)


COFW_POINTS = 29


def _cofw_arrays_v73(path: Path) -> Tuple[List[np.ndarray], np.ndarray, Optional[np.ndarray]]:
    try:
        import h5py
    except ImportError:
        raise LandmarkFormatError(path, 0, "a MATLAB v7.3 (HDF5) file; reading it needs h5py "
                                           "(pip install h5py)") from None
    with h5py.File(path, "r") as handle:
        keys = set(handle.keys())
        names = _cofw_names(path, keys)
        # HDF5 holds MATLAB's column-major arrays transposed: phis is (87, N), each image (C, W, H)
        phis = np.asarray(handle[names[1]], dtype=np.float64).T
        images = []
        for ref in np.asarray(handle[names[0]]).reshape(-1):
            pixels = np.asarray(handle[ref])
            images.append(pixels.T if pixels.ndim == 2 else np.transpose(pixels, (2, 1, 0)))
        boxes = np.asarray(handle[names[2]], dtype=np.float64).T if names[2] in keys else None
    return images, phis, boxes


def _cofw_names(path: Path, keys) -> Tuple[str, str, str]:
    for images, phis, boxes in (("IsT", "phisT", "bboxesT"), ("IsTr", "phisTr", "bboxesTr")):
        if images in keys and phis in keys:
            return images, phis, boxes
    raise LandmarkFormatError(path, 0, "no 'IsT'/'phisT' (test) or 'IsTr'/'phisTr' (train) variables "
                                       f"(has {sorted(k for k in keys if not k.startswith('__'))})")


def read_cofw_mat(path: PathLike, origin: float = COFW_ORIGIN) -> List[LandmarkSample]:
    """Every face of a COFW ``.mat`` (see the module docstring): ``points`` (29, 2), ``box`` from
    ``bboxes`` (``x y w h`` -> corners) when present, ``attributes["occluded"]`` the (29,) bool
    occlusion flags, ``image`` the embedded pixels (grey or 3-channel as stored; COFW's colour
    files hold RGB)."""
    path = Path(path)
    if _is_v73(path):
        images, phis, boxes = _cofw_arrays_v73(path)
    else:
        data = _loadmat(path)
        names = _cofw_names(path, data.keys())
        cell = np.asarray(data[names[0]], dtype=object).reshape(-1)
        images = [np.asarray(img) for img in cell]
        phis = np.asarray(data[names[1]], dtype=np.float64)
        boxes = np.asarray(data[names[2]], dtype=np.float64) if names[2] in data else None
    if phis.ndim != 2 or phis.shape[1] != 3 * COFW_POINTS:
        raise LandmarkFormatError(path, 0, f"phis has shape {phis.shape}, expected (N, {3 * COFW_POINTS}): "
                                           f"x of {COFW_POINTS} points, y, occlusion flags")
    if len(images) != len(phis):
        raise LandmarkFormatError(path, 0, f"{len(images)} images but {len(phis)} landmark rows")
    if boxes is not None and boxes.shape != (len(phis), 4):
        raise LandmarkFormatError(path, 0, f"bboxes has shape {boxes.shape}, expected ({len(phis)}, 4)")
    samples = []
    for i, row in enumerate(phis):
        if not np.all(np.isfinite(row)):
            raise LandmarkFormatError(path, i + 1, f"face record {i + 1} has non-finite landmark values")
        occluded = row[2 * COFW_POINTS:]
        if not np.all(np.isin(occluded, (0.0, 1.0))):
            raise LandmarkFormatError(path, i + 1, f"face record {i + 1}: occlusion flags must be 0 or 1")
        points = np.stack([row[:COFW_POINTS], row[COFW_POINTS:2 * COFW_POINTS]], axis=1) - origin
        box = None
        if boxes is not None:
            x, y, w, h = boxes[i]
            box = np.array([x, y, x + w, y + h]) - origin
        samples.append(LandmarkSample(None, points, box, {"occluded": occluded.astype(bool)}, image=images[i],
                                      source=f"{path}:{i + 1}", format=FORMAT_COFW, name=str(i + 1), origin=origin))
    return samples


# ----------------------------------------------------------------------------------- any file
def read_landmarks(path: PathLike, image_root: Optional[PathLike] = None,
                   aflw_points: str = "pt2d") -> List[LandmarkSample]:
    """The faces of any supported file, by its name: ``.pts`` (one face), ``.txt`` (a WFLW list),
    ``.mat`` (AFLW2000-3D when it has ``pt2d``, its ``aflw_points`` set; else COFW)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pts":
        return [read_pts(path, num_points=None)]
    if suffix == ".txt":
        return read_wflw_list(path, image_root=image_root)
    if suffix == ".mat":
        if not _is_v73(path):
            import scipy.io

            try:
                names = {name for name, _shape, _cls in scipy.io.whosmat(str(path))}
            except (ValueError, OSError, TypeError) as exc:
                raise LandmarkFormatError(path, 0, f"not a readable MATLAB .mat file ({exc})") from None
            if "pt2d" in names:
                return [read_aflw2000_mat(path, points=aflw_points)]
        return read_cofw_mat(path)
    raise ValueError(f"{path}: unknown landmark file type {suffix!r} (.pts, .txt WFLW list or .mat)")
