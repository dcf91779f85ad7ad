"""Dense-landmark accuracy, each metric defined as the literature defines it.

Shapes: ``pred`` and ``gt`` are ``(N, K, 2)`` (one face: ``(K, 2)``), 0-based pixel coordinates
(any common origin: every metric here is translation invariant). An optional ``mask`` ``(N, K)``
bool leaves out points the ground truth does not mark (AFLW's ``-1``); the mean is then over each
face's marked points.

* **NME** of one face: ``mean_k ||pred_k - gt_k||_2 / d`` (the mean point-to-point Euclidean error
  divided by one normalising distance ``d`` of the ground truth), reported as a fraction (papers
  print it x100, "4.5 %").
* ``d``, the normalising distances (:func:`normalising_distance`):

  - ``"inter-ocular"``: distance between the **outer eye corners** (300W 36 / 45, WFLW 60 / 72,
    COFW 8 / 9; see :mod:`~retinaface.landmarks.schemes` for the sources);
  - ``"inter-pupil"``: distance between the pupils (WFLW 96 / 97, COFW 16 / 17; 300W has no pupil
    points: the mean of eye contour points 36-41 and of 42-47);
  - ``"box"``: ``sqrt(w * h)`` of the face box (AFLW's normalisation; ``boxes`` ``(N, 4)`` as
    ``x_min y_min x_max y_max``).

* **FR@t** (failure rate): the share of faces whose NME is **greater than** ``t`` (0.1 by default).
* **CED** (cumulative error distribution): for each threshold ``x``, the share of faces with
  NME ``<= x``; :func:`ced_curve` samples it on ``0, step, 2 step, ..., t``.
* **AUC@t**: the area under the CED curve from 0 to ``t`` divided by ``t`` (1.0 when every face has
  NME 0). Integration: the trapezoid rule on the CED sampled every ``step = 1e-4`` (1001 points
  for ``t = 0.1``), the usual choice of the public evaluation code; on a step function it
  differs from the exact area by at most ``step / (2 t)`` (5e-4 at the defaults) and
  :func:`auc_exact` gives the exact area for comparison.
* **Mean pixel distance** (the seed report's "Avg PixelDiff"): the mean Euclidean distance in
  pixels over all points of all faces, at whatever size the coordinates are given (the network's
  input size in the report).
* The seed report's **ranking score**: ``params (millions) x FLOPs (G) x e^(mean pixel distance)``;
  its model (1.560906 M parameters, 0.122993904 GFLOPs, 6.85640465 px) scores 182.3724.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from .schemes import LandmarkScheme, get_scheme

NORMALISATIONS: Tuple[str, ...] = ("inter-ocular", "inter-pupil", "box")
DEFAULT_THRESHOLD = 0.1
DEFAULT_STEP = 1e-4

SchemeLike = Union[str, int, LandmarkScheme]


def _as_batch(points: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (N, K, 2) or (K, 2), got {np.shape(points)}")
    return array


def point_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(N, K)`` Euclidean distance of every predicted point to its ground truth."""
    pred, gt = _as_batch(pred, "pred"), _as_batch(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in shape")
    return np.linalg.norm(pred - gt, axis=-1)


def normalising_distance(gt: np.ndarray, normalisation: str = "inter-ocular", scheme: Optional[SchemeLike] = None,
                         boxes: Optional[np.ndarray] = None) -> np.ndarray:
    """``(N,)`` normalising distance of each ground-truth face (see the module docstring).
    ``scheme`` defaults to the one of ``K`` points; ``"box"`` needs ``boxes`` ``(N, 4)``."""
    gt = _as_batch(gt, "gt")
    if normalisation == "box":
        if boxes is None:
            raise ValueError("box normalisation needs the face boxes (x_min y_min x_max y_max)")
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) != len(gt):
            raise ValueError(f"{len(boxes)} boxes for {len(gt)} faces")
        return np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    layout = get_scheme(scheme if scheme is not None else gt.shape[1])
    if layout.num_points != gt.shape[1]:
        raise ValueError(f"scheme {layout.name} has {layout.num_points} points, the faces have {gt.shape[1]}")
    if normalisation == "inter-ocular":
        if layout.outer_eye_corners is None:
            raise ValueError(f"scheme {layout.name} has no eye corners; use 'inter-pupil' or 'box'")
        left, right = layout.outer_eye_corners
        return np.linalg.norm(gt[:, left] - gt[:, right], axis=-1)
    if normalisation == "inter-pupil":
        pupils = layout.pupil_points(gt)
        return np.linalg.norm(pupils[:, 0] - pupils[:, 1], axis=-1)
    raise ValueError(f"unknown normalisation {normalisation!r}; choose one of {list(NORMALISATIONS)}")


