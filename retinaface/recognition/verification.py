"""Face verification evaluation: the 10-fold LFW protocol, TAR at fixed FAR, ROC curves.

Scores are cosine similarities of L2-normalized embeddings (higher = more alike); a pair is
predicted "same" when its score is at least the threshold.

* :func:`kfold_accuracy` -- the LFW protocol: the pairs are cut into ``n_folds`` contiguous folds (in
  file order, as LFW's ``pairs.txt`` lists its ten sets one after another); for each fold the
  threshold maximising accuracy on the other nine is applied to it. Mean and standard deviation
  (population, ``ddof=0``, as insightface reports it) over the folds.
* :func:`tar_at_far` -- true accept rate at the loosest threshold whose false accept rate on the
  impostor pairs does not exceed ``far``. With fewer than ``1 / far`` impostor pairs the threshold
  is the highest impostor score (FAR 0) and ``exact`` is False: the figure is an upper bound on
  strictness, not a measurement at that FAR.
* :func:`roc_curve` / :func:`plot_roc`.

The arithmetic here is numpy only; :func:`embed_images` and :func:`verify` run a model.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..conventions import ALIGNED_FACE_SIZE
from ..fileio import atomic_write
from .transforms import preprocess

DEFAULT_FOLDS = 10
DEFAULT_FARS: Tuple[float, ...] = (1e-3, 1e-4)


def _check_scores(scores: np.ndarray, issame: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    issame = np.asarray(issame, dtype=bool).reshape(-1)
    if scores.shape != issame.shape:
        raise ValueError(f"{scores.size} scores but {issame.size} same/different labels")
    if scores.size == 0:
        raise ValueError("no pairs to evaluate")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    return scores, issame


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Midpoints between consecutive distinct scores, plus one below the lowest and one above the
    highest: every distinct way of splitting ``scores`` into accept / reject, once."""
    values = np.unique(np.asarray(scores, dtype=np.float64))
    mids = (values[1:] + values[:-1]) / 2.0
    return np.concatenate([[values[0] - 1.0], mids, [values[-1] + 1.0]])


