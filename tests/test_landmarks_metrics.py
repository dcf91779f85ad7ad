"""Landmark metrics against hand computations on tiny arrays."""
from __future__ import annotations

import numpy as np
import pytest

from retinaface.landmarks import metrics


def faces(k: int) -> np.ndarray:
    return np.zeros((1, k, 2))


def test_nme_inter_ocular_300w_outer_corners():
    gt = faces(68)
    gt[0, 36] = [0, 0]
    gt[0, 45] = [10, 0]
    pred = gt.copy()
    pred[0, 0] += [3, 4]     # error 5
    pred[0, 1] += [6, 8]     # error 10
    assert metrics.nme(pred, gt) == pytest.approx(15 / 68 / 10, abs=1e-15)
    # errors at the normalising points count like any other, the distance is the ground truth's
    pred[0, 45] += [0, 2]
    assert metrics.nme(pred, gt) == pytest.approx(17 / 68 / 10, abs=1e-15)


def test_nme_inter_ocular_wflw_and_cofw_indices():
    gt = faces(98)
    gt[0, 60], gt[0, 72] = [0, 0], [0, 20]
    pred = gt + [0, 1]
    assert metrics.nme(pred, gt) == pytest.approx(1 / 20)
    gt = faces(29)
    gt[0, 8], gt[0, 9] = [1, 1], [5, 4]           # distance 5
    assert metrics.nme(gt + [1, 0], gt) == pytest.approx(1 / 5)


def test_nme_inter_pupil_300w_uses_eye_contour_means():
    gt = faces(68)
    eye = np.array([[0, 0], [1, 1], [2, 2], [3, 0], [4, 1], [2, 2]], dtype=float)  # mean (2, 1)
    gt[0, 36:42] = eye
    gt[0, 42:48] = eye + [6, 0]                                                      # mean (8, 1)
    pred = gt + [0.6, 0.8]                                                           # every point 1 px off
    assert metrics.normalising_distance(gt, "inter-pupil")[0] == pytest.approx(6.0)
    assert metrics.nme(pred, gt, "inter-pupil") == pytest.approx(1 / 6)
    # inter-ocular uses 36 (0, 0) and 45 (3 + 6, 0): 9
    assert metrics.nme(pred, gt, "inter-ocular") == pytest.approx(1 / 9)


def test_nme_inter_pupil_wflw_points_96_97():
    gt = faces(98)
    gt[0, 96], gt[0, 97] = [10, 10], [18, 16]     # distance 10
    gt[0, 60], gt[0, 72] = [0, 0], [40, 0]
    assert metrics.nme(gt + [2, 0], gt, "inter-pupil") == pytest.approx(0.2)


def test_nme_box_normalisation_and_mask():
    gt = np.random.default_rng(0).uniform(0, 50, size=(2, 21, 2))
    pred = gt + [1.2, 1.6]                          # 2 px on every point
    boxes = np.array([[0, 0, 4, 9], [10, 10, 26, 14]])   # sqrt(36) = 6, sqrt(64) = 8
    np.testing.assert_allclose(metrics.nme_per_face(pred, gt, "box", boxes=boxes), [2 / 6, 2 / 8])
    mask = np.ones((2, 21), dtype=bool)
    mask[0, 3] = False
    pred[0, 3] += 1000                               # an unmarked point's error does not count
    np.testing.assert_allclose(metrics.nme_per_face(pred, gt, "box", boxes=boxes, mask=mask), [2 / 6, 2 / 8])
    with pytest.raises(ValueError, match="needs the face boxes"):
        metrics.nme(pred, gt, "box")


def test_nme_refuses_degenerate_inputs():
    gt = faces(68)
    with pytest.raises(ValueError, match="face 0: inter-ocular distance is 0.0"):
        metrics.nme(gt, gt)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.nme(np.zeros((1, 68, 2)), np.zeros((1, 98, 2)))
    with pytest.raises(ValueError, match="unknown normalisation 'iod'"):
        metrics.nme(gt, gt, "iod")
    with pytest.raises(ValueError, match="retinaface5 has no eye corners"):
        metrics.nme(np.zeros((1, 5, 2)), np.zeros((1, 5, 2)))


def test_failure_rate_counts_strictly_greater():
    assert metrics.failure_rate([0.05, 0.1, 0.1000001, 0.3]) == 0.5
    assert metrics.failure_rate([0.05, 0.1, 0.1000001, 0.3], threshold=0.08) == 0.75


def test_ced_curve_and_auc_by_hand():
    nmes = [0.025, 0.055, 0.2]
    xs, shares = metrics.ced_curve(nmes, 0.1, 0.01)
    np.testing.assert_allclose(xs, np.arange(11) * 0.01)
    np.testing.assert_allclose(shares, [0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3])
    # trapezoids of width 0.01: 0, 0, 1/6, 1/3, 1/3, 1/2, 4 x 2/3 -> 4 x 0.01 = 0.04; / 0.1 = 0.4
    assert metrics.auc(nmes, 0.1, 0.01) == pytest.approx(0.4, abs=1e-12)
    # the exact area: mean(max(0, 0.1 - nme)) = (0.075 + 0.045 + 0) / 3 = 0.04
    assert metrics.auc_exact(nmes) == pytest.approx(0.4, abs=1e-12)
    assert metrics.auc(nmes) == pytest.approx(0.4, abs=5e-4)      # default grid: step 1e-4


def test_auc_extremes_and_errors():
    assert metrics.auc([0.0, 0.0]) == pytest.approx(1.0)
    assert metrics.auc([0.11, 0.5]) == 0.0
    with pytest.raises(ValueError, match="not a whole number of steps"):
        metrics.ced_curve([0.1], 0.1, 0.03)
    with pytest.raises(ValueError, match="finite and non-negative"):
        metrics.auc([float("nan")])


def test_mean_pixel_distance_and_seed_ranking_score():
    gt = np.zeros((2, 2, 2))
    pred = np.array([[[3, 0], [0, 4]], [[3, 4], [0, 0]]], dtype=float)   # 3, 4, 5, 0
    assert metrics.mean_pixel_distance(pred, gt) == pytest.approx(3.0)
    # the seed report: 1.560906 x 0.122993904 x e^6.85640465 = 182.3724
    assert metrics.ranking_score(1.560906, 0.122993904, 6.85640465) == pytest.approx(182.3724, abs=5e-5)
    assert metrics.ranking_score(1.0, 1.0, 0.0) == 1.0


def test_points_box_skips_absent_points():
    points = np.array([[1, 2], [5, 9], [np.nan, np.nan], [100, 100]])
    np.testing.assert_allclose(metrics.points_box(points, [True, True, True, False]), [1, 2, 5, 9])
