"""WIDER FACE ground truth: the in-memory form, and reading/writing it (numpy only; scipy.io is
imported only where a ``.mat`` file is read or written).

Owns :class:`WiderGroundTruth` and its three on-disk forms:

* the official ``.mat`` files (``wider_face_val.mat`` plus ``wider_{easy,medium,hard}_val.mat``),
  read with :func:`load_ground_truth` and written, in the same structure and integer types, with
  :func:`save_ground_truth`;
* the official text file ``wider_face_val_bbx_gt.txt``, read with :func:`load_text_ground_truth`
  (the easy/medium/hard lists exist only in the ``.mat`` files) and written with
  :func:`save_text_ground_truth`.

The contract is ``shared/specs/widerface_eval.md``.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import numpy as np

from ..conventions import GT_MAIN_MAT, GT_SETTING_MATS, GT_VAL_TEXT, WIDER_SETTINGS, split_image_path
from ..fileio import atomic_write
from .wider_bbx import read_bbx_blocks

PathLike = Union[str, "os.PathLike[str]"]

SETTINGS = WIDER_SETTINGS

# File names of the official ground truth, in the order they are checked.
MAIN_MAT = GT_MAIN_MAT
SETTING_MATS = GT_SETTING_MATS

# Per-face labels of the official data, in the column order of the text ground truth.
ATTRIBUTE_NAMES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


@dataclass(eq=False)
class WiderGroundTruth:
    """Faces of a WIDER FACE split, grouped by event then image (the order of the .mat files).

    ``keep[setting][e][i]`` holds the 1-based indices (into ``boxes[e][i]``) of the faces counted in
    that setting; the others are ignored there. ``attributes`` (optional) holds the per-face labels
    of the official data (``blur``, ``expression``, ...), per event per image, 1-D uint8 arrays.
    """

    events: list[str]
    images: list[list[str]]
    boxes: list[list[np.ndarray]]
    keep: dict[str, list[list[np.ndarray]]]
    attributes: Optional[dict[str, list[list[np.ndarray]]]] = field(default=None)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ structure
    def validate(self) -> None:
        """Raise ``ValueError`` when the nested lists disagree or an index is out of range."""
        n_ev = len(self.events)
        if len(self.images) != n_ev or len(self.boxes) != n_ev:
            raise ValueError(f"ground truth: {n_ev} events but {len(self.images)} image lists and "
                             f"{len(self.boxes)} box lists")
        missing = [s for s in SETTINGS if s not in self.keep]
        if missing:
            raise ValueError(f"ground truth: keep lists missing for setting(s) {missing}")
        for e, event in enumerate(self.events):
            n_img = len(self.images[e])
            if len(self.boxes[e]) != n_img:
                raise ValueError(f"ground truth: event {event!r} has {n_img} images but "
                                 f"{len(self.boxes[e])} box arrays")
            for i, b in enumerate(self.boxes[e]):
                b = np.asarray(b)
                if b.ndim != 2 or b.shape[1] != 4:
                    raise ValueError(f"ground truth: {event}/{self.images[e][i]}: boxes must be (K, 4) "
                                     f"x y w h, got shape {b.shape}")
        for s in SETTINGS:
            lists = self.keep[s]
            if len(lists) != n_ev:
                raise ValueError(f"ground truth: {s} keep lists cover {len(lists)} events, expected {n_ev}")
            for e, event in enumerate(self.events):
                if len(lists[e]) != len(self.images[e]):
                    raise ValueError(f"ground truth: {s} keep lists of event {event!r} cover "
                                     f"{len(lists[e])} images, expected {len(self.images[e])}")
                for i, k in enumerate(lists[e]):
                    k = np.asarray(k)
                    n_faces = len(self.boxes[e][i])
                    # An index outside 1..K would silently count a different face (0 wraps around
                    # to the last face in the reference), so refuse it here.
                    if k.size and (k.min() < 1 or k.max() > n_faces):
                        raise ValueError(f"ground truth: {s} keep list of {event}/{self.images[e][i]} "
                                         f"has indices outside 1..{n_faces}: {k.ravel().tolist()[:10]}")
        if self.attributes is not None:
            for name, lists in self.attributes.items():
                if len(lists) != n_ev or any(len(lists[e]) != len(self.images[e]) for e in range(n_ev)):
                    raise ValueError(f"ground truth: attribute {name!r} does not match the image lists")

    @property
    def num_images(self) -> int:
        return sum(len(names) for names in self.images)

    @property
    def num_faces(self) -> int:
        return sum(len(b) for per_event in self.boxes for b in per_event)

    def num_counted(self, setting: str) -> int:
        """Faces counted in ``setting`` (the denominator of recall; duplicates count twice, as in
        both evaluation programs)."""
        return sum(int(np.size(k)) for per_event in self.keep[setting] for k in per_event)

    def image_keys(self) -> list[tuple[str, str]]:
        """``(event, image)`` for every image, in order."""
        return [(event, name) for event, names in zip(self.events, self.images) for name in names]

    def __iter__(self) -> Iterator[tuple[str, str, np.ndarray]]:
        """Yield ``(event, image, boxes)`` for every image, in order."""
        for event, names, boxes in zip(self.events, self.images, self.boxes):
            for name, b in zip(names, boxes):
                yield event, name, b

    def __len__(self) -> int:
        return self.num_images

    def subset(self, keys: Iterable[tuple[str, str]]) -> "WiderGroundTruth":
        """A ground truth holding only the images ``keys`` (iterable of ``(event, image)``), in this
        ground truth's order; events left without images are dropped."""
        wanted = set(keys)
        known = set(self.image_keys())
        unknown = wanted - known
        if unknown:
            raise KeyError(f"images not in the ground truth: {sorted(unknown)[:5]}")
        events, images, boxes = [], [], []
        keep: dict[str, list] = {s: [] for s in SETTINGS}
        attrs: Optional[dict[str, list]] = ({a: [] for a in self.attributes}
                                            if self.attributes is not None else None)
        for e, event in enumerate(self.events):
            idx = [i for i, name in enumerate(self.images[e]) if (event, name) in wanted]
            if not idx:
                continue
            events.append(event)
            images.append([self.images[e][i] for i in idx])
            boxes.append([self.boxes[e][i] for i in idx])
            for s in SETTINGS:
                keep[s].append([self.keep[s][e][i] for i in idx])
            if attrs is not None:
                for a in attrs:
                    attrs[a].append([self.attributes[a][e][i] for i in idx])
        return WiderGroundTruth(events, images, boxes, keep, attrs)

    def __eq__(self, other: object) -> bool:
        """Same names, same box and keep values (dtypes may differ), same attributes."""
        if not isinstance(other, WiderGroundTruth):
            return NotImplemented
        if list(self.events) != list(other.events) or \
                [list(n) for n in self.images] != [list(n) for n in other.images]:
            return False

        def same(a, b, shape) -> bool:
            return len(a) == len(b) and all(
                len(xs) == len(ys) and all(np.array_equal(np.asarray(x).reshape(shape), np.asarray(y).reshape(shape))
                                           for x, y in zip(xs, ys))
                for xs, ys in zip(a, b))

        if not same(self.boxes, other.boxes, (-1, 4)):
            return False
        if any(not same(self.keep[s], other.keep[s], -1) for s in SETTINGS):
            return False
        if (self.attributes is None) != (other.attributes is None):
            return False
        if self.attributes is not None:
            if set(self.attributes) != set(other.attributes):
                return False
            return all(same(self.attributes[a], other.attributes[a], -1) for a in self.attributes)
        return True

    __hash__ = None  # mutable container of arrays