def accuracy_at(scores: np.ndarray, issame: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Accuracy of "same iff score >= t" for every ``t`` in ``thresholds`` (vectorised by sorting)."""
    scores, issame = _check_scores(scores, issame)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    same_sorted = issame[order]
    # below[t] = number of pairs with score < t, and how many of them are "same"
    below = np.searchsorted(sorted_scores, thresholds, side="left")
    same_below = np.concatenate([[0], np.cumsum(same_sorted)])[below]
    n_same = int(issame.sum())
    diff_below = below - same_below
    correct = (n_same - same_below) + diff_below  # same accepted + different rejected
    return correct / scores.size


def best_threshold(scores: np.ndarray, issame: np.ndarray) -> Tuple[float, float]:
    """``(threshold, accuracy)`` maximising accuracy on these pairs; ties go to the lowest threshold."""
    candidates = candidate_thresholds(scores)
    acc = accuracy_at(scores, issame, candidates)
    i = int(np.argmax(acc))
    return float(candidates[i]), float(acc[i])


def fold_indices(n: int, n_folds: int = DEFAULT_FOLDS) -> List[np.ndarray]:
    """Contiguous folds in file order (sizes differ by at most one)."""
    if n_folds < 2:
        raise ValueError(f"need at least 2 folds, got {n_folds}")
    if n < n_folds:
        raise ValueError(f"{n} pairs cannot make {n_folds} folds")
    return np.array_split(np.arange(n), n_folds)


def kfold_accuracy(scores: np.ndarray, issame: np.ndarray, n_folds: int = DEFAULT_FOLDS,
                   folds: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Per-fold test accuracy and the threshold each fold was tested at (chosen on the others).

    ``folds`` (one fold id per pair, e.g. from LFW's ``pairs.txt`` header) overrides the contiguous
    split into ``n_folds``."""
    scores, issame = _check_scores(scores, issame)
    accs, thresholds = [], []
    if folds is not None:
        folds = np.asarray(folds).reshape(-1)
        if folds.shape != scores.shape:
            raise ValueError(f"{folds.size} fold ids for {scores.size} pairs")
        ids = np.unique(folds)
        if ids.size < 2:
            raise ValueError("the pairs' folds name fewer than 2 folds")
        splits = [np.flatnonzero(folds == f) for f in ids]
    else:
        splits = fold_indices(scores.size, n_folds)
    for test in splits:
        train = np.ones(scores.size, dtype=bool)
        train[test] = False
        t, _ = best_threshold(scores[train], issame[train])
        accs.append(float(accuracy_at(scores[test], issame[test], np.array([t]))[0]))
        thresholds.append(t)
    return np.asarray(accs), np.asarray(thresholds)


@dataclasses.dataclass
class TarAtFar:
    far_target: float
    tar: float
    far: float        # the false accept rate actually reached at the threshold
    threshold: float  # accept when score > threshold
    exact: bool       # False: too few impostor pairs to reach this FAR (threshold = max impostor)


def tar_at_far(scores: np.ndarray, issame: np.ndarray, far: float) -> TarAtFar:
    """TAR at the loosest threshold with FAR <= ``far`` (accept when score > threshold)."""
    scores, issame = _check_scores(scores, issame)
    if not 0.0 < far < 1.0:
        raise ValueError(f"FAR must be in (0, 1), got {far}")
    genuine, impostor = scores[issame], scores[~issame]
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError("TAR at FAR needs both same and different pairs")
    allowed = int(np.floor(far * impostor.size + 1e-9))  # impostors that may pass
    desc = np.sort(impostor)[::-1]
    # accepting scores > desc[allowed] lets through at most ``allowed`` impostors (ties excluded)
    threshold = float(desc[min(allowed, impostor.size - 1)])
    if allowed >= impostor.size:
        threshold = float(desc[-1]) - 1.0
    return TarAtFar(far_target=float(far), tar=float((genuine > threshold).mean()),
                    far=float((impostor > threshold).mean()), threshold=threshold,
                    exact=impostor.size * far >= 1.0)


def roc_curve(scores: np.ndarray, issame: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` for "accept when score >= t", t from high to low (starts at 0, 0)."""
    scores, issame = _check_scores(scores, issame)
    thresholds = candidate_thresholds(scores)[::-1]
    pos = max(int(issame.sum()), 1)
    neg = max(int((~issame).sum()), 1)
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    below = np.searchsorted(sorted_scores, thresholds, side="left")
    same_below = np.concatenate([[0], np.cumsum(issame[order])])[below]
    tp = issame.sum() - same_below
    fp = (scores.size - below) - tp
    return fp / neg, tp / pos, thresholds


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


@dataclasses.dataclass
class VerificationResult:
    """What ``retinaface verify`` reports; :meth:`to_dict` is its JSON."""

    num_pairs: int
    num_same: int
    accuracy: float            # mean over folds
    accuracy_std: float        # population std over folds
    fold_accuracies: List[float]
    fold_thresholds: List[float]
    threshold: float           # best threshold on all pairs (for deployment; not a test figure)
    tar_at_far: List[TarAtFar]
    auc: float
    flip: bool = False
    name: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        tars = ", ".join(f"TAR@FAR={t.far_target:g}: {t.tar:.4f}{'' if t.exact else ' (too few pairs)'}"
                         for t in self.tar_at_far)
        prefix = f"{self.name}: " if self.name else ""
        return (f"{prefix}accuracy {self.accuracy:.4f} +- {self.accuracy_std:.4f} "
                f"({len(self.fold_accuracies)}-fold, {self.num_pairs} pairs), AUC {self.auc:.4f}, {tars}")


def evaluate_scores(scores: np.ndarray, issame: np.ndarray, n_folds: int = DEFAULT_FOLDS,
                    fars: Sequence[float] = DEFAULT_FARS, flip: bool = False, name: str = "",
                    folds: Optional[np.ndarray] = None) -> VerificationResult:
    """All verification figures of one set of pair scores. Fewer pairs than ``n_folds`` is an error;
    ``folds`` (a fold id per pair) replaces the contiguous split."""
    scores, issame = _check_scores(scores, issame)
    accs, thresholds = kfold_accuracy(scores, issame, n_folds, folds)
    fpr, tpr, _ = roc_curve(scores, issame)
    overall, _ = best_threshold(scores, issame)
    tars = [tar_at_far(scores, issame, f) for f in fars] if issame.any() and (~issame).any() else []
    return VerificationResult(num_pairs=int(scores.size), num_same=int(issame.sum()),
                              accuracy=float(accs.mean()), accuracy_std=float(accs.std()),
                              fold_accuracies=[float(a) for a in accs],
                              fold_thresholds=[float(t) for t in thresholds], threshold=overall,
                              tar_at_far=tars, auc=auc(fpr, tpr), flip=flip, name=name)


def plot_roc(curves: Dict[str, Tuple[np.ndarray, np.ndarray]], path: Union[str, Path]) -> None:
    """Write ROC curves (``{label: (fpr, tpr)}``) with a log FAR axis to ``path`` atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for label, (fpr, tpr) in curves.items():
        keep = fpr > 0  # the log axis has no 0
        ax.plot(fpr[keep], tpr[keep], label=label)
    ax.set_xscale("log")
    ax.set_xlim(1e-5, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format=fmt)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Running a model over pairs


def embed_images(model, images: Sequence[np.ndarray], batch_size: int = 64, flip: bool = False,
                 device: Optional[Any] = None, size: Optional[int] = None) -> np.ndarray:
    """L2-normalized embeddings ``(N, D)`` float32 of BGR uint8 crops (``(H, W, 3)``, resized to
    ``size`` x ``size`` when given and different). ``flip`` adds the embedding of each mirrored
    crop before normalizing (flip-feature fusion)."""
    import cv2
    import torch

    device = device if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                chunk = list(images[start:start + batch_size])
                if size is not None:
                    chunk = [im if im.shape[:2] == (size, size) else cv2.resize(im, (size, size))
                             for im in chunk]
                crops = np.ascontiguousarray(np.stack(chunk))
                batch = preprocess(crops).to(device)
                emb = model(batch).float()
                if flip:
                    emb = emb + model(torch.flip(batch, dims=[3])).float()
                out.append(torch.nn.functional.normalize(emb, dim=1).cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def pair_scores(emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
    """Cosine similarity of row-aligned L2-normalized embeddings."""
    return np.sum(np.asarray(emb_a, dtype=np.float64) * np.asarray(emb_b, dtype=np.float64), axis=1)


def pair_images(pairs) -> Tuple[List[np.ndarray], np.ndarray]:
    """``(images, issame)`` with images ``[a0, b0, a1, b1, ...]`` from a ``VerificationPairs`` (or
    anything with ``issame`` and ``images`` or ``paths``); paths are read with OpenCV."""
    import cv2

    issame = np.asarray(pairs.issame, dtype=bool)
    images = getattr(pairs, "images", None)
    if images is None:
        images = []
        for entry in pairs.paths:  # (path_a, path_b) per pair, or a flat list
            for path in (entry if isinstance(entry, (tuple, list)) else (entry,)):
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is None:
                    raise ValueError(f"{path}: cannot read this image")
                images.append(image)
    if len(images) != 2 * issame.size:
        raise ValueError(f"{len(images)} images for {issame.size} pairs (need two per pair)")
    return list(images), issame


def verify(model, pairs, flip: bool = False, n_folds: int = DEFAULT_FOLDS,
           fars: Sequence[float] = DEFAULT_FARS, batch_size: int = 64, name: str = "",
           return_scores: bool = False):
    """Embed both sides of every pair and evaluate; returns a :class:`VerificationResult`
    (and the scores with ``return_scores``)."""
    images, issame = pair_images(pairs)
    emb = embed_images(model, images, batch_size=batch_size, flip=flip, size=ALIGNED_FACE_SIZE)
    scores = pair_scores(emb[0::2], emb[1::2])
    folds = getattr(pairs, "folds", None)
    if folds is not None and len(np.unique(folds)) != n_folds:
        folds = None  # asked for another number of folds than the file defines
    result = evaluate_scores(scores, issame, n_folds=min(n_folds, issame.size), fars=fars, flip=flip,
                             name=name, folds=folds)
    return (result, scores) if return_scores else result


def write_json(data: Any, path: Union[str, Path]) -> None:
    """``data`` as indented JSON, written atomically."""
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
