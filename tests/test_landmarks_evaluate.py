"""Evaluation of predicted landmarks (whole set and WFLW's six subsets) and predictions written in
the ground truth's own format; on the real WFLW test faces when ../shared/real is present."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import require_real
from retinaface.landmarks import evaluate, formats, synthetic
from retinaface.landmarks.formats import WFLW_ATTRIBUTES, LandmarkSample


def wflw_samples(count: int) -> list:
    samples = []
    for i in range(count):
        points = np.zeros((98, 2))
        points[60], points[72] = [0, 0], [10.0 * (i + 1), 0]          # inter-ocular 10, 20, 30, ...
        flags = {name: int(j == i % 6) for j, name in enumerate(WFLW_ATTRIBUTES)}
        samples.append(LandmarkSample(f"img{i}.jpg", points, np.array([0, 0, 50, 50.0]), flags,
                                      format=formats.FORMAT_WFLW, name=f"ev/img{i}.jpg"))
    return samples


def test_evaluate_full_set_and_wflw_subsets():
    samples = wflw_samples(6)
    pred = np.stack([s.points for s in samples]) + [0.0, 2.0]          # 2 px everywhere
    result = evaluate.evaluate_landmarks(pred, samples)
    expected = 2.0 / (10.0 * np.arange(1, 7))                           # 0.2, 0.1, 0.0667, ...
    np.testing.assert_allclose(result.per_face, expected)
    assert result.nme == pytest.approx(expected.mean())
    assert result.failure_rate == pytest.approx(1 / 6)                  # only 0.2 > 0.1
    assert result.auc == pytest.approx(np.mean(np.clip(0.1 - expected, 0, None)) / 0.1, abs=5e-4)
    assert list(result.subsets) == list(WFLW_ATTRIBUTES)
    for i, name in enumerate(WFLW_ATTRIBUTES):
        subset = result.subsets[name]
        assert subset.count == 1 and subset.nme == pytest.approx(expected[i])
    table = result.table()
    assert table.splitlines()[1].split()[:3] == ["full", "6", f"{100 * expected.mean():.3f}"]


def test_evaluate_box_normalisation_without_boxes_uses_the_points_box():
    points = np.zeros((21, 2))
    points[:, 0] = np.linspace(0, 40, 21)
    points[:, 1] = np.linspace(0, 10, 21)                                # box 40 x 10 -> sqrt(400) = 20
    valid = np.ones(21, dtype=bool)
    valid[5] = False
    points[5] = np.nan
    sample = LandmarkSample("a.jpg", points, None, {}, valid, format=formats.FORMAT_AFLW2000, name="a")
    pred = np.nan_to_num(points) + [3.0, 4.0]
    pred[5] = [1e6, 1e6]                                                   # an unmarked point: ignored
    result = evaluate.evaluate_landmarks(pred[None], [sample], "box")
    assert result.nme == pytest.approx(5 / 20)
    assert result.subsets == {}
    sample.valid[6] = False   # an outer eye corner (AFLW 6 / 11) absent: no inter-ocular distance
    sample.source = "a.mat:1"
    with pytest.raises(ValueError, match="a.mat:1: the ground truth lacks a point of its inter-ocular distance"):
        evaluate.evaluate_landmarks(pred[None], [sample], "inter-ocular")


def test_evaluate_checks_shapes():
    samples = wflw_samples(2)
    with pytest.raises(ValueError, match=r"predictions have shape \(2, 68, 2\), expected \(2, 98, 2\)"):
        evaluate.evaluate_landmarks(np.zeros((2, 68, 2)), samples)


def test_write_predictions_wflw_round_trip(tmp_path):
    samples = wflw_samples(3)
    pred = np.random.default_rng(0).uniform(0, 60, size=(3, 98, 2))
    out = evaluate.write_predictions(pred, samples, tmp_path / "pred.txt")
    back = formats.read_wflw_list(out[0])
    np.testing.assert_allclose(np.stack([b.points for b in back]), pred, atol=1e-6)
    assert [b.name for b in back] == [s.name for s in samples]
    assert [b.attributes for b in back] == [s.attributes for s in samples]
    np.testing.assert_array_equal(back[0].box, samples[0].box)


def test_write_predictions_pts_round_trip(tmp_path):
    synthetic.write_synthetic_landmarks(tmp_path / "gt", count=3, size=128, layout="300w")
    gt = [formats.read_pts(p) for p in sorted((tmp_path / "gt").glob("*.pts"))]
    pred = np.stack([g.points for g in gt]) + 0.25
    written = evaluate.write_predictions(pred, gt, tmp_path / "pred")
    assert [p.name for p in written] == [f"{g.name}.pts" for g in gt]
    back = [formats.read_pts(p) for p in written]
    np.testing.assert_allclose(np.stack([b.points for b in back]), pred, atol=1e-6)
    # the files hold 300W's 1-based numbers like the ground truth's
    assert (tmp_path / "pred" / written[0].name).read_text().splitlines()[3].split()[0] == \
        f"{pred[0, 0, 0] + 1:.6f}"


def test_write_predictions_refuses_mixed_or_unwritable_formats(tmp_path):
    samples = wflw_samples(1) + [LandmarkSample("b", np.zeros((98, 2)), format=formats.FORMAT_PTS, name="b")]
    with pytest.raises(ValueError, match="several formats"):
        evaluate.write_predictions(np.zeros((2, 98, 2)), samples, tmp_path / "x")
    cofw = [LandmarkSample(None, np.zeros((29, 2)), format=formats.FORMAT_COFW, name="1")]
    with pytest.raises(ValueError, match="cannot write predictions in format 'cofw'"):
        evaluate.write_predictions(np.zeros((1, 29, 2)), cofw, tmp_path / "x")


def parse_raw_wflw(path):
    """Points of every line, parsed here without the package's reader."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return np.array([[float(v) for v in row[:196]] for row in rows]).reshape(len(rows), 98, 2)


def test_real_wflw_test_list_scores():
    path = require_real("landmarks", "wflw_test", "list_98pt_rect_attr_test.txt")
    samples = formats.read_wflw_list(path)
    assert len(samples) == 165
    gt = np.stack([s.points for s in samples])
    np.testing.assert_allclose(gt, parse_raw_wflw(path))
    perfect = evaluate.evaluate_landmarks(gt, samples)
    assert perfect.nme == 0.0 and perfect.failure_rate == 0.0 and perfect.auc == pytest.approx(1.0)
    # every point moved by (3, 4): each face's NME is 5 px over its outer-eye-corner distance
    raw = parse_raw_wflw(path)
    expected = 5.0 / np.linalg.norm(raw[:, 60] - raw[:, 72], axis=1)
    moved = evaluate.evaluate_landmarks(gt + [3.0, 4.0], samples)
    np.testing.assert_allclose(moved.per_face, expected, rtol=1e-12)
    assert moved.nme == pytest.approx(expected.mean(), rel=1e-12)
    assert moved.failure_rate == pytest.approx(np.mean(expected > 0.1))
    for name in WFLW_ATTRIBUTES:
        chosen = np.array([s.attributes[name] == 1 for s in samples])
        assert moved.subsets[name].count == chosen.sum()
        assert moved.subsets[name].nme == pytest.approx(expected[chosen].mean(), rel=1e-12)