# ---------------------------------------------------------------------------- .mat files
def _cell_str(cell) -> str:
    """A MATLAB char cell as loadmat returns it (a 1-element unicode array) -> str."""
    arr = np.asarray(cell)
    if arr.dtype.kind == "U":
        return str(arr.ravel()[0]) if arr.size else ""
    if arr.dtype == object and arr.size == 1:
        return _cell_str(arr.ravel()[0])
    raise ValueError(f"expected a string cell, got {arr.dtype} {arr.shape}")


def _column_cells(arr, what: str, path: Path) -> list:
    """The elements of an (n, 1) (or (1, n)) cell array as a flat list."""
    arr = np.asarray(arr)
    if arr.dtype != object or arr.ndim != 2 or 1 not in arr.shape:
        if arr.size == 0:
            return []
        raise ValueError(f"{path}: {what} is not a column cell array ({arr.dtype}, shape {arr.shape})")
    return list(arr.ravel())


def _read_mat(path: Path, variables: Optional[list] = None) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(str(path), variable_names=variables)
    except Exception as exc:  # scipy raises several types for corrupt files
        raise ValueError(f"{path}: cannot read as a MATLAB file: {exc}") from exc


def _names_from_mat(mat: dict, path: Path) -> tuple[list[str], list[list[str]]]:
    for key in ("event_list", "file_list"):
        if key not in mat:
            raise ValueError(f"{path}: variable {key!r} missing")
    events = [_cell_str(c) for c in _column_cells(mat["event_list"], "event_list", path)]
    files = _column_cells(mat["file_list"], "file_list", path)
    if len(files) != len(events):
        raise ValueError(f"{path}: {len(events)} events but {len(files)} file lists")
    images = [[_cell_str(c) for c in _column_cells(f, f"file_list of {ev}", path)]
              for ev, f in zip(events, files)]
    return events, images


