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

Malformed content raises ``ValueError("<path>:<line>: what is wrong")`` with 1-based line numbers;
an image listed twice is refused naming both lines (it would be trained twice per epoch). Landmarks
outside their image (by more than the box margin) are dropped for that face by :func:`check_images`.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ..conventions import LANDMARK_NAMES, split_image_path  # noqa: F401 (LANDMARK_NAMES re-exported)
from ..fileio import read_text_lines
from ..formats.wider_bbx import BBX_FIELDS, is_number, read_bbx_blocks
from .fast_decode import image_size

PathLike = Union[str, "os.PathLike[str]"]

logger = logging.getLogger(__name__)


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
    label_file: str = ""                     # where the faces were read from ("" when built in code)
    face_lines: Optional[np.ndarray] = None  # (K,) 1-based line of each face in label_file

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        k = len(self.boxes)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(k, 10)
        self.has_landmarks = np.asarray(self.has_landmarks, dtype=bool).reshape(k)
        if self.face_lines is not None:
            self.face_lines = np.asarray(self.face_lines, dtype=np.int64).reshape(k)
        if not self.name:
            self.name = Path(self.path).stem
        if not self.event:
            self.event = Path(self.path).parent.name

    def face_where(self, i: int) -> str:
        """``label_file:line`` of face ``i`` (the image path when the line is unknown)."""
        if self.label_file and self.face_lines is not None:
            return f"{self.label_file}:{int(self.face_lines[i])}"
        return f"{self.path} (face {i + 1})"

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
    num_skipped_bad: int = 0           # images missing or undecodable, skipped (skip_bad)
    dropped_lines: List[int] = field(default_factory=list)  # line numbers of dropped boxes (first 20)
    num_landmarks_dropped: int = 0     # faces whose landmarks lay outside the image: kept without them
    first_landmarks_dropped: str = ""  # file:line of the first such face

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
    return split_image_path(rel)


def _parse_numbers(tokens: Sequence[str], where: str) -> List[float]:
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not is_number(t))
        raise ValueError(f"{where}: not a number: {bad!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}: non-finite value in face line")
    return values


def _make_annotation(image_root: Path, rel: str, rows: List[List[float]], has_lm: List[bool],
                     label_file: Path, lines: List[int]) -> ImageAnnotation:
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
                           has_landmarks=np.asarray(has_lm, dtype=bool), event=event, name=name,
                           label_file=str(label_file), face_lines=np.asarray(lines, dtype=np.int64))


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
    lines: List[int] = []
    listed: Dict[str, int] = {}

    def flush() -> None:
        if current is not None:
            out.append(_make_annotation(image_root, current, rows, has_lm, label_txt, lines))

    for lineno, raw in enumerate(read_text_lines(label_txt), start=1):
        line = raw.strip()
        where = f"{label_txt}:{lineno}"
        if not line:
            continue
        if line.startswith("#"):
            tokens = line[1:].split()
            if not tokens:
                raise ValueError(f"{where}: header line without an image path")
            flush()
            # The path is the rest of the line (WIDER names may hold spaces); some releases append
            # the image size to it: '# a/b.jpg 1024 768'.
            if len(tokens) > 1 and all(is_number(t) for t in tokens[1:]):
                current = tokens[0]
            else:
                current = line[1:].strip()
            _check_listed_once(listed, current, label_txt, lineno)
            rows, has_lm, lines = [], [], []
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
        lines.append(lineno)
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
    listed: Dict[str, int] = {}
    for block in read_bbx_blocks(gt_txt):
        _check_listed_once(listed, block.path, gt_txt, block.lineno)
        rows: List[List[float]] = []
        lines: List[int] = []
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
            lines.append(lineno)
        out.append(_make_annotation(image_root, block.path, rows, [False] * len(rows), gt_txt, lines))
    _finish_stats(stats, out)
    return out, stats


