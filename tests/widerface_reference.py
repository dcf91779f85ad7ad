"""Loop-based reference of the *python-port* WIDER FACE evaluation (``widerface_evaluate``, the
program most PyTorch projects ship; not the official MATLAB code, whose reference is
``tests/widerface_official_reference.py``), for tests and the benchmark only.

It follows the port's steps in ``shared/specs/widerface_eval.md`` sentence by sentence, in the
port's shape (per-image IoU matrix, a greedy loop per detection, a loop per threshold), and is
deliberately slow and plain: the library's vectorised
``retinaface.evaluation.evaluate(..., protocol="python-port")`` must agree with it to 1e-6. It
shares no code with the library (it reads ``.mat`` files and prediction folders itself), so it
also checks the library's readers and writers.
"""
from __future__ import annotations

import os

import numpy as np

SETTINGS = ("easy", "medium", "hard")


# ---------------------------------------------------------------------------- inputs
def reference_load_mat_ground_truth(gt_dir):
    """-> (events, images, boxes, keep) read with scipy.io.loadmat as the port does."""
    import scipy.io

    main = scipy.io.loadmat(os.path.join(gt_dir, "wider_face_val.mat"))
    events = [str(main["event_list"][e][0][0]) for e in range(len(main["event_list"]))]
    images, boxes = [], []
    for e in range(len(events)):
        files = main["file_list"][e][0]
        images.append([str(files[i][0][0]) for i in range(len(files))])
        boxes.append([main["face_bbx_list"][e][0][i][0] for i in range(len(files))])
    keep = {}
    for s in SETTINGS:
        mat = scipy.io.loadmat(os.path.join(gt_dir, f"wider_{s}_val.mat"))
        keep[s] = [[mat["gt_list"][e][0][i][0] for i in range(len(images[e]))] for e in range(len(events))]
    return events, images, boxes, keep


def reference_read_predictions(pred_dir):
    """{(event, image): (N, 5) array} read line by line, like the port's ``get_preds``."""
    preds = {}
    for event in os.listdir(pred_dir):
        event_dir = os.path.join(pred_dir, event)
        if not os.path.isdir(event_dir):
            continue
        for fname in os.listdir(event_dir):
            if not fname.endswith(".txt") or fname.startswith("."):
                continue
            with open(os.path.join(event_dir, fname)) as f:
                lines = f.readlines()
            name = lines[0].rstrip("\r\n").split("/")[-1]
            if name.endswith(".jpg"):
                name = name[: -len(".jpg")]
            rows = []
            for line in lines[2:]:
                tokens = line.split()
                if not tokens:
                    continue
                rows.append([float(t) for t in tokens[:5]])
            preds[(event, name)] = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return preds


# ---------------------------------------------------------------------------- algorithm
def reference_iou(dets, faces):
    """IoU matrix (detections x faces) of corner boxes, +1 pixel convention, as the port's
    bbox_overlaps: 0 unless iw > 0 and ih > 0, else iw*ih / (area_det + area_face - iw*ih)."""
    dx1, dy1, dx2, dy2 = (dets[:, c][:, None] for c in range(4))
    fx1, fy1, fx2, fy2 = (faces[:, c][None, :] for c in range(4))
    face_area = ((fx2 - fx1) + 1) * ((fy2 - fy1) + 1)
    det_area = ((dx2 - dx1) + 1) * ((dy2 - dy1) + 1)
    iw = np.minimum(dx2, fx2) - np.maximum(dx1, fx1) + 1
    ih = np.minimum(dy2, fy2) - np.maximum(dy1, fy1) + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        ua = det_area + face_area - iw * ih
        iou = iw * ih / ua
    return np.where((iw > 0) & (ih > 0), iou, 0.0)


def reference_image_eval(pred, faces, counted, iou_threshold):
    """Greedy matching in file order, each detection to its best face -> (recalled so far after
    each detection, proposal flags)."""
    pred = np.array(pred, dtype=np.float64)
    faces = np.array(faces, dtype=np.float64)
    # Corners: x2 = x + w, y2 = y + h.
    pred[:, 2] = pred[:, 0] + pred[:, 2]
    pred[:, 3] = pred[:, 1] + pred[:, 3]
    faces[:, 2] = faces[:, 0] + faces[:, 2]
    faces[:, 3] = faces[:, 1] + faces[:, 3]
    overlaps = reference_iou(pred[:, :4], faces)
    recalled = [False] * len(faces)
    n_recalled = 0
    proposal = [True] * len(pred)
    recalled_after = [0] * len(pred)
    for h in range(len(pred)):
        row = overlaps[h]
        best = int(np.argmax(row))  # first on ties
        if row[best] >= iou_threshold:
            if not counted[best]:
                proposal[h] = False  # matched an ignored face: no longer a proposal
            elif not recalled[best]:
                recalled[best] = True
                n_recalled += 1
            # else: the face was already recalled; the detection stays a (false) proposal
        recalled_after[h] = n_recalled
    return recalled_after, proposal


