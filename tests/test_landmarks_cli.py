"""The landmark commands through ``retinaface.cli.main``: train-landmarks, eval-landmarks (weights, and
prediction files in WFLW's and 300W's formats, malformed input as one line naming file:line) and
benchmark --task landmarks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from retinaface.cli import main
from retinaface.landmarks.formats import format_wflw_line, write_pts, write_wflw_list


def last_json(text: str):
    return json.loads(text.strip().splitlines()[-1])


def faces(count: int, num_points: int, seed: int = 0) -> np.ndarray:
    """Random faces whose outer eye corners are 40 px apart."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(20, 120, size=(count, num_points, 2))
    left, right = (60, 72) if num_points == 98 else (36, 45)
    points[:, left] = [50.0, 60.0]
    points[:, right] = [90.0, 60.0]
    return points


def write_wflw(path, points, attributes):
    lines = [format_wflw_line(p, [10, 10, 130, 130], a, f"img/{i}.jpg") for i, (p, a) in enumerate(zip(points, attributes))]
    write_wflw_list(path, lines)
    return path


def test_eval_landmarks_scores_a_wflw_prediction_list(tmp_path, capsys):
    gt = faces(3, 98)
    attributes = [{"pose": 1}, {"blur": 1}, {}]
    write_wflw(tmp_path / "gt.txt", gt, attributes)
    shift = np.array([3.0, 4.0])  # 5 px on every point: NME 5 / 40
    pred = gt + shift
    pred[2] += 3 * shift           # the third face: 20 px, NME 0.5: a failure at 0.1
    write_wflw(tmp_path / "pred.txt", pred, attributes)
    assert main(["eval-landmarks", "--pred", str(tmp_path / "pred.txt"), "--gt", str(tmp_path / "gt.txt"),
                 "--json"]) == 0
    out = capsys.readouterr().out
    scores = last_json(out)
    assert scores["count"] == 3
    assert scores["nme"] == pytest.approx((0.125 + 0.125 + 0.5) / 3, abs=1e-6)
    assert scores["fr@0.1"] == pytest.approx(1.0)  # 0.125 is a failure too
    assert scores["auc@0.1"] == pytest.approx(0.0)
    assert scores["subsets"]["pose"]["count"] == 1 and scores["subsets"]["blur"]["nme"] == pytest.approx(0.125)
    assert "pose" in out and "occlusion" in out  # the per-attribute table


def test_eval_landmarks_scores_a_300w_pts_folder(tmp_path, capsys):
    gt = faces(2, 68, seed=1)
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    for i, points in enumerate(gt):
        write_pts(tmp_path / "gt" / f"face{i}.pts", points)
        write_pts(tmp_path / "pred" / f"face{i}.pts", points + [2.0, 0.0])  # 2 px: NME 0.05
    assert main(["eval-landmarks", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--json"]) == 0
    scores = last_json(capsys.readouterr().out)
    assert scores["nme"] == pytest.approx(0.05, abs=1e-6) and scores["fr@0.1"] == 0.0
    assert scores["auc@0.1"] == pytest.approx(0.5, abs=1e-3)
    assert "subsets" not in scores


def test_malformed_input_is_one_line_naming_file_and_line(tmp_path, capsys):
    gt = faces(3, 98)
    write_wflw(tmp_path / "gt.txt", gt, [{}] * 3)
    lines = (tmp_path / "gt.txt").read_text().splitlines()
    lines[1] = lines[1].replace(lines[1].split()[5], "x1.5", 1)
    (tmp_path / "pred.txt").write_text("\n".join(lines) + "\n")
    assert main(["eval-landmarks", "--pred", str(tmp_path / "pred.txt"), "--gt", str(tmp_path / "gt.txt"),
                 "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{tmp_path / 'pred.txt'}:2:" in err and "not a number" in err
    # a .pts file with a point line missing
    (tmp_path / "gt_pts").mkdir()
    (tmp_path / "pred_pts").mkdir()
    write_pts(tmp_path / "gt_pts" / "a.pts", faces(1, 68)[0])
    text = (tmp_path / "gt_pts" / "a.pts").read_text().splitlines()
    (tmp_path / "pred_pts" / "a.pts").write_text("\n".join(text[:10] + text[11:]) + "\n")
    assert main(["eval-landmarks", "--pred", str(tmp_path / "pred_pts"), "--gt", str(tmp_path / "gt_pts")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "pred_pts" / "a.pts") + ":" in err
    # a prediction missing for a ground-truth file
    write_pts(tmp_path / "gt_pts" / "b.pts", faces(1, 68)[0])
    (tmp_path / "pred_pts" / "a.pts").write_text("\n".join(text) + "\n")
    assert main(["eval-landmarks", "--pred", str(tmp_path / "pred_pts"), "--gt", str(tmp_path / "gt_pts")]) == 2
    assert "b.pts: no prediction" in capsys.readouterr().err


def test_train_landmarks_then_eval_its_weights(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--synthetic-root", str(tmp_path / "synthetic"), "--synthetic-train", "32", "--synthetic-val", "8",
              "--input-size", "32", "--workers", "0", "--device", "cpu", "--no-progress", "--no-tensorboard"]
    assert main(["train-landmarks", *common, "--epochs", "1", "--batch-size", "16", "--output", str(run)]) == 0
    out = capsys.readouterr().out
    assert "wflw98" in out and (run / "last.pth").is_file() and "NME %" in out
    val = tmp_path / "synthetic" / "val" / "list_98pt_rect_attr_val.txt"
    assert main(["eval-landmarks", "--weights", str(run / "last.pth"), "--data", str(val), "--json",
                 "--output", str(tmp_path / "pred.txt")]) == 0
    scores = last_json(capsys.readouterr().out)
    assert scores["count"] == 8 and 0 < scores["nme"] < 2
    # the predictions it wrote score the same through --pred / --gt
    assert main(["eval-landmarks", "--pred", str(tmp_path / "pred.txt"), "--gt", str(val), "--json"]) == 0
    assert last_json(capsys.readouterr().out)["nme"] == pytest.approx(scores["nme"], abs=1e-5)
    # never overwrite a run folder
    assert main(["train-landmarks", *common, "--epochs", "1", "--output", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds an earlier run" in err
    # a model that predicts 98 points against 68-point ground truth
    assert main(["eval-landmarks", "--weights", str(run / "last.pth"), "--data",
                 str(tmp_path / "synthetic" / "val" / "list_68pt_rect_attr_val.txt")]) == 2
    assert "98 points" in capsys.readouterr().err


def test_benchmark_landmarks_prints_the_seed_networks_params_and_flops(capsys):
    assert main(["benchmark", "--task", "landmarks", "--json", "--repeats", "1", "--threads", "1"]) == 0
    rows = last_json(capsys.readouterr().out)
    seed = rows[0]
    assert (seed["network"], seed["points"], seed["input_size"]) == ("mobilenetv3_small", 21, 224)
    assert seed["params"] == 1_560_906 and seed["gflops"] == pytest.approx(0.122993904)
    assert {(r["network"], r["points"], r["input_size"]) for r in rows} >= {("pfld", 98, 112)}
    assert all(r["latency_ms"] > 0 for r in rows)
