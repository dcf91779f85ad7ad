"""Scoring predicted landmarks against ground-truth samples, and writing predictions in the ground
truth's own format.

:func:`evaluate_landmarks` gives the whole set's NME, FR@t and AUC@t (definitions:
:mod:`~retinaface.landmarks.metrics`) and, when the samples carry WFLW's six attribute flags, the same
three on each of WFLW's test subsets (the faces whose flag is 1: pose, expression, illumination,
make-up, occlusion, blur), as WFLW's papers tabulate them.

Normalisation: ``"inter-ocular"`` (outer eye corners; the default, WFLW's and 300W's),
``"inter-pupil"`` or ``"box"`` (``sqrt(w * h)`` of the sample's box; a sample without one, such as
AFLW2000-3D, uses the bounding box of its marked ground-truth points). Points a sample marks absent
(``valid`` False) are left out of its mean.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Union

import numpy as np

from .formats import (FORMAT_PTS, FORMAT_WFLW, WFLW_ATTRIBUTES, LandmarkSample, format_wflw_line, write_pts,
                      write_wflw_list)
from .metrics import DEFAULT_STEP, DEFAULT_THRESHOLD, auc, failure_rate, nme_per_face, points_box
from .schemes import get_scheme

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class SubsetScore:
    """NME, FR and AUC of a group of faces (``nan`` when the group is empty)."""

    name: str
    count: int
    nme: float
    failure_rate: float
    auc: float


@dataclass
class LandmarkEvaluation:
    """The scores of one prediction set: the whole set's ``nme``, ``failure_rate`` and ``auc`` (at
    ``threshold``), each face's NME (``per_face``) and, for WFLW samples, ``subsets`` by attribute."""

    nme: float
    failure_rate: float
    auc: float
    count: int
    normalisation: str
    threshold: float
    per_face: np.ndarray
    subsets: Dict[str, SubsetScore] = field(default_factory=dict)

    def table(self) -> str:
        """A plain-text table: one row for the full set, one per subset (NME in %)."""
        t = f"{self.threshold:g}"
        rows = [f"{'subset':<13} {'faces':>6} {'NME %':>7} {'FR@' + t + ' %':>10} {'AUC@' + t:>8}"]
        scores = [SubsetScore("full", self.count, self.nme, self.failure_rate, self.auc)] + list(self.subsets.values())
        for s in scores:
            rows.append(f"{s.name:<13} {s.count:>6d} {100 * s.nme:>7.3f} {100 * s.failure_rate:>10.2f} {s.auc:>8.4f}")
        return "\n".join(rows)


def _prediction_array(predictions: Union[np.ndarray, Sequence[np.ndarray]], samples: Sequence[LandmarkSample]
                      ) -> np.ndarray:
    if len(samples) == 0:
        raise ValueError("no ground-truth samples")
    counts = {s.num_points for s in samples}
    if len(counts) != 1:
        raise ValueError(f"ground-truth samples mix point counts {sorted(counts)}; score one scheme at a time")
    pred = np.asarray(predictions, dtype=np.float64)
    k = counts.pop()
    if pred.shape != (len(samples), k, 2):
        raise ValueError(f"predictions have shape {pred.shape}, expected ({len(samples)}, {k}, 2) for "
                         f"{len(samples)} samples of {k} points")
    return pred


def _score(name: str, nmes: np.ndarray, threshold: float, step: float) -> SubsetScore:
    if len(nmes) == 0:
        return SubsetScore(name, 0, math.nan, math.nan, math.nan)
    return SubsetScore(name, len(nmes), float(nmes.mean()), failure_rate(nmes, threshold), auc(nmes, threshold, step))


def evaluate_landmarks(predictions: Union[np.ndarray, Sequence[np.ndarray]], samples: Sequence[LandmarkSample],
                       normalisation: str = "inter-ocular", threshold: float = DEFAULT_THRESHOLD,
                       step: float = DEFAULT_STEP) -> LandmarkEvaluation:
    """Score ``predictions`` (``(N, K, 2)``, in the samples' coordinates) against ``samples`` (one
    scheme). See the module docstring."""
    pred = _prediction_array(predictions, samples)
    gt = np.stack([s.points for s in samples])
    masks = np.stack([s.valid_mask() for s in samples])
    boxes = None
    if normalisation == "box":
        boxes = np.stack([s.box if s.box is not None else points_box(s.points, s.valid_mask()) for s in samples])
    scheme = get_scheme(gt.shape[1])
    if normalisation != "box":
        needed = (list(scheme.outer_eye_corners or ()) if normalisation == "inter-ocular"
                  else [i for ref in scheme.pupils for i in ref])
        absent = [k for k, m in enumerate(masks) if not m[needed].all()]
        if absent:
            raise ValueError(f"{samples[absent[0]].source}: the ground truth lacks a point of its {normalisation} "
                             f"distance ({len(absent)} faces); use normalisation='box'")
    # absent ground-truth points are NaN (AFLW): give them a finite value; the mask leaves them out
    gt_filled = np.where(masks[..., None], gt, 0.0)
    pred_filled = np.where(masks[..., None], pred, 0.0)
    if not np.all(np.isfinite(pred_filled)):
        raise ValueError("predictions hold non-finite values at marked points")
    nmes = nme_per_face(pred_filled, gt_filled, normalisation, scheme, boxes, masks if not masks.all() else None)
    full = _score("full", nmes, threshold, step)
    subsets: Dict[str, SubsetScore] = {}
    if all(all(name in s.attributes for name in WFLW_ATTRIBUTES) for s in samples):
        for name in WFLW_ATTRIBUTES:
            chosen = np.array([int(s.attributes[name]) == 1 for s in samples])
            subsets[name] = _score(name, nmes[chosen], threshold, step)
    return LandmarkEvaluation(full.nme, full.failure_rate, full.auc, len(samples), normalisation, threshold, nmes,
                              subsets)


def write_predictions(predictions: Union[np.ndarray, Sequence[np.ndarray]], samples: Sequence[LandmarkSample],
                      output: PathLike) -> List[Path]:
    """Write ``predictions`` the way ``samples`` (the ground truth they were made for) are written,
    and return the files written:

    * WFLW lists: ``output`` is one list file; each line holds the predicted points and the ground
      truth's box, attribute flags and image path, so WFLW's tools read it like the ground truth;
    * 300W ``.pts``: ``output`` is a folder; one ``<name>.pts`` per face, named like its ground truth.

    AFLW2000-3D and COFW keep their annotations in MATLAB files of their own; predictions for them
    are not written by this function.
    """
    pred = _prediction_array(predictions, samples)
    formats = {s.format for s in samples}
    if len(formats) != 1:
        raise ValueError(f"samples come from several formats {sorted(formats)}; write one format at a time")
    kind = formats.pop()
    output = Path(output)
    if kind == FORMAT_WFLW:
        lines = [format_wflw_line(p, s.box if s.box is not None else points_box(p), s.attributes, s.name,
                                  s.origin) for p, s in zip(pred, samples)]
        return [write_wflw_list(output, lines)]
    if kind == FORMAT_PTS:
        names = [s.name for s in samples]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"several samples are named {duplicates[:3]}; .pts files would overwrite each other")
        output.mkdir(parents=True, exist_ok=True)
        return [write_pts(output / f"{s.name}.pts", p, s.origin) for p, s in zip(pred, samples)]
    raise ValueError(f"cannot write predictions in format {kind!r}; supported: {FORMAT_WFLW!r}, {FORMAT_PTS!r}")