def nme_per_face(pred: np.ndarray, gt: np.ndarray, normalisation: str = "inter-ocular",
                 scheme: Optional[SchemeLike] = None, boxes: Optional[np.ndarray] = None,
                 mask: Optional[np.ndarray] = None) -> np.ndarray:
    """``(N,)`` NME of each face: the mean over its (marked) points of the point error, divided by
    its normalising distance."""
    errors = point_errors(pred, gt)
    distance = normalising_distance(gt, normalisation, scheme, boxes)
    if np.any(~(distance > 0)):
        bad = int(np.flatnonzero(~(distance > 0))[0])
        raise ValueError(f"face {bad}: {normalisation} distance is {distance[bad]} (the ground truth's "
                         "normalising points coincide or are missing)")
    if mask is None:
        return errors.mean(axis=1) / distance
    mask = np.asarray(mask, dtype=bool).reshape(errors.shape)
    counts = mask.sum(axis=1)
    if np.any(counts == 0):
        raise ValueError(f"face {int(np.flatnonzero(counts == 0)[0])} has no marked point")
    return np.where(mask, errors, 0.0).sum(axis=1) / counts / distance


def nme(pred: np.ndarray, gt: np.ndarray, normalisation: str = "inter-ocular", scheme: Optional[SchemeLike] = None,
        boxes: Optional[np.ndarray] = None, mask: Optional[np.ndarray] = None) -> float:
    """Mean over faces of :func:`nme_per_face`."""
    return float(nme_per_face(pred, gt, normalisation, scheme, boxes, mask).mean())


def failure_rate(nmes: Sequence[float], threshold: float = DEFAULT_THRESHOLD) -> float:
    """FR@threshold: the share of faces whose NME is greater than ``threshold``."""
    values = _nmes(nmes)
    return float(np.mean(values > threshold))


def _nmes(nmes: Sequence[float]) -> np.ndarray:
    values = np.asarray(nmes, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("no faces to score")
    if np.any(~np.isfinite(values)) or np.any(values < 0):
        raise ValueError("NMEs must be finite and non-negative")
    return values


def ced_curve(nmes: Sequence[float], threshold: float = DEFAULT_THRESHOLD, step: float = DEFAULT_STEP
              ) -> Tuple[np.ndarray, np.ndarray]:
    """``(thresholds, shares)``: the CED curve sampled at ``0, step, ..., threshold`` (both ends
    included); ``shares[i]`` is the share of faces with NME ``<= thresholds[i]``."""
    values = np.sort(_nmes(nmes))
    count = int(round(threshold / step))
    if count < 1 or not math.isclose(count * step, threshold, rel_tol=1e-9):
        raise ValueError(f"threshold {threshold} is not a whole number of steps of {step}")
    xs = np.arange(count + 1, dtype=np.float64) * step
    shares = np.searchsorted(values, xs, side="right") / len(values)
    return xs, shares


def auc(nmes: Sequence[float], threshold: float = DEFAULT_THRESHOLD, step: float = DEFAULT_STEP) -> float:
    """AUC@threshold: trapezoid-rule area under the sampled CED curve from 0 to ``threshold``,
    divided by ``threshold``."""
    xs, shares = ced_curve(nmes, threshold, step)
    area = float(np.sum((shares[1:] + shares[:-1]) * np.diff(xs)) / 2.0)
    return area / threshold


def auc_exact(nmes: Sequence[float], threshold: float = DEFAULT_THRESHOLD) -> float:
    """The exact area under the (step-function) CED curve from 0 to ``threshold``, divided by
    ``threshold``: the mean over faces of ``max(0, threshold - NME) / threshold``."""
    values = _nmes(nmes)
    return float(np.mean(np.clip(threshold - values, 0.0, None)) / threshold)


def mean_pixel_distance(pred: np.ndarray, gt: np.ndarray) -> float:
    """The mean Euclidean distance in pixels over all points of all faces ("Avg PixelDiff")."""
    return float(point_errors(pred, gt).mean())


def ranking_score(params_millions: float, gflops: float, pixel_distance: float) -> float:
    """The seed report's ranking score ``params (M) x FLOPs (G) x e^(mean pixel distance)``
    (smaller is better)."""
    return float(params_millions * gflops * math.exp(pixel_distance))


def points_box(points: np.ndarray, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """``x_min y_min x_max y_max`` of the (valid) points: the box to crop by when a data set has
    none (AFLW2000-3D) or to simulate a detector from ground truth."""
    points = np.asarray(points, dtype=np.float64)
    if valid is not None:
        points = points[np.asarray(valid, dtype=bool)]
    points = points[np.all(np.isfinite(points), axis=1)]
    if len(points) < 2:
        raise ValueError("need at least two finite points for a box")
    return np.concatenate([points.min(axis=0), points.max(axis=0)])
