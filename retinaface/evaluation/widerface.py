"""WIDER FACE easy / medium / hard AP under two protocols: the official MATLAB ``eval_tools``
arithmetic (the default) and the widely used Python port's (``widerface_evaluate``).

:func:`evaluate` reproduces each program to 1e-6 AP on any prediction folder, as
``shared/specs/widerface_eval.md`` describes them step by step. Where they differ:

* ``official``: boxes sorted by score (stable) per image right after reading; scores normalized
  in single precision from the float32 min and max (running max starts at ``realmin('single')``,
  running min at ``realmax('single')``); IoU computed with the int32 arithmetic of MATLAB (the
  ground-truth boxes are int32: rounded intersection corners and union, IoU rounded to 0 or 1),
  so a detection matches the *first* face whose rounded IoU reaches the threshold;
* ``python-port``: file order kept; double-precision normalization with lo = min(1, min score)
  and hi = max(0, max score); float IoU, a detection matches its *best* face.

Papers compare against the official program; Pytorch_Retinaface's published numbers come from the
port. Reading a folder follows the protocol too (:mod:`retinaface.formats.predictions`).

The metric is vectorised over the whole data set: one batch of concatenated arrays, no Python
loop per detection, per threshold or per image. This module needs numpy only.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

import numpy as np

from ..conventions import DEFAULT_EVAL_PROTOCOL, EVAL_IOU_THRESHOLD, EVAL_NUM_THRESHOLDS
from ..formats.ground_truth import SETTINGS, WiderGroundTruth, open_ground_truth
from ..formats.predictions import (MissingPredictionsWarning, PredictionFolder, check_known, check_protocol,
                                   read_prediction_folder)

PathLike = Union[str, "os.PathLike[str]"]
Predictions = Mapping[tuple, np.ndarray]

NUM_THRESHOLDS = EVAL_NUM_THRESHOLDS
IOU_THRESHOLD = EVAL_IOU_THRESHOLD

# Pairs (detection, face of the same image) handled per vectorised step of the matching: large
# enough that numpy's per-call overhead vanishes, small enough that the temporaries stay in cache.
_PAIR_CHUNK = 1 << 17

_I32_MIN, _I32_MAX = -2.0**31, 2.0**31 - 1
_F32_REALMIN = np.float32(np.finfo(np.float32).tiny)   # MATLAB realmin('single')
_F32_REALMAX = np.float32(np.finfo(np.float32).max)    # MATLAB realmax('single')


@dataclass
class WiderEvalResult:
    """AP per setting under ``protocol``, the precision-recall curves they come from, and what the
    reading found. ``curves[setting] = (recall, precision)``, one value per score threshold, from
    the highest threshold to the lowest; precision is NaN where nothing was proposed.
    ``missing_images``: ground-truth images without predictions; ``invalid_files``: official
    "Invalid format" files (no detections); ``count_mismatches``: files whose count line disagrees
    with their box lines (both only known when a folder was read)."""

    easy: float
    medium: float
    hard: float
    curves: dict = field(default_factory=dict, repr=False)
    missing_images: int = 0
    protocol: str = DEFAULT_EVAL_PROTOCOL
    invalid_files: int = 0
    count_mismatches: int = 0

    def as_dict(self) -> dict:
        """``{"easy": AP, "medium": AP, "hard": AP}``: numbers only, as training logs and tables
        format them (:meth:`to_json` adds the protocol and the reading counts)."""
        return {"easy": self.easy, "medium": self.medium, "hard": self.hard}

    def to_json(self) -> dict:
        """The JSON form: the three APs, the protocol, and the reading counts."""
        return {**self.as_dict(), "protocol": self.protocol, "missing_images": self.missing_images,
                "invalid_files": self.invalid_files, "count_mismatches": self.count_mismatches}

    def __str__(self) -> str:
        return (f"easy: {self.easy:.4f}  medium: {self.medium:.4f}  hard: {self.hard:.4f}  "
                f"({self.protocol} protocol)")


# ============================================================================ evaluation
def _thresholds(num_thresholds: int) -> np.ndarray:
    # As both programs compute them: thr_t = 1 - t / T for t = 1..T, in float64.
    return 1.0 - (np.arange(num_thresholds, dtype=np.float64) + 1.0) / num_thresholds


def _voc_ap(recall: np.ndarray, precision: np.ndarray, official: bool) -> float:
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    # Precision envelope: each value becomes the maximum of itself and all later ones. MATLAB's
    # max skips NaN (np.fmax), numpy's np.maximum in the port spreads it; only positions where
    # recall does not change differ, so the AP agrees either way, but each follows its program.
    envelope = np.fmax if official else np.maximum
    mpre = envelope.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _mround(v: np.ndarray) -> np.ndarray:
    """MATLAB's conversion of doubles to int32: round to nearest, halves away from zero, saturate."""
    r = np.trunc(v)
    frac = v - r  # exact in floating point
    r = r + (frac >= 0.5) - (frac <= -0.5)
    return np.clip(r, _I32_MIN, _I32_MAX)


def _sat(v: np.ndarray) -> np.ndarray:
    """int32 saturation of an integer-valued float64 result."""
    return np.clip(v, _I32_MIN, _I32_MAX)