def _check_ground_truth_dir(gt_dir: Path) -> None:
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"WIDER FACE ground truth directory not found: {gt_dir} (expected "
                                f"{MAIN_MAT} and {', '.join(SETTING_MATS.values())} in it)")
    missing = [name for name in (MAIN_MAT, *SETTING_MATS.values()) if not (gt_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"WIDER FACE ground truth incomplete: {gt_dir / missing[0]} is missing"
                                + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""))


def load_ground_truth(gt_dir: PathLike) -> WiderGroundTruth:
    """Read the official ``.mat`` ground truth from ``gt_dir``.

    Boxes keep the file's dtype (int32 in the official data); keep lists become 1-D int64 arrays
    (the files hold uint8/uint16, on which ``index - 1`` would wrap around).
    """
    gt_dir = Path(gt_dir)
    _check_ground_truth_dir(gt_dir)
    main_path = gt_dir / MAIN_MAT
    main = _read_mat(main_path)
    events, images = _names_from_mat(main, main_path)
    if "face_bbx_list" not in main:
        raise ValueError(f"{main_path}: variable 'face_bbx_list' missing")
    box_cells = _column_cells(main["face_bbx_list"], "face_bbx_list", main_path)
    boxes: list[list[np.ndarray]] = []
    for e, cells in enumerate(box_cells):
        per_image = []
        for i, b in enumerate(_column_cells(cells, f"face_bbx_list of {events[e]}", main_path)):
            b = np.asarray(b)
            if b.size == 0:
                b = np.zeros((0, 4), dtype=b.dtype if b.dtype != object else np.int32)
            per_image.append(b)
        if len(per_image) != len(images[e]):
            raise ValueError(f"{main_path}: event {events[e]!r} has {len(images[e])} images but "
                             f"{len(per_image)} box arrays")
        boxes.append(per_image)

    attributes = None
    if all(f"{a}_label_list" in main for a in ATTRIBUTE_NAMES):
        attributes = {}
        for a in ATTRIBUTE_NAMES:
            cells = _column_cells(main[f"{a}_label_list"], f"{a}_label_list", main_path)
            attributes[a] = [[np.asarray(x).ravel() for x in _column_cells(c, a, main_path)] for c in cells]

    keep: dict[str, list[list[np.ndarray]]] = {}
    for s, name in SETTING_MATS.items():
        path = gt_dir / name
        # Only what is used: the setting files repeat the boxes and labels of the main file.
        mat = _read_mat(path, ["event_list", "file_list", "gt_list"])
        s_events, s_images = _names_from_mat(mat, path)
        if s_events != events or s_images != images:
            raise ValueError(f"{path}: its event/file lists differ from those of {main_path}")
        if "gt_list" not in mat:
            raise ValueError(f"{path}: variable 'gt_list' missing")
        cells = _column_cells(mat["gt_list"], "gt_list", path)
        keep[s] = [[np.asarray(k).ravel().astype(np.int64) for k in _column_cells(c, f"gt_list of {ev}", path)]
                   for c, ev in zip(cells, events)]
    return WiderGroundTruth(events, images, boxes, keep, attributes)


def open_ground_truth(path: PathLike) -> WiderGroundTruth:
    """Ground truth from ``path``: a directory of the official ``.mat`` files, or the official text
    file (its easy/medium/hard lists then come from ``.mat`` files beside it when they are all
    there, else every face counts in every setting, with a warning)."""
    path = Path(path)
    if path.is_dir():
        return load_ground_truth(path)
    if path.is_file() and path.suffix.lower() == ".txt":
        beside = path.parent
        if all((beside / name).is_file() for name in (MAIN_MAT, *SETTING_MATS.values())):
            return load_text_ground_truth(path, settings_from=beside)
        warnings.warn(f"{path}: no {MAIN_MAT} and setting .mat files beside it; every face counts as "
                      f"easy, medium and hard", stacklevel=2)
        return load_text_ground_truth(path)
    raise FileNotFoundError(f"WIDER FACE ground truth not found: {path} (expected a directory holding "
                            f"{MAIN_MAT} and {', '.join(SETTING_MATS.values())}, or {GT_VAL_TEXT})")


