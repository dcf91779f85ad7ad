"""Loop-by-loop reference of the *official* WIDER FACE evaluation (the MATLAB ``eval_tools``), for
tests and the benchmark only.

Written from ``shared/specs/widerface_eval.md`` in the shape of the MATLAB files: ``read_pred``
(one file per ground-truth image, exactly ``count`` lines, stable sort by score, "Invalid
format"), ``norm_score`` (single precision, running max from ``realmin('single')``),
``image_evaluation`` + ``boxoverlap`` (int32 arithmetic of the ground-truth boxes: MATLAB rounds
every integer-class result to nearest, halves away from zero, and saturates), ``image_pr_info``,
``dataset_pr_info`` and ``VOCap`` (``max`` skips NaN). Scalars and small Python loops only, so that
it is easy to check against the spec; it shares no code with the library.
"""
from __future__ import annotations

import math
import os

import numpy as np

SETTINGS = ("easy", "medium", "hard")
I32_MIN, I32_MAX = -(2**31), 2**31 - 1


# ---------------------------------------------------------------------------- MATLAB scalars
def m_int32(v: float) -> int:
    """int32(v): round to nearest, halves away from zero, saturate; NaN -> 0."""
    if math.isnan(v):
        return 0
    if math.isinf(v):
        return I32_MAX if v > 0 else I32_MIN
    # decided from the exact fraction (abs(v) + 0.5 can round up just below a half)
    frac = abs(v) - math.floor(abs(v))
    r = math.floor(abs(v)) + (1 if frac >= 0.5 else 0)
    r = r if v >= 0 else -r
    return max(I32_MIN, min(I32_MAX, r))


def m_idiv(a: int, b: int) -> int:
    """int32 ./ int32: the rounded quotient; x / 0 is intmax, intmin or 0."""
    if b == 0:
        return I32_MAX if a > 0 else I32_MIN if a < 0 else 0
    return m_int32(a / b)


def f32(v: float) -> float:
    return float(np.float32(v))


