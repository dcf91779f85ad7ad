"""WIDER FACE evaluation: prediction folders and the official easy / medium / hard AP.

Owns the prediction-folder format (:func:`read_predictions`, :func:`write_predictions`,
:func:`write_prediction_file`) and :func:`evaluate`, which gives the numbers of the official
evaluation (MATLAB / its widely used Python port) to 1e-6, quirks included, as described in
``shared/specs/widerface_eval.md``. The evaluation is vectorised over the whole data set: no
Python loop per detection, per threshold or per image on the hot path.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np

from ..fileio import atomic_write
from .ground_truth import SETTINGS, WiderGroundTruth, load_ground_truth

PathLike = Union[str, "os.PathLike[str]"]
Predictions = Mapping[tuple[str, str], np.ndarray]

NUM_THRESHOLDS = 1000
IOU_THRESHOLD = 0.5

# Pairs (detection, face of the same image) handled per vectorised step of the matching: large
# enough that numpy's per-call overhead vanishes, small enough that the temporaries stay in cache.
_PAIR_CHUNK = 1 << 17


class MissingPredictionsWarning(UserWarning):
    """Some ground-truth images have no prediction file (they count as images without detections)."""


class PredictionCountWarning(UserWarning):
    """The count line of some prediction files disagrees with the number of boxes they hold."""


@dataclass
class WiderEvalResult:
    """AP per setting, the precision-recall curves they come from, and how many images lacked
    predictions. ``curves[setting] = (recall, precision)``, one value per score threshold, from the
    highest threshold to the lowest; precision is NaN where nothing was proposed (as in the
    official evaluation)."""

    easy: float
    medium: float
    hard: float
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    missing_images: int = 0

    def as_dict(self) -> dict[str, float]:
        return {"easy": self.easy, "medium": self.medium, "hard": self.hard}

    def __str__(self) -> str:
        return f"easy: {self.easy:.4f}  medium: {self.medium:.4f}  hard: {self.hard:.4f}"


# ============================================================================ reading
def _image_name(line: str) -> str:
    """Line 1 of a prediction file -> image name: last path component, trailing '.jpg' removed."""
    name = line.strip().replace("\\", "/").rsplit("/", 1)[-1]
    return name[:-4] if name.lower().endswith(".jpg") else name


def _split_header(path: Path, data: bytes) -> tuple[str, Optional[int], bytes]:
    """-> (image name, count from line 2 or None, the bytes after line 2, which start at line 3)."""
    first_nl = data.find(b"\n")
    head = data if first_nl < 0 else data[:first_nl]
    try:
        name = _image_name(head.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}:1: image name is not valid UTF-8") from None
    if not name:
        raise ValueError(f"{path}:1: expected the image name, found "
                         + ("an empty file" if not data.strip() else "an empty line"))
    if first_nl < 0:
        return name, None, b""
    second_nl = data.find(b"\n", first_nl + 1)
    count_line = data[first_nl + 1:] if second_nl < 0 else data[first_nl + 1:second_nl]
    body = b"" if second_nl < 0 else data[second_nl + 1:]
    count_text = count_line.strip()
    if not count_text:
        if body.strip():
            raise ValueError(f"{path}:2: expected the number of detections, found an empty line")
        return name, None, b""
    try:
        count = int(count_text)
    except ValueError:
        shown = count_text.decode("utf-8", "replace")
        hint = " (a box line? the count line is missing)" if len(shown.split()) >= 5 else ""
        raise ValueError(f"{path}:2: expected the number of detections, got {shown!r}{hint}") from None
    return name, count, body


def _parse_body_slow(path: Path, body: bytes, first_lineno: int) -> np.ndarray:
    """Line-by-line parse of the box lines, used only when the fast path fails; raises
    ``ValueError("path:line: ...")`` on the first bad line."""
    rows = []
    for offset, raw in enumerate(body.split(b"\n")):
        tokens = raw.split()
        if not tokens:
            continue  # empty lines are skipped, as in the official reader
        lineno = first_lineno + offset
        shown = raw.strip().decode("utf-8", "replace")
        if len(tokens) < 5:
            raise ValueError(f"{path}:{lineno}: expected 'x y w h score', got {shown!r}")
        try:
            values = [float(t) for t in tokens[:5]]
        except ValueError:
            raise ValueError(f"{path}:{lineno}: not a number in {shown!r}") from None
        if not all(np.isfinite(values)):
            raise ValueError(f"{path}:{lineno}: non-finite value in {shown!r}")
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def _parse_bodies_fast(bodies: list[bytes]) -> Optional[list[np.ndarray]]:
    """Parse all box sections at once; None when any of them is not in the plain layout (every
    non-empty line exactly five numbers) so that the caller falls back to the per-file parse."""
    if not bodies:
        return []
    buf = b"\n".join(bodies) + b"\n"
    a = np.frombuffer(buf, dtype=np.uint8)
    ws = (a == 32) | ((a >= 9) & (a <= 13))  # the bytes str.split() splits ASCII text on
    is_start = ~ws
    is_start[1:] &= ws[:-1]
    starts = np.flatnonzero(is_start)
    if starts.size % 5:
        return None
    if starts.size:
        # Plain layout, checked without a per-byte line count: the first token of every group of
        # five follows a line feed, and the other four follow exactly one space or tab. Anything
        # else (leading blanks, extra tokens, short lines) goes to the per-line parse.
        groups = starts.reshape(-1, 5)
        first = groups[:, 0]
        if first[0] != 0 and a[first[0] - 1] != 10:
            return None
        if np.any(a[first[1:] - 1] != 10):
            return None
        inner = groups[:, 1:]
        before = a[inner - 1]
        if np.any((before != 32) & (before != 9)) or np.any(ws[inner - 2]):
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = np.fromstring(buf, dtype=np.float64, sep=" ")
        except ValueError:
            return None
        if values.size != starts.size or not np.all(np.isfinite(values)):
            return None
        values = values.reshape(-1, 5)
    else:
        values = np.zeros((0, 5), dtype=np.float64)
    # Rows per body: tokens whose start lies in each body's byte range.
    lengths = np.fromiter((len(b) + 1 for b in bodies), dtype=np.int64, count=len(bodies))
    ends = np.cumsum(lengths)
    rows = np.searchsorted(starts, ends, side="left") // 5
    return np.split(values, rows[:-1])


def _prediction_files(pred_dir: Path) -> list[tuple[str, Path]]:
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred_dir}")
    files = []
    for event_entry in sorted(os.scandir(pred_dir), key=lambda e: e.name):
        if event_entry.name.startswith(".") or not event_entry.is_dir():
            continue
        for entry in sorted(os.scandir(event_entry.path), key=lambda e: e.name):
            # Skip hidden files (e.g. temporaries of an interrupted atomic write).
            if entry.name.endswith(".txt") and not entry.name.startswith(".") and entry.is_file():
                files.append((event_entry.name, Path(entry.path)))
    return files


def read_predictions(pred_dir: PathLike,
                     gt: Optional[WiderGroundTruth] = None) -> dict[tuple[str, str], np.ndarray]:
    """Read a prediction folder ``<event>/<image>.txt`` into ``{(event, image): (N, 5) float64}``.

    Each file: line 1 the image name (path allowed; its last component, trailing ``.jpg`` removed,
    is the key, not the file name), line 2 the count (not trusted: every later non-empty line is
    read; a disagreement is reported by one :class:`PredictionCountWarning`), then
    ``x y w h score`` lines (extra tokens ignored) in file order. Malformed content raises
    ``ValueError("path:line: ...")``. With ``gt``, files naming images that are not in it raise
    ``ValueError`` (a wrong folder layout would otherwise silently score as missing images).
    """
    pred_dir = Path(pred_dir)
    files = _prediction_files(pred_dir)
    names, counts, bodies, origin = [], [], [], {}
    for event, path in files:
        with open(path, "rb") as handle:
            data = handle.read()
        name, count, body = _split_header(path, data)
        key = (event, name)
        if key in origin:
            raise ValueError(f"{path}:1: image {event}/{name} is also named by {origin[key]}")
        origin[key] = path
        names.append(key)
        counts.append(count)
        bodies.append(body)

    arrays = _parse_bodies_fast(bodies)
    if arrays is None:
        arrays = []
        for (event, path), body in zip(files, bodies):
            fast = _parse_bodies_fast([body])
            arrays.append(fast[0] if fast is not None else _parse_body_slow(path, body, 3))

    mismatched = [str(path) for (_, path), c, arr in zip(files, counts, arrays) if c is not None and c != len(arr)]
    if mismatched:
        warnings.warn(f"{len(mismatched)} prediction file(s) hold a different number of boxes than their "
                      f"count line says (all boxes are used), e.g. {mismatched[0]}",
                      PredictionCountWarning, stacklevel=2)

    predictions = dict(zip(names, arrays))
    if gt is not None:
        _check_known(predictions, gt, origin)
    return predictions


def _check_known(predictions: Predictions, gt: WiderGroundTruth, origin: Optional[dict] = None) -> None:
    known = set(gt.image_keys())
    unknown = [k for k in predictions if k not in known]
    if not unknown:
        return
    events = set(gt.events)
    shown = []
    for event, name in unknown[:5]:
        where = f" ({origin[event, name]})" if origin else ""
        why = "unknown event" if event not in events else "image not in this event"
        shown.append(f"{event}/{name}{where}: {why}")
    raise ValueError(f"{len(unknown)} prediction(s) name images that are not in the ground truth "
                     f"({gt.num_images} images in {len(gt.events)} events): " + "; ".join(shown)
                     + (" ..." if len(unknown) > 5 else ""))


# ============================================================================ writing
def _format_scores(scores: np.ndarray) -> list[str]:
    # As the official test script does (str of the detector's float): shortest round-trip text of
    # the value in its own precision.
    if scores.dtype == np.float32:
        return [str(s) for s in scores]
    return [repr(s) for s in scores.astype(np.float64).tolist()]


def _checked_detections(detections: np.ndarray, where: object) -> np.ndarray:
    dets = np.asarray(detections)
    if dets.size == 0:
        return np.zeros((0, 5), dtype=np.float64)
    if dets.ndim != 2 or dets.shape[1] < 5:
        raise ValueError(f"{where}: detections must be (N, >=5) [x1, y1, x2, y2, score, ...], got shape {dets.shape}")
    if not np.all(np.isfinite(dets[:, :5].astype(np.float64))):
        raise ValueError(f"{where}: detections contain non-finite values")
    return dets


def _wider_boxes(dets: np.ndarray) -> tuple[np.ndarray, list[str]]:
    # Integer x y w h as the test protocol writes them (int() truncates toward zero), and the
    # score text the file would hold.
    corners = np.trunc(dets[:, :4].astype(np.float64)).astype(np.int64)
    xywh = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
    return xywh, _format_scores(dets[:, 4])


def to_wider_rows(detections: np.ndarray) -> np.ndarray:
    """The ``(N, 5)`` float64 ``x y w h score`` rows a prediction file written from ``detections``
    (``(N, >=5)`` ``[x1, y1, x2, y2, score, ...]``) reads back as, so evaluating in memory gives
    exactly what writing the folder and evaluating it gives."""
    dets = _checked_detections(detections, "detections")
    xywh, scores = _wider_boxes(dets)
    rows = np.empty((len(dets), 5), dtype=np.float64)
    rows[:, :4] = xywh
    rows[:, 4] = [float(s) for s in scores]
    return rows


def write_prediction_file(path: PathLike, image_name: str, detections: np.ndarray) -> None:
    """Write one prediction file (atomically) from ``(N, >=5)`` ``[x1, y1, x2, y2, score, ...]``.

    Layout of the training recipe's test protocol: the image name without extension, the count,
    then ``x y w h score`` per box with ``x = int(x1)``, ``y = int(y1)``, ``w = int(x2) - int(x1)``,
    ``h = int(y2) - int(y1)`` (int truncates toward zero).
    """
    name = _image_name(str(image_name))
    if not name or "\n" in name or "\r" in name:
        raise ValueError(f"invalid image name {image_name!r}")
    dets = _checked_detections(detections, path)
    xywh, scores = _wider_boxes(dets)
    lines = [f"{a} {b} {c} {d} {s}\n" for (a, b, c, d), s in zip(xywh.tolist(), scores)]
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(f"{name}\n{len(lines)}\n")
        handle.write("".join(lines))


def write_predictions(pred_dir: PathLike, detections: Mapping[tuple[str, str], np.ndarray]) -> None:
    """Write a prediction folder ``<pred_dir>/<event>/<image>.txt``, one file per ``(event, image)``
    key, each written atomically (see :func:`write_prediction_file` for the layout)."""
    pred_dir = Path(pred_dir)
    for (event, image), dets in detections.items():
        if not event or "/" in event or "\\" in event or event.startswith("."):
            raise ValueError(f"invalid event folder name {event!r}")
        name = _image_name(image)
        write_prediction_file(pred_dir / event / f"{name}.txt", name, dets)


# ============================================================================ evaluation
def _thresholds(num_thresholds: int) -> np.ndarray:
    # Exactly as the official code computes them: thr_t = 1 - (t + 1) / T, in float64.
    return 1.0 - (np.arange(num_thresholds, dtype=np.float64) + 1.0) / num_thresholds


def _voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    # Precision envelope: each value becomes the maximum of itself and all later ones (NaN spreads,
    # as np.maximum does in the official loop).
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


@dataclass
class _Flat:
    """The data set as concatenated columns, images in ground-truth order."""

    face_cols: tuple         # 4 x (M,) float64: x y w h
    face_off: np.ndarray     # (I,) index of each image's first face
    n_faces: np.ndarray      # (I,)
    det_cols: tuple          # 5 x (D,) float64: x y w h score
    n_dets: np.ndarray       # (I,)
    counted: dict            # setting -> (M,) bool: face counted in that setting
    num_counted: dict        # setting -> int: the official face count
    missing: int


def _columns(arrays: list, width: int) -> tuple:
    # Column-wise concatenation: one (D, 5) block of a whole val set is larger than the size above
    # which the allocator hands fresh (page-faulting) memory out on every call.
    if not arrays:
        return tuple(np.zeros(0) for _ in range(width))
    return tuple(np.concatenate([a[:, c] for a in arrays]).astype(np.float64, copy=False) for c in range(width))


def _flatten(predictions: Predictions, gt: WiderGroundTruth) -> _Flat:
    box_list, det_list, keep_lists = [], [], {s: [] for s in SETTINGS}
    missing = 0
    for e, event in enumerate(gt.events):
        box_list.extend(np.asarray(b).reshape(-1, 4) for b in gt.boxes[e])
        for s in SETTINGS:
            keep_lists[s].extend(gt.keep[s][e])
        for name in gt.images[e]:
            dets = predictions.get((event, name))
            if dets is None:
                missing += 1
                det_list.append(np.zeros((0, 5)))
                continue
            dets = np.asarray(dets)
            if dets.size == 0:
                dets = np.zeros((0, 5))
            if dets.ndim != 2 or dets.shape[1] < 5:
                raise ValueError(f"predictions for {event}/{name}: expected (N, >=5) x y w h score, "
                                 f"got shape {dets.shape}")
            det_list.append(dets)
    n_faces = np.fromiter((len(b) for b in box_list), dtype=np.int64, count=len(box_list))
    n_dets = np.fromiter((len(d) for d in det_list), dtype=np.int64, count=len(det_list))
    face_cols = _columns(box_list, 4)
    det_cols = _columns(det_list, 5)
    if not all(np.isfinite(c).all() for c in det_cols):
        raise ValueError("predictions contain non-finite coordinates or scores")
    face_off = np.cumsum(n_faces) - n_faces
    counted, num_counted = {}, {}
    for s in SETTINGS:
        keeps = keep_lists[s]
        sizes = np.fromiter((np.size(k) for k in keeps), dtype=np.int64, count=len(keeps))
        mask = np.zeros(len(face_cols[0]), dtype=bool)
        if sizes.sum():
            idx = np.concatenate([np.asarray(k, dtype=np.int64).ravel() for k in keeps])
            mask[idx - 1 + np.repeat(face_off, sizes)] = True
        counted[s] = mask
        # The official face count is the length of each keep list (not the number of distinct faces).
        num_counted[s] = int(sizes.sum())
    return _Flat(face_cols, face_off, n_faces, det_cols, n_dets, counted, num_counted, missing)


def _corners(x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, ...]:
    x2, y2 = x + w, y + h
    # Areas with the +1 pixel convention, in the official order of operations.
    area = ((x2 - x) + 1) * ((y2 - y) + 1)
    return x, y, x2, y2, area


def _candidate_ranges(dx1, dx2, det_img, fx1, fx2, face_img, face_off, n_faces):
    """For every detection, a range [lo, hi) of positions in ``order`` (faces sorted by image, then
    x1) that holds every face of its image it can overlap horizontally: iw > 0 needs
    x1' < x2 + 1 and x2' > x1 - 1, and x2' <= x1' + (widest face of the image)."""
    n_img = len(n_faces)
    with_faces = np.flatnonzero(n_faces > 0)
    widest = np.zeros(n_img)
    widest[with_faces] = np.maximum(np.maximum.reduceat(fx2 - fx1, face_off[with_faces]), 0.0)
    span = max(float(np.abs(fx1).max()), float(np.abs(fx2).max()),
               float(np.abs(dx1).max()), float(np.abs(dx2).max()))
    margin = 2.0
    # Images are laid side by side on one axis, `stride` apart, so that one sorted array and one
    # searchsorted serve all images; the margin dwarfs the rounding of adding the offsets.
    stride = 2.0 * (span + float(widest.max()) + 2.0 * margin) + 2.0
    if not np.isfinite(stride) or stride * n_img > 2.0**40:
        # Absurd coordinates: compare with every face of the image (still exact, just slower).
        order = np.arange(len(fx1))
        return order, face_off[det_img], face_off[det_img] + n_faces[det_img]
    face_key = fx1 + face_img * stride
    order = np.argsort(face_key, kind="stable")
    sorted_key = face_key[order]
    det_base = det_img * stride
    lo = np.searchsorted(sorted_key, (dx1 - widest[det_img] - margin) + det_base, side="left")
    hi = np.searchsorted(sorted_key, (dx2 + margin) + det_base, side="right")
    return order, lo, np.maximum(hi, lo)


def _match(det_cols: tuple, det_img: np.ndarray, face_cols: tuple, face_img: np.ndarray,
           face_off: np.ndarray, n_faces: np.ndarray, iou_threshold: float) -> np.ndarray:
    """For every detection, the index of its best face when that IoU is at least
    ``iou_threshold``, else -1. The best face is the first face of the image (in ground-truth
    order) with the highest IoU, as the official argmax gives. Faces that do not overlap have
    IoU 0 < threshold, so only faces that can overlap are examined."""
    n = len(det_img)
    best = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(face_img) == 0:
        return best
    dx1, dy1, dx2, dy2, darea = _corners(*det_cols[:4])
    fx1, fy1, fx2, fy2, farea = _corners(*face_cols)
    order, lo, hi = _candidate_ranges(dx1, dx2, det_img, fx1, fx2, face_img, face_off, n_faces)
    cnt = hi - lo
    cum = np.cumsum(cnt)
    if cum[-1] == 0:
        return best
    # Chunks of about _PAIR_CHUNK candidate pairs keep the temporaries small.
    bounds = np.searchsorted(cum, np.arange(_PAIR_CHUNK, int(cum[-1]), _PAIR_CHUNK), side="left")
    bounds = np.unique(np.concatenate(([0], bounds, [n])))
    found_d, found_f, found_v = [], [], []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        k = cnt[a:b]
        ck = np.cumsum(k)
        p = int(ck[-1])
        if p == 0:
            continue
        # Candidate pairs, detection-major: detection cd with face order[lo + 0 .. lo + k - 1].
        cd = np.repeat(np.arange(a, b), k)
        cf = order[np.arange(p, dtype=np.int64) - np.repeat(ck - k - lo[a:b], k)]
        iw = np.minimum(dx2[cd], fx2[cf]) - np.maximum(dx1[cd], fx1[cf]) + 1
        ok = np.flatnonzero(iw > 0)
        cd, cf, iw = cd[ok], cf[ok], iw[ok]
        ih = np.minimum(dy2[cd], fy2[cf]) - np.maximum(dy1[cd], fy1[cf]) + 1
        ok = np.flatnonzero(ih > 0)
        cd, cf, iw, ih = cd[ok], cf[ok], iw[ok], ih[ok]
        inter = iw * ih
        iou = inter / (darea[cd] + farea[cf] - inter)
        ok = np.flatnonzero(iou >= iou_threshold)
        found_d.append(cd[ok])
        found_f.append(cf[ok])
        found_v.append(iou[ok])
    if not found_d:
        return best
    cd = np.concatenate(found_d)
    if cd.size == 0:
        return best
    cf = np.concatenate(found_f)
    cv = np.concatenate(found_v)
    # Pairs are grouped by detection: take the group's highest IoU, then the lowest face index
    # among the pairs that reach it (candidates come in x order, not in face order).
    new = np.empty(cd.size, dtype=bool)
    new[0] = True
    np.not_equal(cd[1:], cd[:-1], out=new[1:])
    group = np.cumsum(new) - 1
    at_max = np.flatnonzero(cv == np.maximum.reduceat(cv, np.flatnonzero(new))[group])
    g = group[at_max]
    g_start = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))
    best[cd[at_max[g_start]]] = np.minimum.reduceat(cf[at_max], g_start)
    return best


def _passing_counts(s: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """For each normalised score, how many thresholds are <= it (NaN passes none). Equal to a
    searchsorted on the thresholds, but a direct guess from the formula plus exact corrections."""
    T = len(thr)
    # thr_t <= s  <=>  t >= first(s); guess first(s) from thr_t = 1 - (t + 1) / T, then fix it
    # with exact comparisons against the thresholds themselves.
    with np.errstate(invalid="ignore"):
        g = np.ceil((1.0 - s) * T) - 1.0
    g = np.nan_to_num(g, nan=float(T))
    g = np.clip(g, 0, T).astype(np.int64)
    ext = np.concatenate((thr, [-np.inf]))  # position T: past the last threshold
    for _ in range(T + 1):
        up = (g < T) & (ext[g] > s)          # guessed too early: threshold still above s
        down = (g > 0) & (ext[g - 1] <= s)   # guessed too late: an earlier threshold passes too
        if not up.any() and not down.any():
            break
        g += up
        g -= down
    u = T - g
    u[np.isnan(s)] = 0
    return u


def _segment_suffix_max(values: np.ndarray, seg_len: np.ndarray, bound: int) -> np.ndarray:
    """Per position j, the maximum of ``values`` over the later positions of j's segment (0 when
    j is last). ``values`` are integers in [0, bound]; segments are contiguous and cover all."""
    n = len(values)
    after = np.zeros(n, dtype=np.int64)
    if n == 0:
        return after
    seg_id = np.repeat(np.arange(len(seg_len), dtype=np.int64), seg_len)
    # Walking backwards, each segment is lifted above all segments met before it, so one running
    # maximum restarts at every segment boundary (exact: integers).
    lift = (len(seg_len) - 1 - seg_id) * (bound + 1)
    incl = np.maximum.accumulate((values + lift)[::-1])[::-1] - lift
    after[:-1] = incl[1:]
    after[np.cumsum(seg_len) - 1] = 0  # last detection of each image: nothing after it
    return after


def evaluate(predictions: Union[Predictions, PathLike], gt: Union[WiderGroundTruth, PathLike],
             iou_threshold: float = IOU_THRESHOLD, num_thresholds: int = NUM_THRESHOLDS) -> WiderEvalResult:
    """WIDER FACE easy / medium / hard AP of ``predictions`` (a prediction folder, or the mapping
    :func:`read_predictions` returns: ``(event, image) -> (N, >=5)`` x y w h score in file order)
    against ``gt`` (a loaded ground truth or its directory).

    Images without predictions count as images without detections; how many there were is in
    ``missing_images`` and reported by one :class:`MissingPredictionsWarning`.
    """
    if not isinstance(gt, WiderGroundTruth):
        gt = load_ground_truth(gt)
    if isinstance(predictions, (str, os.PathLike)):
        predictions = read_predictions(predictions, gt)
    else:
        _check_known(predictions, gt)
    if not float(iou_threshold) > 0:
        raise ValueError(f"iou_threshold must be > 0, got {iou_threshold}")
    if int(num_thresholds) != num_thresholds or num_thresholds < 1:
        raise ValueError(f"num_thresholds must be a positive integer, got {num_thresholds}")
    T = int(num_thresholds)

    flat = _flatten(predictions, gt)
    if flat.missing:
        warnings.warn(f"{flat.missing} of {gt.num_images} images have no prediction file; they count as "
                      f"images without detections", MissingPredictionsWarning, stacklevel=2)

    # 1. Global normalisation over every detection, as the official code does it (lo <= 1, hi >= 0).
    scores = flat.det_cols[4]
    norm = scores
    if scores.size:
        lo = min(1.0, float(scores.min()))
        hi = max(0.0, float(scores.max()))
        with np.errstate(divide="ignore", invalid="ignore"):
            norm = (scores - lo) / (hi - lo)

    # 2. Only images with faces and detections take part further.
    n_img = len(flat.n_dets)
    active = (flat.n_faces > 0) & (flat.n_dets > 0)
    det_img = np.repeat(np.arange(n_img, dtype=np.int64), flat.n_dets)
    det_cols = flat.det_cols[:4]
    if not active.all():
        keep = active[det_img]
        det_img, norm = det_img[keep], norm[keep]
        det_cols = tuple(c[keep] for c in det_cols)
    seg_len = flat.n_dets[active]
    face_img = np.repeat(np.arange(n_img, dtype=np.int64), flat.n_faces)
    best = _match(det_cols, det_img, flat.face_cols, face_img, flat.face_off, flat.n_faces,
                  float(iou_threshold))

    # Thresholds. Detection j passes the last u_j thresholds (those <= its score). It is the
    # "last position with score >= thr" of its image exactly for t in [T - u_j, T - after_j),
    # after_j being the largest u of the image's later detections: only those with u_j > after_j
    # ever are, and each adds its running counts to its range of thresholds.
    thr = _thresholds(T)
    u = _passing_counts(norm, thr)
    after = _segment_suffix_max(u, seg_len, T)
    rec = np.flatnonzero(u > after)
    t_from = T - u[rec]
    t_to = T - after[rec]
    # Running counts restart per image: subtract the total reached before the image's first detection.
    rec_base = np.repeat(np.cumsum(seg_len) - seg_len, seg_len)[rec]

    def spread(values: np.ndarray) -> np.ndarray:
        # Add values[r] to every threshold of its range [t_from, t_to) (exact: integer sums).
        diff = np.bincount(t_from, values, T + 1) - np.bincount(t_to, values, T + 1)
        return np.cumsum(diff)[:T]

    matched = best >= 0
    best_or_0 = np.where(matched, best, 0)
    aps, curves = {}, {}
    for setting in SETTINGS:
        counted = flat.counted[setting][best_or_0] & matched
        # A detection matched to an ignored face stops counting as a proposal.
        proposal = ~matched | counted
        # A counted face is recalled by the first detection (in file order) that matches it.
        hits = np.flatnonzero(counted)
        _, first = np.unique(best[hits], return_index=True)
        recall_event = np.zeros(len(best), dtype=np.int64)
        recall_event[hits[first]] = 1
        cum_p = np.concatenate(([0], np.cumsum(proposal, dtype=np.int64)))
        cum_r = np.concatenate(([0], np.cumsum(recall_event)))
        proposals = spread((cum_p[rec + 1] - cum_p[rec_base]).astype(np.float64))
        recalled = spread((cum_r[rec + 1] - cum_r[rec_base]).astype(np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = recalled / proposals
            recall = recalled / flat.num_counted[setting]
        aps[setting] = _voc_ap(recall, precision)
        curves[setting] = (recall, precision)
    return WiderEvalResult(easy=aps["easy"], medium=aps["medium"], hard=aps["hard"], curves=curves,
                           missing_images=flat.missing)
