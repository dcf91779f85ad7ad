"""Face annotation readers: the two on-disk label formats of WIDER FACE, the val image list, and an
up-front image check.

Owns :class:`ImageAnnotation` (one image and its faces, in pixels, corner form) and everything that
turns files into lists of them:

* :func:`read_retinaface_labels` -- the Pytorch_Retinaface layout, ``ROOT/train/label.txt`` with
  ``# <event>/<file>.jpg`` header lines followed by one 20-number line per face (box, five
  landmarks with visibility flags, blur);
* :func:`read_wider_bbx_labels` -- the official ``wider_face_train_bbx_gt.txt`` (path line, count
  line, ``x y w h blur expression illumination invalid occlusion pose`` per face); no landmarks;
* :func:`read_val_list` -- ``ROOT/val/wider_val.txt`` (``/<event>/<file>.jpg`` per line);
* :func:`detect_label_format` / :func:`load_training_annotations` -- find either layout under a
  data root;
* :func:`check_images` -- make sure every listed image exists before hours of training start.

Malformed content raises ``ValueError("<path>:<line>: what is wrong")`` with 1-based line numbers.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .wider_bbx import BBX_FIELDS, is_number, read_bbx_blocks

PathLike = Union[str, "os.PathLike[str]"]

logger = logging.getLogger(__name__)

#: Landmark order of both the label files and the model: as seen in the image.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")

RETINAFACE_FORMAT = "retinaface"
WIDER_FORMAT = "wider"

# Numbers per face line of the Pytorch_Retinaface label.txt: box (4), 5 x (x, y, flag), blur.
_RF_FULL = 20
# The blur value is ignored, so a line without it is still complete; a 4-number line is a box
# without landmarks (the landmark-less val label files of some releases look like that).
_RF_ACCEPTED = (4, 19, 20)
_WIDER_INVALID_COLUMN = 7


@dataclass(eq=False)
class ImageAnnotation:
    """One image and its faces.

    ``boxes`` is (K, 4) float32 ``x1 y1 x2 y2`` in pixels; ``landmarks`` (K, 10) float32 in the
    order of :data:`LANDMARK_NAMES` as ``x, y`` pairs, all -1 for a face without landmarks;
    ``has_landmarks`` (K,) bool. ``event``/``name`` identify the image the WIDER way
    (``0--Parade`` / ``0_Parade_marchingband_1_849``, no extension).
    """

    path: str
    boxes: np.ndarray
    landmarks: np.ndarray
    has_landmarks: np.ndarray
    event: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        k = len(self.boxes)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(k, 10)
        self.has_landmarks = np.asarray(self.has_landmarks, dtype=bool).reshape(k)
        if not self.name:
            self.name = Path(self.path).stem
        if not self.event:
            self.event = Path(self.path).parent.name

    @property
    def num_faces(self) -> int:
        return len(self.boxes)

    @property
    def labels(self) -> np.ndarray:
        """Class label per face as the reference trains it: 1 with landmarks, -1 without."""
        return np.where(self.has_landmarks, 1.0, -1.0).astype(np.float32)


@dataclass
class LabelStats:
    """What a reader saw and what it left out."""

    source: str = ""
    num_images: int = 0
    num_faces: int = 0                 # faces kept
    num_without_landmarks: int = 0     # kept faces whose landmarks are absent
    num_dropped_empty: int = 0         # boxes with w <= 0 or h <= 0, dropped
    num_skipped_invalid: int = 0       # faces flagged invalid (WIDER format), skipped
    dropped_lines: List[int] = field(default_factory=list)  # line numbers of dropped boxes (first 20)

    def warn(self) -> None:
        """Log, once per file, what was dropped; silent when nothing was."""
        if self.num_dropped_empty:
            lines = ", ".join(str(n) for n in self.dropped_lines)
            more = "" if len(self.dropped_lines) >= self.num_dropped_empty else ", ..."
            logger.warning("%s: dropped %d face box(es) with zero or negative width/height (lines %s%s)",
                           self.source, self.num_dropped_empty, lines, more)


class ValImage(NamedTuple):
    """One entry of ``wider_val.txt``."""

    path: str
    event: str
    name: str


# ---------------------------------------------------------------------------- helpers
def _split_event_path(rel: str) -> Tuple[str, str]:
    """``0--Parade/0_Parade_x.jpg`` (leading slash allowed) -> ``("0--Parade", "0_Parade_x")``."""
    parts = [p for p in rel.replace("\\", "/").split("/") if p]
    if not parts:
        raise ValueError("empty image path")
    stem = os.path.splitext(parts[-1])[0]
    return (parts[-2] if len(parts) >= 2 else ""), stem


def _parse_numbers(tokens: Sequence[str], where: str) -> List[float]:
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not is_number(t))
        raise ValueError(f"{where}: not a number: {bad!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}: non-finite value in face line")
    return values


def _read_lines(path: Path) -> List[str]:
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    with open(path, "r", encoding="utf-8") as handle:
        return handle.read().splitlines()


def _make_annotation(image_root: Path, rel: str, rows: List[List[float]], has_lm: List[bool]) -> ImageAnnotation:
    event, name = _split_event_path(rel)
    k = len(rows)
    if k:
        arr = np.asarray(rows, dtype=np.float64)
        boxes = np.concatenate([arr[:, 0:2], arr[:, 0:2] + arr[:, 2:4]], axis=1)
        landmarks = arr[:, 4:14]
    else:
        boxes = np.zeros((0, 4))
        landmarks = np.zeros((0, 10))
    return ImageAnnotation(path=str(image_root / rel.lstrip("/")), boxes=boxes, landmarks=landmarks,
                           has_landmarks=np.asarray(has_lm, dtype=bool), event=event, name=name)


# ---------------------------------------------------------------------------- readers
def read_retinaface_labels(label_txt: PathLike, image_root: Optional[PathLike] = None
                           ) -> Tuple[List[ImageAnnotation], LabelStats]:
    """Read a Pytorch_Retinaface ``label.txt``.

    ``image_root`` defaults to ``images/`` beside the label file. A face line holds
    ``x y w h`` then five ``x y flag`` landmarks then blur (20 numbers; 19 without blur and a bare
    4-number box are accepted too). A face whose ten landmark coordinates are all -1 has no
    landmarks. Boxes with ``w <= 0`` or ``h <= 0`` are dropped and counted. Images listed with no
    face lines are kept (they are pure negatives).
    """
    label_txt = Path(label_txt)
    image_root = Path(image_root) if image_root is not None else label_txt.parent / "images"
    stats = LabelStats(source=str(label_txt))
    out: List[ImageAnnotation] = []
    current: Optional[str] = None
    rows: List[List[float]] = []
    has_lm: List[bool] = []

    def flush() -> None:
        if current is not None:
            out.append(_make_annotation(image_root, current, rows, has_lm))

    for lineno, raw in enumerate(_read_lines(label_txt), start=1):
        line = raw.strip()
        where = f"{label_txt}:{lineno}"
        if not line:
            continue
        if line.startswith("#"):
            tokens = line[1:].split()
            if not tokens:
                raise ValueError(f"{where}: header line without an image path")
            # Some releases append the image size to the header: '# a/b.jpg 1024 768'.
            if len(tokens) > 1 and not all(is_number(t) for t in tokens[1:]):
                raise ValueError(f"{where}: expected '# <event>/<file>.jpg', got {line!r}")
            flush()
            current, rows, has_lm = tokens[0], [], []
            continue
        if current is None:
            raise ValueError(f"{where}: face line before any '# <event>/<file>.jpg' header")
        tokens = line.split()
        if len(tokens) not in _RF_ACCEPTED:
            raise ValueError(f"{where}: expected {_RF_FULL} numbers per face (x y w h, 5 x (x y flag), "
                             f"blur), got {len(tokens)}")
        values = _parse_numbers(tokens, where)
        if values[2] <= 0 or values[3] <= 0:
            stats.num_dropped_empty += 1
            if len(stats.dropped_lines) < 20:
                stats.dropped_lines.append(lineno)
            continue
        if len(values) == 4:
            coords = [-1.0] * 10
        else:
            coords = [values[4 + 3 * i + j] for i in range(5) for j in (0, 1)]
        present = not all(c == -1.0 for c in coords)
        rows.append(values[:4] + coords)
        has_lm.append(present)
    flush()
    _finish_stats(stats, out)
    return out, stats


def read_wider_bbx_labels(gt_txt: PathLike, image_root: Optional[PathLike] = None
                          ) -> Tuple[List[ImageAnnotation], LabelStats]:
    """Read the official ``wider_face_{train,val}_bbx_gt.txt``.

    ``image_root`` defaults to ``WIDER_train/images`` (``WIDER_val`` for a val file) beside the
    ``wider_face_split`` folder holding the file. No landmarks (every face gets label -1). Faces
    flagged invalid are skipped, boxes with ``w <= 0`` or ``h <= 0`` dropped; both are counted.
    """
    gt_txt = Path(gt_txt)
    if image_root is None:
        split = "val" if "val" in gt_txt.name else "test" if "test" in gt_txt.name else "train"
        image_root = gt_txt.parent.parent / f"WIDER_{split}" / "images"
    image_root = Path(image_root)
    stats = LabelStats(source=str(gt_txt))
    out: List[ImageAnnotation] = []
    for block in read_bbx_blocks(gt_txt):
        rows: List[List[float]] = []
        for lineno, tokens in block.faces:
            where = f"{gt_txt}:{lineno}"
            if len(tokens) != BBX_FIELDS:
                raise ValueError(f"{where}: expected {BBX_FIELDS} numbers (x y w h blur expression "
                                 f"illumination invalid occlusion pose), got {len(tokens)}")
            values = _parse_numbers(tokens, where)
            if values[_WIDER_INVALID_COLUMN] != 0:
                stats.num_skipped_invalid += 1
                continue
            if values[2] <= 0 or values[3] <= 0:
                stats.num_dropped_empty += 1
                if len(stats.dropped_lines) < 20:
                    stats.dropped_lines.append(lineno)
                continue
            rows.append(values[:4] + [-1.0] * 10)
        out.append(_make_annotation(image_root, block.path, rows, [False] * len(rows)))
    _finish_stats(stats, out)
    return out, stats


def _finish_stats(stats: LabelStats, annotations: List[ImageAnnotation]) -> None:
    stats.num_images = len(annotations)
    stats.num_faces = sum(a.num_faces for a in annotations)
    stats.num_without_landmarks = sum(int((~a.has_landmarks).sum()) for a in annotations)
    stats.warn()


def read_val_list(wider_val_txt: PathLike, image_root: Optional[PathLike] = None) -> List[ValImage]:
    """Read ``wider_val.txt`` (``/<event>/<file>.jpg`` per line); ``image_root`` defaults to
    ``images/`` beside it."""
    wider_val_txt = Path(wider_val_txt)
    image_root = Path(image_root) if image_root is not None else wider_val_txt.parent / "images"
    out: List[ValImage] = []
    for lineno, raw in enumerate(_read_lines(wider_val_txt), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = [p for p in line.replace("\\", "/").split("/") if p]
        if len(line.split()) != 1 or len(parts) < 2:
            raise ValueError(f"{wider_val_txt}:{lineno}: expected '/<event>/<file>.jpg', got {line!r}")
        event, name = _split_event_path(line)
        out.append(ValImage(str(image_root / "/".join(parts)), event, name))
    return out


# ---------------------------------------------------------------------------- image check
# Leading bytes of the formats OpenCV reads that WIDER-like data sets use.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"GIF8", b"II*\x00", b"MM\x00*", b"RIFF",
          b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")


def _image_problem(path: str, check_header: bool) -> Optional[str]:
    try:
        size = os.path.getsize(path)
    except OSError:
        return "missing"
    if size == 0:
        return "empty"
    if check_header:
        try:
            with open(path, "rb") as handle:
                head = handle.read(12)
        except OSError as exc:
            return f"unreadable ({exc.strerror})"
        if not head.startswith(_MAGIC):
            return "not an image (unknown header)"
    return None


def check_images(annotations: Sequence, skip_bad: bool = False, check_header: bool = True
                 ) -> Tuple[list, int]:
    """Check that every image in ``annotations`` exists, is non-empty and (with ``check_header``)
    starts like an image file. Anything with a ``.path`` attribute works (annotations, val items).

    Returns ``(annotations, 0)`` when all are fine. Otherwise raises ``FileNotFoundError`` naming the
    first few bad images and the total count, or with ``skip_bad`` returns the good ones and the
    number skipped (logged as a warning). Only reads 12 bytes per image: fast enough for WIDER.
    """
    good, bad = [], []
    for item in annotations:
        problem = _image_problem(item.path, check_header)
        if problem is None:
            good.append(item)
        else:
            bad.append((item.path, problem))
    if not bad:
        return list(annotations), 0
    listing = "; ".join(f"{p} ({why})" for p, why in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    if not skip_bad:
        raise FileNotFoundError(f"{len(bad)} of {len(annotations)} image(s) missing or unreadable: "
                                f"{listing}{more}")
    logger.warning("skipping %d of %d image(s) missing or unreadable: %s%s", len(bad), len(annotations),
                   listing, more)
    return good, len(bad)


# ---------------------------------------------------------------------------- data roots
def _candidates(root: Path, split: str) -> List[Tuple[str, Path, Path]]:
    """(format, label file, image root) in the order they are tried."""
    return [
        (RETINAFACE_FORMAT, root / split / "label.txt", root / split / "images"),
        # ROOT may be the split folder itself.
        (RETINAFACE_FORMAT, root / "label.txt", root / "images"),
        (WIDER_FORMAT, root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt",
         root / f"WIDER_{split}" / "images"),
    ]


def detect_label_format(root: PathLike, split: str = "train") -> Tuple[str, Path, Path]:
    """Find the labels of ``split`` under ``root``: returns ``(format, label_file, image_root)``
    with format ``"retinaface"`` (preferred: it has landmarks) or ``"wider"``.

    ``root`` may also be a label file itself. Raises ``FileNotFoundError`` listing every place
    looked at when nothing fits.
    """
    root = Path(root)
    if root.is_file():
        if root.name.endswith("_bbx_gt.txt"):
            split_name = "val" if "val" in root.name else "train"
            return WIDER_FORMAT, root, root.parent.parent / f"WIDER_{split_name}" / "images"
        return RETINAFACE_FORMAT, root, root.parent / "images"
    tried = []
    for fmt, label, images in _candidates(root, split):
        if label.is_file():
            if not images.is_dir():
                raise FileNotFoundError(f"found {label} but not its image folder {images}")
            return fmt, label, images
        tried.append(f"{label} (+ {images}/)")
    raise FileNotFoundError(
        f"no WIDER FACE {split} labels under {root}; looked for:\n  " + "\n  ".join(tried)
        + "\n(see data/widerface/README.md; `retinaface.data.generate_synthetic_widerface` makes a "
          "small synthetic set in the first layout)")


def load_training_annotations(root: PathLike, split: str = "train", check: bool = True,
                              skip_bad: bool = False) -> Tuple[List[ImageAnnotation], LabelStats]:
    """Read the ``split`` labels under ``root`` in whichever layout is there (see
    :func:`detect_label_format`), then (with ``check``) verify the images up front."""
    fmt, label_file, image_root = detect_label_format(root, split)
    reader = read_retinaface_labels if fmt == RETINAFACE_FORMAT else read_wider_bbx_labels
    annotations, stats = reader(label_file, image_root)
    if check:
        annotations, skipped = check_images(annotations, skip_bad=skip_bad)
        if skipped:
            stats.num_images = len(annotations)
            stats.num_faces = sum(a.num_faces for a in annotations)
            stats.num_without_landmarks = sum(int((~a.has_landmarks).sum()) for a in annotations)
    logger.info("%s: %d images, %d faces (%d without landmarks) [%s format]", label_file,
                stats.num_images, stats.num_faces, stats.num_without_landmarks, fmt)
    return annotations, stats