# ---------------------------------------------------------------------------- read_pred.m
def official_read_file(path):
    """-> (N, 5) float64 boxes as read_pred.m keeps them (sorted by score, stable), or the
    string 'invalid'. Physical lines; a line's numbers as str2num reads them (commas separate)."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line.strip() for line in lines]
    if len(lines) < 2:
        return "invalid"
    count_text = lines[1]
    if count_text == "":
        return np.zeros((0, 5))
    try:
        count = float(count_text.replace(",", " "))
    except ValueError:
        return "invalid"
    if not math.isfinite(count) or count != int(count):
        return "invalid"
    count = int(count)
    if count <= 0:
        return np.zeros((0, 5))
    rows = []
    for k in range(count):
        if k + 2 >= len(lines):
            return "invalid"
        tokens = lines[k + 2].replace(",", " ").split()
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            return "invalid"
        if len(values) < 5:
            return "invalid"
        rows.append(values[:5])
    bbx = np.array(rows, dtype=np.float64).reshape(-1, 5)
    # sort(bbx(:,5), 'descend') is stable: equal scores keep their file order
    order = sorted(range(len(bbx)), key=lambda i: -bbx[i, 4])
    return bbx[order]


def official_read_folder(pred_dir, events, images):
    """{(event, image): boxes} for every ground-truth image whose file exists; invalid -> empty."""
    preds = {}
    for e, event in enumerate(events):
        for name in images[e]:
            path = os.path.join(pred_dir, event, name + ".txt")
            if not os.path.isfile(path):
                continue  # missing: no detections
            boxes = official_read_file(path)
            preds[event, name] = np.zeros((0, 5)) if isinstance(boxes, str) else boxes
    return preds


def official_sort(preds):
    """The stable sort read_pred.m applies, for predictions given in memory."""
    out = {}
    for key, v in preds.items():
        v = np.array(v, dtype=np.float64).reshape(len(v), -1)[:, :5] if len(v) else np.zeros((0, 5))
        order = sorted(range(len(v)), key=lambda i: -v[i, 4])
        out[key] = v[order]
    return out


# ---------------------------------------------------------------------------- norm_score.m
def official_norm_score(preds):
    max_score = f32(np.finfo(np.float32).tiny)   # realmin('single')
    min_score = f32(np.finfo(np.float32).max)    # realmax('single')
    for v in preds.values():
        for s in v[:, 4]:
            max_score = max(max_score, f32(s))   # max(single, double) is single
            min_score = min(min_score, f32(s))
    out = {}
    for key, v in preds.items():
        v = v.copy()
        for i in range(len(v)):
            num = f32(f32(v[i, 4]) - min_score)
            den = f32(max_score - min_score)
            with np.errstate(divide="ignore", invalid="ignore"):
                v[i, 4] = float(np.float32(num) / np.float32(den))
        out[key] = v
    return out


# ---------------------------------------------------------------------------- boxoverlap.m
def official_boxoverlap(gt_corners, det, gt_is_int):
    """IoU of one detection (x1 y1 x2 y2, doubles) with every face. Integer-class faces: every
    result that mixes them with doubles is int32."""
    out = []
    for a in gt_corners:
        if gt_is_int:
            x1 = max(a[0], m_int32(det[0]))
            y1 = max(a[1], m_int32(det[1]))
            x2 = min(a[2], m_int32(det[2]))
            y2 = min(a[3], m_int32(det[3]))
            w = max(I32_MIN, min(I32_MAX, x2 - x1 + 1))
            h = max(I32_MIN, min(I32_MAX, y2 - y1 + 1))
            inter = max(I32_MIN, min(I32_MAX, w * h))
            aarea = max(I32_MIN, min(I32_MAX, (a[2] - a[0] + 1) * (a[3] - a[1] + 1)))
            barea = (det[2] - det[0] + 1) * (det[3] - det[1] + 1)
            union = max(I32_MIN, min(I32_MAX, m_int32(aarea + barea) - inter))
            o = m_idiv(inter, union)
        else:
            x1, y1 = max(a[0], det[0]), max(a[1], det[1])
            x2, y2 = min(a[2], det[2]), min(a[3], det[3])
            w, h = x2 - x1 + 1, y2 - y1 + 1
            inter = w * h
            aarea = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
            barea = (det[2] - det[0] + 1) * (det[3] - det[1] + 1)
            union = aarea + barea - inter
            o = inter / union if union != 0 else (math.inf if inter > 0 else math.nan)
        if w <= 0 or h <= 0:
            o = 0
        out.append(o)
    return out


# ---------------------------------------------------------------------------- evaluation.m
def official_image_evaluation(pred, gt_bbx, gt_is_int, ignore, iou_thresh):
    n_gt = len(gt_bbx)
    recall_list = [0] * n_gt
    proposal_list = [1] * len(pred)
    pred_recall = [0] * len(pred)
    if gt_is_int:
        gt_c = [[int(b[0]), int(b[1]), max(I32_MIN, min(I32_MAX, int(b[0]) + int(b[2]))),
                 max(I32_MIN, min(I32_MAX, int(b[1]) + int(b[3])))] for b in gt_bbx]
    else:
        gt_c = [[float(b[0]), float(b[1]), float(b[0]) + float(b[2]), float(b[1]) + float(b[3])] for b in gt_bbx]
    for h in range(len(pred)):
        det = [pred[h][0], pred[h][1], pred[h][0] + pred[h][2], pred[h][1] + pred[h][3]]
        overlap = official_boxoverlap(gt_c, det, gt_is_int)
        # [max_overlap, idx] = max(overlap_list): the first index of the largest (NaN skipped)
        idx, max_overlap = None, None
        for i, o in enumerate(overlap):
            if isinstance(o, float) and math.isnan(o):
                continue
            if max_overlap is None or o > max_overlap:
                idx, max_overlap = i, o
        if max_overlap is not None and max_overlap >= iou_thresh:
            if ignore[idx] == 0:
                recall_list[idx] = -1
                proposal_list[h] = 0
            elif recall_list[idx] == 0:
                recall_list[idx] = 1
        pred_recall[h] = sum(1 for r in recall_list if r == 1)
    return pred_recall, proposal_list


def official_image_pr_info(thresh_num, scores, proposal_list, pred_recall):
    info = np.zeros((thresh_num, 2))
    for t in range(1, thresh_num + 1):
        thresh = 1 - t / thresh_num
        r_index = None
        for i in range(len(scores)):
            if scores[i] >= thresh:
                r_index = i  # find(..., 1, 'last')
        if r_index is None:
            continue
        info[t - 1, 0] = sum(1 for p in proposal_list[:r_index + 1] if p == 1)
        info[t - 1, 1] = pred_recall[r_index]
    return info


def official_voc_ap(rec, prec):
    mrec = [0.0] + list(rec) + [1.0]
    mpre = [0.0] + list(prec) + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        a, b = mpre[i], mpre[i + 1]
        # MATLAB max(a, b) ignores a NaN operand
        mpre[i] = b if math.isnan(a) else a if math.isnan(b) else max(a, b)
    ap = 0.0
    for i in range(1, len(mrec)):
        if mrec[i] != mrec[i - 1]:
            ap += (mrec[i] - mrec[i - 1]) * mpre[i]
    return float(ap)


def official_evaluate(preds, events, images, boxes, keep, iou_threshold=0.5, num_thresholds=1000, sort=True):
    """-> ({setting: AP}, {setting: (recall, precision)}).

    ``preds``: {(event, image): (N, >=5) x y w h score} in file order (``sort``: apply read_pred's
    stable sort; pass False for what :func:`official_read_folder` returned, already sorted).
    ``boxes[e][i]``: (K, 4) x y w h, integer dtype = MATLAB int32; ``keep``: 1-based indices.
    """
    preds = official_sort(preds) if sort else {k: np.asarray(v, np.float64) for k, v in preds.items()}
    preds = {k: v for k, v in preds.items() if len(v)}
    preds = official_norm_score(preds)
    aps, curves = {}, {}
    for setting in SETTINGS:
        count_face = 0
        pr_curve = np.zeros((num_thresholds, 2))
        for e, event in enumerate(events):
            for i, name in enumerate(images[e]):
                gt_bbx = np.asarray(boxes[e][i]).reshape(-1, 4)
                keep_index = [int(k) for k in np.asarray(keep[setting][e][i]).ravel()]
                count_face += len(keep_index)
                pred = preds.get((event, name))
                if len(gt_bbx) == 0 or pred is None or len(pred) == 0:
                    continue
                ignore = [0] * len(gt_bbx)
                for k in keep_index:
                    ignore[k - 1] = 1
                gt_is_int = np.asarray(boxes[e][i]).dtype.kind in "iub"
                pred_recall, proposal_list = official_image_evaluation(
                    pred.tolist(), gt_bbx.tolist(), gt_is_int, ignore, iou_threshold)
                pr_curve += official_image_pr_info(num_thresholds, pred[:, 4].tolist(), proposal_list, pred_recall)
        precision = np.zeros(num_thresholds)
        recall = np.zeros(num_thresholds)
        with np.errstate(divide="ignore", invalid="ignore"):
            for t in range(num_thresholds):
                precision[t] = np.float64(pr_curve[t, 1]) / pr_curve[t, 0]
                recall[t] = np.float64(pr_curve[t, 1]) / count_face
        aps[setting] = official_voc_ap(recall, precision)
        curves[setting] = (recall, precision)
    return aps, curves


def official_evaluate_gt(preds, gt, **kwargs):
    """:func:`official_evaluate` with a ``WiderGroundTruth``-like object (events/images/boxes/keep)."""
    return official_evaluate(preds, gt.events, gt.images, gt.boxes, gt.keep, **kwargs)