def reference_last_positions(scores, num_thresholds):
    """Per threshold t (thr = 1 - (t + 1) / T), the last position in file order whose normalized
    score is at least thr, or None. (Independent of the setting, so computed once per image.)"""
    last = []
    for t in range(num_thresholds):
        thresh = 1 - (t + 1) / num_thresholds
        r_index = np.where(scores >= thresh)[0]
        last.append(int(r_index[-1]) if len(r_index) else None)
    return last


def reference_image_pr(last_positions, recalled_after, proposal):
    pr = np.zeros((len(last_positions), 2), dtype=np.float64)
    proposals_upto = []
    running = 0
    for flag in proposal:
        running += 1 if flag else 0
        proposals_upto.append(running)
    for t, r in enumerate(last_positions):
        if r is None:
            continue  # adds (0, 0)
        pr[t, 0] = proposals_upto[r]  # detections at positions 0..r still counting as proposals
        pr[t, 1] = recalled_after[r]  # faces recalled after position r
    return pr


def reference_voc_ap(rec, prec):
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def reference_evaluate(preds, events, images, boxes, keep, iou_threshold=0.5, num_thresholds=1000):
    """-> ({setting: AP}, {setting: (recall, precision)}).

    ``preds``: {(event, image): (N, >=5) x y w h score}; a missing image has no detections.
    ``boxes[e][i]``: (K, 4) x y w h; ``keep[setting][e][i]``: 1-based indices of counted faces.
    """
    # 1. Global score normalization over all detections of all images.
    preds = {k: np.array(v, dtype=np.float64).reshape(-1, np.shape(v)[1] if np.ndim(v) == 2 else 5)[:, :5]
             for k, v in preds.items()}
    lo, hi = 1.0, 0.0
    for v in preds.values():
        if len(v):
            lo = min(lo, float(np.min(v[:, 4])))
            hi = max(hi, float(np.max(v[:, 4])))
    diff = hi - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        for v in preds.values():
            v[:, 4] = (v[:, 4] - lo) / diff

    last_cache = {}
    aps, curves = {}, {}
    for setting in SETTINGS:
        count_face = 0
        pr_curve = np.zeros((num_thresholds, 2), dtype=np.float64)
        for e, event in enumerate(events):
            for i, name in enumerate(images[e]):
                faces = np.asarray(boxes[e][i], dtype=np.float64).reshape(-1, 4)
                keep_index = np.asarray(keep[setting][e][i]).ravel().astype(np.int64)
                count_face += len(keep_index)
                pred = preds.get((event, name), np.zeros((0, 5)))
                if len(faces) == 0 or len(pred) == 0:
                    continue
                counted = [False] * len(faces)
                for k in keep_index:
                    counted[k - 1] = True
                recalled_after, proposal = reference_image_eval(pred, faces, counted, iou_threshold)
                if (event, name) not in last_cache:
                    last_cache[event, name] = reference_last_positions(pred[:, 4], num_thresholds)
                pr_curve += reference_image_pr(last_cache[event, name], recalled_after, proposal)
        precision = np.zeros(num_thresholds)
        recall = np.zeros(num_thresholds)
        with np.errstate(divide="ignore", invalid="ignore"):
            for t in range(num_thresholds):
                precision[t] = pr_curve[t, 1] / pr_curve[t, 0]
                recall[t] = pr_curve[t, 1] / count_face
        aps[setting] = reference_voc_ap(recall, precision)
        curves[setting] = (recall, precision)
    return aps, curves


def reference_evaluate_gt(preds, gt, **kwargs):
    """:func:`reference_evaluate` with a ``WiderGroundTruth``-like object (events/images/boxes/keep)."""
    return reference_evaluate(preds, gt.events, gt.images, gt.boxes, gt.keep, **kwargs)
