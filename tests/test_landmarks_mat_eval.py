"""``eval-landmarks --weights W --data`` on MATLAB ground truth: a folder of AFLW2000-3D ``.mat`` files
(its 21 manual points, or the 68 fitted ones for a 68-point model) scored with the box-size NME, a
COFW ``.mat`` scored with the inter-ocular NME (points 8 / 9); small files written in each format,
malformed ones ending in one line, and the real AFLW2000-3D faces of ../shared/real when present."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import require_real
from retinaface.cli import main
from retinaface.landmarks.models import create_landmark_model
from retinaface.landmarks.task import load_landmark_model, load_samples, predict_landmarks, save_landmark_checkpoint

scipy_io = pytest.importorskip("scipy.io")


def last_json(text: str):
    return json.loads(text.strip().splitlines()[-1])


def checkpoint(path, num_points: int, scheme: str):
    """An (untrained) 32-px PFLD: its predictions are fixed numbers, what the scoring is checked on."""
    model = create_landmark_model("pfld", num_points, 32, width=0.25)
    save_landmark_checkpoint(model, path, scheme, 0.1)
    return path


def by_hand_nme(pred: np.ndarray, gt: np.ndarray, distances: np.ndarray, marked: np.ndarray) -> float:
    """Mean over faces of the mean error over marked points divided by the face's distance."""
    errors = np.linalg.norm(pred - gt, axis=-1)
    return float(np.mean([e[m].mean() / d for e, d, m in zip(errors, distances, marked)]))