def _object_column(items: list) -> np.ndarray:
    """An (n, 1) object array holding ``items`` as they are (no broadcasting of nested arrays)."""
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def _mat_boxes(b) -> np.ndarray:
    b = np.asarray(b).reshape(-1, 4)
    fits = b.size == 0 or (np.all(np.isfinite(b)) and np.abs(b).max() < 2**31)
    if fits and (b.dtype.kind in "iub" or np.all(b == np.round(b))):
        return np.ascontiguousarray(b, dtype=np.int32)
    # Non-integral synthetic boxes: MATLAB would hold them as doubles; keep the values.
    return np.ascontiguousarray(b, dtype=np.float64)


def _mat_keep(k, n_faces: int) -> np.ndarray:
    k = np.asarray(k).ravel()
    if k.size == 0:
        # MATLAB's find() gives 0x0 on a scalar and 0x1 on a column; the official files show both.
        return np.zeros((0, 0) if n_faces == 1 else (0, 1), dtype=np.uint8)
    # The official files use the narrowest unsigned type that holds the largest index.
    top = int(k.max())
    dtype = np.uint8 if top <= 0xFF else np.uint16 if top <= 0xFFFF else np.uint32
    return k.astype(dtype).reshape(-1, 1)


def save_ground_truth(gt: WiderGroundTruth, gt_dir: PathLike) -> None:
    """Write ``gt`` as the four official ``.mat`` files in ``gt_dir`` (each atomically).

    Same cells, shapes and integer types as the official files (int32 boxes, (n, 1) uint8/uint16
    keep lists, compressed MATLAB 5 format), so other WIDER FACE evaluators read them too.
    """
    import scipy.io

    gt.validate()
    gt_dir = Path(gt_dir)
    gt_dir.mkdir(parents=True, exist_ok=True)
    common = {
        "event_list": _object_column(list(gt.events)),
        "file_list": _object_column([_object_column(list(names)) for names in gt.images]),
        "face_bbx_list": _object_column([_object_column([_mat_boxes(b) for b in per_event])
                                         for per_event in gt.boxes]),
    }
    if gt.attributes is not None:
        for a, lists in gt.attributes.items():
            common[f"{a}_label_list"] = _object_column(
                [_object_column([np.asarray(x).reshape(-1, 1) for x in per_event]) for per_event in lists])

    def write(path: Path, variables: dict) -> None:
        with atomic_write(path, "wb") as handle:
            scipy.io.savemat(handle, variables, do_compression=True, oned_as="column")

    write(gt_dir / MAIN_MAT, common)
    for s, name in SETTING_MATS.items():
        lists = _object_column([_object_column([_mat_keep(k, len(b)) for k, b in zip(per_event, per_boxes)])
                                for per_event, per_boxes in zip(gt.keep[s], gt.boxes)])
        write(gt_dir / name, {**common, "gt_list": lists})


# ---------------------------------------------------------------------------- text file
def _split_image_path(line: str) -> tuple[str, str]:
    event, name = split_image_path(line)
    if not event:
        raise ValueError(f"expected an image path '<event>/<image>.jpg', got {line!r}")
    return event, name