def _check_listed_once(listed: Dict[str, int], rel: str, label_file: Path, lineno: int) -> None:
    """Refuse an image listed a second time: read as two entries it would be trained twice per
    epoch (and its faces counted twice), and which list of faces is right cannot be told."""
    key = rel.replace("\\", "/").lstrip("/")
    if key in listed:
        raise ValueError(f"{label_file}:{lineno}: image {rel} is listed a second time (first at line "
                         f"{listed[key]}); list each image once, with all its faces under one entry")
    listed[key] = lineno


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
    for lineno, raw in enumerate(read_text_lines(wider_val_txt), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = [p for p in line.replace("\\", "/").split("/") if p]
        if len(parts) < 2:
            raise ValueError(f"{wider_val_txt}:{lineno}: expected '/<event>/<file>.jpg', got {line!r}")
        event, name = _split_event_path(line)
        out.append(ValImage(str(image_root / "/".join(parts)), event, name))
    return out


# ---------------------------------------------------------------------------- image check
# Leading bytes of the formats OpenCV reads that WIDER-like data sets use.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"GIF8", b"II*\x00", b"MM\x00*", b"RIFF",
          b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")
_JPEG_MAGIC = b"\xff\xd8\xff"
#: How far (pixels, or this fraction of the image side if larger) a box may reach outside its image
#: before the up-front check refuses it: annotators' boxes often overhang the border a little.
BOX_MARGIN_PIXELS = 4.0
BOX_MARGIN_FRACTION = 0.02


class ImageInfo(NamedTuple):
    """What the up-front check learned about one image: its problem (None if fine) and size."""

    problem: Optional[str]
    width: int = 0
    height: int = 0


def _decodes(path: str, head: bytes) -> bool:
    """Whether OpenCV can decode the file. JPEGs are decoded at 1/8 size (libjpeg scales in the
    DCT, so this costs a fraction of a full decode); other formats are decoded in full."""
    import cv2

    if head.startswith(_JPEG_MAGIC):
        return cv2.imread(path, cv2.IMREAD_REDUCED_GRAYSCALE_8) is not None
    return cv2.imread(path, cv2.IMREAD_UNCHANGED) is not None


def inspect_image(path: str, check_header: bool = True, decode: bool = False) -> ImageInfo:
    """Check one image: it exists and is non-empty; with ``check_header`` it starts like an image
    file; with ``decode`` its size is read from the header and its pixels decode."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return ImageInfo("missing")
    if size == 0:
        return ImageInfo("empty")
    if not (check_header or decode):
        return ImageInfo(None)
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except OSError as exc:
        return ImageInfo(f"unreadable ({exc.strerror})")
    if not head.startswith(_MAGIC):
        return ImageInfo("not an image (unknown header)")
    if not decode:
        return ImageInfo(None)
    size = image_size(path)
    if size is None:
        return ImageInfo("does not decode (damaged header)")
    width, height = size
    if not _decodes(path, head):
        return ImageInfo("does not decode (damaged or truncated)")
    return ImageInfo(None, width, height)


def boxes_outside(annotation: ImageAnnotation, width: int, height: int) -> Optional[str]:
    """A ``file:line: ...`` message for the first face box of ``annotation`` lying outside its
    ``width`` x ``height`` image by more than the margin, else None."""
    if not annotation.num_faces:
        return None
    boxes = annotation.boxes.astype(np.float64)
    mx = max(BOX_MARGIN_PIXELS, BOX_MARGIN_FRACTION * width)
    my = max(BOX_MARGIN_PIXELS, BOX_MARGIN_FRACTION * height)
    bad = ((boxes[:, 0] < -mx) | (boxes[:, 1] < -my) | (boxes[:, 2] > width + mx) | (boxes[:, 3] > height + my))
    if not bad.any():
        return None
    i = int(np.flatnonzero(bad)[0])
    x1, y1, x2, y2 = boxes[i]
    more = int(bad.sum()) - 1
    return (f"{annotation.face_where(i)}: face box x {x1:g}..{x2:g}, y {y1:g}..{y2:g} lies outside its image "
            f"{annotation.path} ({width}x{height})" + (f" (and {more} more face(s) of that image)" if more else ""))


def drop_landmarks_outside(annotation: ImageAnnotation, width: int, height: int) -> Optional[Tuple[int, str]]:
    """Remove the landmarks (in place: all -1, label -1) of the faces of ``annotation`` whose
    landmark points lie outside the ``width`` x ``height`` image by more than the box margin;
    returns ``(how many, file:line of the first)`` or ``None``. A landmark far off the image is a
    typing or conversion error, and training would pull the regression towards it."""
    if not annotation.num_faces or not annotation.has_landmarks.any():
        return None
    points = annotation.landmarks.astype(np.float64).reshape(-1, 5, 2)
    mx = max(BOX_MARGIN_PIXELS, BOX_MARGIN_FRACTION * width)
    my = max(BOX_MARGIN_PIXELS, BOX_MARGIN_FRACTION * height)
    off = ((points[..., 0] < -mx) | (points[..., 0] > width + mx) |
           (points[..., 1] < -my) | (points[..., 1] > height + my)).any(axis=1)
    off &= annotation.has_landmarks
    if not off.any():
        return None
    first = annotation.face_where(int(np.flatnonzero(off)[0]))
    annotation.landmarks[off] = -1.0
    annotation.has_landmarks[off] = False
    return int(off.sum()), first


def _check_threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def check_images(annotations: Sequence, skip_bad: bool = False, check_header: bool = True,
                 decode: bool = False, check_boxes: bool = False, stats: Optional[LabelStats] = None
                 ) -> Tuple[list, int]:
    """Check every image of ``annotations`` before hours of training start. Anything with a
    ``.path`` attribute works (annotations, val items).

    Always: the file exists and is non-empty; ``check_header``: it starts like an image file;
    ``decode``: its size is read from the header and it decodes (JPEGs at 1/8 size, fast; images
    that start like a JPEG or PNG but are truncated or garbage are found here); ``check_boxes``
    (needs ``decode``; :class:`ImageAnnotation` items): every face box lies inside its image up to
    a small margin, else ``ValueError("label_file:line: ...")`` -- boxes normalized to 0..1 or
    shifted off the image would otherwise train on nothing; a face whose landmarks lie outside the
    image by more than that margin keeps its box but loses its landmarks (label -1), counted in
    ``stats`` and logged once with the first ``file:line``.

    Returns ``(annotations, 0)`` when all images are fine. Otherwise raises ``FileNotFoundError``
    naming the first few bad images and the total count, or with ``skip_bad`` returns the good ones
    and the number skipped (logged as a warning). Images are checked by a few threads (OpenCV and
    Pillow release the GIL while decoding).
    """
    items = list(annotations)
    paths = [item.path for item in items]
    if decode and len(items) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(_check_threads()) as pool:
            infos = list(pool.map(lambda p: inspect_image(p, check_header, True), paths, chunksize=16))
    else:
        infos = [inspect_image(p, check_header, decode) for p in paths]
    good, bad = [], []
    landmarks_dropped: List[Tuple[int, str]] = []
    for item, info in zip(items, infos):
        if info.problem is not None:
            bad.append((item.path, info.problem))
            continue
        if check_boxes and decode and isinstance(item, ImageAnnotation):
            message = boxes_outside(item, info.width, info.height)
            if message is not None:
                raise ValueError(message)
            where = drop_landmarks_outside(item, info.width, info.height)
            if where:
                landmarks_dropped.append(where)
        good.append(item)
    if landmarks_dropped:
        logger.warning("%d face(s) have landmarks outside their image by more than the margin; they are "
                       "kept without landmarks (label -1), first at %s", sum(n for n, _ in landmarks_dropped),
                       landmarks_dropped[0][1])
        if stats is not None:
            stats.num_landmarks_dropped = sum(n for n, _ in landmarks_dropped)
            stats.first_landmarks_dropped = landmarks_dropped[0][1]
    if not bad:
        return items, 0
    listing = "; ".join(f"{p} ({why})" for p, why in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    if not skip_bad:
        raise FileNotFoundError(f"{len(bad)} of {len(items)} image(s) missing or unreadable: "
                                f"{listing}{more} (--skip-bad skips them)")
    logger.warning("skipping %d of %d image(s) missing or unreadable: %s%s", len(bad), len(items),
                   listing, more)
    return good, len(bad)


def check_box_scale(annotations: Sequence[ImageAnnotation], source: str) -> None:
    """Refuse labels whose boxes are all at most 2 pixels wide and high: such a set was written in
    normalized (0..1) coordinates, and no prior would ever match one of its faces."""
    sizes = [a.boxes[:, 2:] - a.boxes[:, :2] for a in annotations if a.num_faces]
    if not sizes:
        return
    largest = float(np.concatenate(sizes).max())
    if largest <= 2.0:
        raise ValueError(f"{source}: every face box is at most {largest:g} pixels wide and high; the labels "
                         f"look normalized to 0..1, but training needs pixel coordinates")


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
    :func:`detect_label_format`), then (with ``check``) verify the images up front: they exist
    and decode, and every face box fits its image (:func:`check_images`)."""
    fmt, label_file, image_root = detect_label_format(root, split)
    reader = read_retinaface_labels if fmt == RETINAFACE_FORMAT else read_wider_bbx_labels
    annotations, stats = reader(label_file, image_root)
    check_box_scale(annotations, str(label_file))
    if check:
        annotations, skipped = check_images(annotations, skip_bad=skip_bad, decode=True, check_boxes=True,
                                            stats=stats)
        stats.num_skipped_bad = skipped
        if skipped or stats.num_landmarks_dropped:
            stats.num_images = len(annotations)
            stats.num_faces = sum(a.num_faces for a in annotations)
            stats.num_without_landmarks = sum(int((~a.has_landmarks).sum()) for a in annotations)
    logger.info("%s: %d images, %d faces (%d without landmarks) [%s format]", label_file,
                stats.num_images, stats.num_faces, stats.num_without_landmarks, fmt)
    return annotations, stats