def write_aflw(folder, count: int = 3):
    """AFLW2000-3D files as PRNet ships them: ``pt2d`` (2 x 21, -1 where AFLW marks nothing) and
    ``pt3d_68`` (3 x 68), with the image beside each."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    truth = []
    for i in range(count):
        pt2d = rng.uniform(30, 90, size=(2, 21))
        pt2d[:, [3, 12 + i]] = -1  # not marked
        pt3d = np.vstack([rng.uniform(20, 100, size=(2, 68)), rng.normal(size=(1, 68))])
        scipy_io.savemat(folder / f"image{i:05d}.mat", {"pt2d": pt2d, "pt3d_68": pt3d})
        cv2.imwrite(str(folder / f"image{i:05d}.jpg"), rng.integers(0, 256, size=(120, 120, 3), dtype=np.uint8))
        truth.append((pt2d, pt3d))
    return truth


def test_aflw2000_folder_scores_68_fitted_points_for_a_68_point_model_with_box_nme(tmp_path, capsys):
    truth = write_aflw(tmp_path / "aflw")
    weights = checkpoint(tmp_path / "k68.pth", 68, "ibug68")
    assert main(["eval-landmarks", "--weights", str(weights), "--data", str(tmp_path / "aflw"), "--json"]) == 0
    out = capsys.readouterr().out
    scores = last_json(out)
    assert scores["count"] == 3 and scores["normalisation"] == "box" and "ibug68" in out

    samples = load_samples(tmp_path / "aflw", aflw_points="pt3d_68")
    gt = np.stack([pt3d[:2].T for _, pt3d in truth])  # origin 0: as stored
    np.testing.assert_array_equal(np.stack([s.points for s in samples]), gt)
    pred = predict_landmarks(load_landmark_model(weights), samples, 0.1)
    sizes = np.sqrt((gt[..., 0].max(1) - gt[..., 0].min(1)) * (gt[..., 1].max(1) - gt[..., 1].min(1)))
    assert scores["nme"] == pytest.approx(by_hand_nme(pred, gt, sizes, np.ones((3, 68), bool)), abs=1e-6)


def test_aflw2000_folder_scores_the_21_manual_points_leaving_out_unmarked_ones(tmp_path, capsys):
    truth = write_aflw(tmp_path / "aflw")
    weights = checkpoint(tmp_path / "k21.pth", 21, "aflw21")
    assert main(["eval-landmarks", "--weights", str(weights), "--data", str(tmp_path / "aflw"), "--json"]) == 0
    scores = last_json(capsys.readouterr().out)
    assert scores["count"] == 3 and scores["normalisation"] == "box"

    gt = np.stack([pt2d.T for pt2d, _ in truth])
    marked = np.all(gt >= 0, axis=-1)
    samples = load_samples(tmp_path / "aflw")
    pred = predict_landmarks(load_landmark_model(weights), samples, 0.1)
    sizes = []
    for g, m in zip(gt, marked):
        w, h = np.ptp(g[m, 0]), np.ptp(g[m, 1])
        sizes.append(np.sqrt(w * h))
    assert scores["nme"] == pytest.approx(by_hand_nme(pred, gt, np.array(sizes), marked), abs=1e-6)
    # a 68-point model on the 21 manual points: one line
    assert main(["eval-landmarks", "--weights", str(checkpoint(tmp_path / "k68.pth", 68, "ibug68")), "--data",
                 str(tmp_path / "aflw"), "--aflw-points", "pt2d"]) == 2
    assert "predicts 68 points" in capsys.readouterr().err


def test_cofw_mat_scores_with_the_inter_ocular_distance_of_points_8_and_9(tmp_path, capsys):
    rng = np.random.default_rng(1)
    count = 3
    images = np.empty((count, 1), dtype=object)
    phis = np.zeros((count, 87))
    for i in range(count):
        images[i, 0] = rng.integers(0, 256, size=(70, 80, 3), dtype=np.uint8)
        phis[i, :29] = rng.uniform(10, 70, 29)
        phis[i, 29:58] = rng.uniform(10, 60, 29)
        phis[i, 58:] = rng.integers(0, 2, 29)
    boxes = np.array([[8, 8, 60, 55]] * count, dtype=np.float64)
    path = tmp_path / "COFW_test_color.mat"
    scipy_io.savemat(path, {"IsT": images, "phisT": phis, "bboxesT": boxes})
    weights = checkpoint(tmp_path / "k29.pth", 29, "cofw29")
    assert main(["eval-landmarks", "--weights", str(weights), "--data", str(path), "--json"]) == 0
    scores = last_json(capsys.readouterr().out)
    assert scores["count"] == 3 and scores["normalisation"] == "inter-ocular"

    gt = np.stack([phis[:, :29], phis[:, 29:58]], axis=-1) - 1  # MATLAB's 1-based pixels
    pred = predict_landmarks(load_landmark_model(weights), load_samples(path), 0.1)
    ocular = np.linalg.norm(gt[:, 8] - gt[:, 9], axis=-1)
    assert scores["nme"] == pytest.approx(by_hand_nme(pred, gt, ocular, np.ones((3, 29), bool)), abs=1e-6)


def test_malformed_mat_files_end_in_one_line_naming_the_file(tmp_path, capsys):
    write_aflw(tmp_path / "aflw", count=2)
    weights = checkpoint(tmp_path / "k21.pth", 21, "aflw21")
    scipy_io.savemat(tmp_path / "aflw" / "bad.mat", {"pt2d": np.zeros((2, 20))})

    def fails(*args: str) -> str:
        assert main(["eval-landmarks", "--weights", str(weights), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        return err

    assert "bad.mat:0: pt2d has shape (2, 20), expected (2, 21)" in fails("--data", str(tmp_path / "aflw"))
    (tmp_path / "aflw" / "bad.mat").unlink()
    scipy_io.savemat(tmp_path / "aflw" / "no3d.mat", {"pt2d": np.ones((2, 21))})
    assert "no3d.mat:0: no 'pt3d_68' variable" in fails("--data", str(tmp_path / "aflw"), "--aflw-points", "pt3d_68")
    one_image = np.empty((1, 1), dtype=object)
    one_image[0, 0] = np.zeros((8, 8, 3), np.uint8)
    scipy_io.savemat(tmp_path / "cofw.mat", {"IsT": one_image, "phisT": np.zeros((1, 58))})
    assert "cofw.mat:0: phis has shape (1, 58)" in fails("--data", str(tmp_path / "cofw.mat"))
    (tmp_path / "empty").mkdir()
    assert "without .pts or AFLW2000-3D .mat files" in fails("--data", str(tmp_path / "empty"))
    # AFLW / COFW predictions have no file format to pair through --pred
    assert main(["eval-landmarks", "--pred", str(tmp_path / "aflw"), "--gt", str(tmp_path / "aflw")]) == 2
    assert "no file format of their own" in capsys.readouterr().err


def test_real_aflw2000_faces_score_on_their_68_fitted_points(tmp_path, capsys):
    root = require_real("landmarks", "aflw", "prnet_aflw2000")
    samples = load_samples(root, aflw_points="pt3d_68")
    assert len(samples) == 16 and all(s.points.shape == (68, 2) and s.image_path for s in samples)
    # image-left outer eye corner (36) left of the image-right one (45); points inside the 450 px images
    assert all(s.points[36, 0] < s.points[45, 0] for s in samples)
    assert np.mean([np.all((s.points > -20) & (s.points < 470)) for s in samples]) > 0.9
    weights = checkpoint(tmp_path / "k68.pth", 68, "ibug68")
    assert main(["eval-landmarks", "--weights", str(weights), "--data", str(root), "--json"]) == 0
    scores = last_json(capsys.readouterr().out)
    assert scores["count"] == 16 and scores["normalisation"] == "box"