def load_text_ground_truth(txt_path: PathLike,
                           settings_from: Union[WiderGroundTruth, PathLike, None] = None) -> WiderGroundTruth:
    """Read the official text ground truth (``wider_face_val_bbx_gt.txt``).

    The text holds no setting lists: with ``settings_from`` (a ground-truth directory or a loaded
    :class:`WiderGroundTruth`) they are taken from the ``.mat`` data, matched by event and image
    name (the boxes must agree); without it every face counts in every setting.
    Malformed content raises ``ValueError("path:line: what is wrong")``.
    """
    txt_path = Path(txt_path)
    order: list[str] = []
    per_event: dict[str, tuple[list[str], list[np.ndarray], list[np.ndarray]]] = {}
    seen: dict[tuple[str, str], int] = {}
    has_attrs = True

    def err(lineno: int, what: str) -> ValueError:
        return ValueError(f"{txt_path}:{lineno}: {what}")

    for block in read_bbx_blocks(txt_path):
        try:
            event, name = _split_image_path(block.path)
        except ValueError as exc:
            raise err(block.lineno, str(exc)) from None
        if (event, name) in seen:
            raise err(block.lineno, f"image {event}/{name} already listed at line {seen[event, name]}")
        seen[event, name] = block.lineno
        rows, attrs = [], []
        for lineno, tokens in block.faces:
            try:
                rows.append([float(t) for t in tokens[:4]])
                if len(tokens) >= 10:
                    attrs.append([int(t) for t in tokens[4:10]])
                else:
                    has_attrs = False
            except ValueError:
                raise err(lineno, f"not a number in {' '.join(tokens)!r}") from None
        box = np.array(rows, dtype=np.float64).reshape(-1, 4)
        if not np.all(np.isfinite(box)):
            raise err(block.faces[-1][0], f"non-finite box value for {event}/{name}")
        if np.all(box == np.round(box)) and (box.size == 0 or np.abs(box).max() < 2**31):
            box = box.astype(np.int32)
        attr = np.array(attrs, dtype=np.int64).reshape(-1, 6) if attrs else np.zeros((0, 6), np.int64)
        if event not in per_event:
            order.append(event)
            per_event[event] = ([], [], [])
        per_event[event][0].append(name)
        per_event[event][1].append(box)
        per_event[event][2].append(attr)

    events = order
    images = [per_event[e][0] for e in events]
    boxes = [per_event[e][1] for e in events]
    attributes = None
    if has_attrs and events:
        attributes = {a: [[attr[:, j].astype(np.uint8) for attr in per_event[e][2]] for e in events]
                      for j, a in enumerate(ATTRIBUTE_NAMES)}

    if settings_from is None:
        keep = {s: [[np.arange(1, len(b) + 1, dtype=np.int64) for b in per] for per in boxes] for s in SETTINGS}
        return WiderGroundTruth(events, images, boxes, keep, attributes)

    ref = settings_from if isinstance(settings_from, WiderGroundTruth) else load_ground_truth(settings_from)
    where = {(ev, name): (e, i) for e, ev in enumerate(ref.events) for i, name in enumerate(ref.images[e])}
    keep = {s: [] for s in SETTINGS}
    for e, event in enumerate(events):
        per_setting = {s: [] for s in SETTINGS}
        for i, name in enumerate(images[e]):
            lineno = seen[event, name]
            if (event, name) not in where:
                raise err(lineno, f"image {event}/{name} is not in the .mat ground truth")
            re, ri = where[event, name]
            ref_boxes = np.asarray(ref.boxes[re][ri])
            if ref_boxes.shape != boxes[e][i].shape or not np.array_equal(ref_boxes, boxes[e][i]):
                # The setting lists index faces; they only apply to the very same boxes.
                raise err(lineno, f"boxes of {event}/{name} differ from the .mat ground truth "
                                  f"({len(boxes[e][i])} here, {len(ref_boxes)} there)")
            for s in SETTINGS:
                per_setting[s].append(np.asarray(ref.keep[s][re][ri]).ravel().astype(np.int64))
        for s in SETTINGS:
            keep[s].append(per_setting[s])
    return WiderGroundTruth(events, images, boxes, keep, attributes)


def save_text_ground_truth(gt: WiderGroundTruth, txt_path: PathLike) -> None:
    """Write ``gt`` in the official text layout (atomically). Attributes are written when present,
    zeros otherwise; the setting lists cannot be expressed in this format."""
    out: list[str] = []
    for e, event in enumerate(gt.events):
        for i, name in enumerate(gt.images[e]):
            b = np.asarray(gt.boxes[e][i])
            out.append(f"{event}/{name}.jpg")
            out.append(str(len(b)))
            if len(b) == 0:
                out.append("0 0 0 0 0 0 0 0 0 0 ")
                continue
            if gt.attributes is not None:
                attrs = np.stack([np.asarray(gt.attributes[a][e][i]).ravel() for a in ATTRIBUTE_NAMES], axis=1)
            else:
                attrs = np.zeros((len(b), 6), dtype=np.int64)
            values = b.tolist()
            for row, attr in zip(values, attrs.tolist()):
                out.append(" ".join(str(v) for v in row) + " " + " ".join(str(int(a)) for a in attr) + " ")
    with atomic_write(txt_path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(out) + "\n")