@dataclass
class _Flat:
    """The data set as concatenated columns, images in ground-truth order."""

    face_cols: tuple         # 4 x (M,) float64: x y w h
    face_int: np.ndarray     # (M,) bool: the face's box array has an integer dtype (MATLAB int32)
    face_off: np.ndarray     # (I,) index of each image's first face
    n_faces: np.ndarray      # (I,)
    det_cols: tuple          # 5 x (D,) float64: x y w h score
    n_dets: np.ndarray       # (I,)
    counted: dict            # setting -> (M,) bool: face counted in that setting
    num_counted: dict        # setting -> int: the programs' face count
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
    face_int = np.repeat(np.fromiter((b.dtype.kind in "iub" for b in box_list), dtype=bool, count=len(box_list)),
                         n_faces)
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
        # The face count is the length of each keep list (not the number of distinct faces).
        num_counted[s] = int(sizes.sum())
    return _Flat(face_cols, face_int, face_off, n_faces, det_cols, n_dets, counted, num_counted, missing)


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


def _match(det_cols: tuple, det_img: np.ndarray, face_cols: tuple, face_img: np.ndarray, face_int: np.ndarray,
           face_off: np.ndarray, n_faces: np.ndarray, iou_threshold: float, official: bool) -> np.ndarray:
    """For every detection, the index of the face it matches when that IoU is at least
    ``iou_threshold``, else -1: the first face of the image (ground-truth order) with the highest
    IoU, as MATLAB's ``max`` and numpy's ``argmax`` give. Faces that do not overlap have IoU 0 <
    threshold, so only faces that can overlap are examined.

    ``official``: pairs with an integer-class face use MATLAB's int32 arithmetic (detection corners
    rounded where they enter the intersection, integer union, IoU rounded: 0 or 1 in practice, so
    the first face reaching 1 wins); other pairs use doubles, as the port always does.
    """
    n = len(det_img)
    best = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(face_img) == 0:
        return best
    dx1, dy1 = det_cols[0], det_cols[1]
    dx2, dy2 = dx1 + det_cols[2], dy1 + det_cols[3]
    darea = ((dx2 - dx1) + 1) * ((dy2 - dy1) + 1)
    fx1, fy1 = face_cols[0], face_cols[1]
    fx2, fy2 = fx1 + face_cols[2], fy1 + face_cols[3]
    farea = ((fx2 - fx1) + 1) * ((fy2 - fy1) + 1)
    ints = face_int if official else np.zeros(len(fx1), dtype=bool)
    any_int, all_int = bool(ints.any()), bool(ints.all())
    if any_int:
        # int32 faces: corners and area in saturating integer arithmetic.
        ix2, iy2 = _sat(fx2), _sat(fy2)
        iarea = _sat(_sat(_sat(ix2 - fx1) + 1) * _sat(_sat(iy2 - fy1) + 1))
        fx2, fy2, farea = (np.where(ints, a, b) for a, b in ((ix2, fx2), (iy2, fy2), (iarea, farea)))
        # max(int32, double) is the int32 of the winner: the same as rounding the detection first.
        rx1, ry1, rx2, ry2 = (_mround(c) for c in (dx1, dy1, dx2, dy2))
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
        pint = True if all_int else (ints[cf] if any_int else False)

        def det(raw: np.ndarray, rounded: Optional[np.ndarray]) -> np.ndarray:
            if pint is True:
                return rounded[cd]
            if pint is False:
                return raw[cd]
            return np.where(pint, rounded[cd], raw[cd])

        iw = np.minimum(det(dx2, rx2 if any_int else None), fx2[cf]) - \
            np.maximum(det(dx1, rx1 if any_int else None), fx1[cf]) + 1
        ok = np.flatnonzero(iw > 0)
        cd, cf, iw = cd[ok], cf[ok], iw[ok]
        if pint is not True and pint is not False:
            pint = pint[ok]
        ih = np.minimum(det(dy2, ry2 if any_int else None), fy2[cf]) - \
            np.maximum(det(dy1, ry1 if any_int else None), fy1[cf]) + 1
        ok = np.flatnonzero(ih > 0)
        cd, cf, iw, ih = cd[ok], cf[ok], iw[ok], ih[ok]
        if pint is not True and pint is not False:
            pint = pint[ok]
        inter = iw * ih
        if pint is False:
            iou = inter / (darea[cd] + farea[cf] - inter)
        else:
            # MATLAB: int32 + double rounds, int32 ./ int32 rounds (halves away from zero).
            inter_i = _sat(_sat(iw) * _sat(ih))
            union = _sat(_mround(farea[cf] + darea[cd]) - inter_i)
            with np.errstate(divide="ignore", invalid="ignore"):
                iou_i = _mround(inter_i / union)
            if pint is True:
                iou = iou_i
            else:
                iou = np.where(pint, iou_i, inter / (darea[cd] + farea[cf] - inter))
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
    """For each normalized score, how many thresholds are <= it (NaN passes none). Equal to a
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


def _official_order(scores: np.ndarray, det_img: np.ndarray) -> Optional[np.ndarray]:
    """Permutation that sorts every image's detections by score, highest first, keeping the file
    order of equal scores (MATLAB's stable ``sort(..., 'descend')``); None when already sorted.
    Only the images that need it are sorted."""
    if scores.size < 2:
        return None
    rising = np.flatnonzero((scores[1:] > scores[:-1]) & (det_img[1:] == det_img[:-1]))
    if rising.size == 0:
        return None
    unsorted = np.zeros(int(det_img[-1]) + 1, dtype=bool)
    unsorted[det_img[rising]] = True
    pos = np.flatnonzero(unsorted[det_img])
    perm = np.arange(scores.size)
    # lexsort is stable: the image index is the primary key, the negated score the secondary.
    perm[pos] = pos[np.lexsort((-scores[pos], det_img[pos]))]
    return perm


def _normalize(scores: np.ndarray, official: bool) -> np.ndarray:
    """Global score normalization over every detection of every image (step 1 of the spec)."""
    if scores.size == 0:
        return scores
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if official:
            # norm_score.m: single-precision running max from realmin('single') and min from
            # realmax('single'); single op double is done in single.
            s32 = scores.astype(np.float32)
            hi = max(_F32_REALMIN, s32.max())
            lo = min(_F32_REALMAX, s32.min())
            return ((s32 - lo) / np.float32(hi - lo)).astype(np.float64)
        lo = min(1.0, float(scores.min()))
        hi = max(0.0, float(scores.max()))
        return (scores - lo) / (hi - lo)


def evaluate(predictions: Union[Predictions, PathLike], gt: Union[WiderGroundTruth, PathLike],
             protocol: str = DEFAULT_EVAL_PROTOCOL, iou_threshold: float = IOU_THRESHOLD,
             num_thresholds: int = NUM_THRESHOLDS, allow_missing: bool = False) -> WiderEvalResult:
    """WIDER FACE easy / medium / hard AP of ``predictions`` against ``gt``, computed as
    ``protocol``'s program computes it (``"official"``, the default, or ``"python-port"``).

    ``predictions``: a prediction folder (read with that protocol's reading rules, see
    :func:`retinaface.formats.read_prediction_folder`; ``allow_missing`` lets more than half of the
    images lack a file), or a mapping ``(event, image) -> (N, >=5) x y w h score`` in file order
    (the official protocol sorts it by score, as its reader does). ``gt``: a loaded ground truth,
    or a path for :func:`retinaface.formats.open_ground_truth`. Images without predictions count
    as images without detections; one :class:`MissingPredictionsWarning` says how many.
    Returns a :class:`WiderEvalResult` that names the protocol.
    """
    check_protocol(protocol)
    official = protocol == "official"
    if not float(iou_threshold) > 0:
        raise ValueError(f"iou_threshold must be > 0, got {iou_threshold}")
    if int(num_thresholds) != num_thresholds or num_thresholds < 1:
        raise ValueError(f"num_thresholds must be a positive integer, got {num_thresholds}")
    T = int(num_thresholds)
    if not isinstance(gt, WiderGroundTruth):
        gt = open_ground_truth(gt)
    folder: Optional[PredictionFolder] = None
    if isinstance(predictions, (str, os.PathLike)):
        folder = read_prediction_folder(predictions, gt, protocol, allow_missing)
        folder.warn(gt.num_images)
        predictions = folder.predictions
    else:
        check_known(predictions, gt)

    flat = _flatten(predictions, gt)
    if flat.missing and folder is None:
        warnings.warn(f"{flat.missing} of {gt.num_images} images have no predictions; they count as "
                      f"images without detections", MissingPredictionsWarning, stacklevel=2)

    n_img = len(flat.n_dets)
    det_img = np.repeat(np.arange(n_img, dtype=np.int64), flat.n_dets)
    det_cols = flat.det_cols
    if official:
        perm = _official_order(det_cols[4], det_img)
        if perm is not None:
            det_cols = tuple(c[perm] for c in det_cols)
    norm = _normalize(det_cols[4], official)

    # 2. Only images with faces and detections take part further.
    active = (flat.n_faces > 0) & (flat.n_dets > 0)
    det_cols = det_cols[:4]
    if not active.all():
        keep = active[det_img]
        det_img, norm = det_img[keep], norm[keep]
        det_cols = tuple(c[keep] for c in det_cols)
    seg_len = flat.n_dets[active]
    face_img = np.repeat(np.arange(n_img, dtype=np.int64), flat.n_faces)
    best = _match(det_cols, det_img, flat.face_cols, face_img, flat.face_int, flat.face_off, flat.n_faces,
                  float(iou_threshold), official)

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
        # A counted face is recalled by the first detection (in matching order) that matches it.
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
        aps[setting] = _voc_ap(recall, precision, official)
        curves[setting] = (recall, precision)
    return WiderEvalResult(easy=aps["easy"], medium=aps["medium"], hard=aps["hard"], curves=curves,
                           missing_images=flat.missing, protocol=protocol,
                           invalid_files=len(folder.invalid) if folder is not None else 0,
                           count_mismatches=len(folder.count_mismatch) if folder is not None else 0)
