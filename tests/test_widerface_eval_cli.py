"""tools/widerface_eval.py end to end on the synthetic set (a checkpoint run: prediction files
written as images finish, undecodable images, --strict), and the test-time augmentation it offers.
The --preds path without a model is in tests/test_eval_cli_preds.py."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from retinaface import Detector, create_model, save_model
from retinaface.evaluation import evaluate, read_predictions
from retinaface.inference.tta import TestTimeAugmentation, unflip_detections
from tests.conftest import ROOT

TOOL = str(ROOT / "tools" / "widerface_eval.py")


def run_tool(*args):
    return subprocess.run([sys.executable, TOOL, *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "mnet.pth"
    save_model(create_model("mobilenet0.25"), path)
    return path


def test_eval_cli_from_a_checkpoint_writes_the_folder_it_scores(tiny_synthetic, checkpoint, tmp_path):
    preds = tmp_path / "preds"
    plot = tmp_path / "pr.png"
    result = run_tool("--weights", checkpoint, "--data", tiny_synthetic, "--output", preds, "--json",
                      "--plot", plot, "--workers", "0", "--no-progress")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["protocol"] == "official" and scores["missing_images"] == 0
    scores = {k: scores[k] for k in ("easy", "medium", "hard")}
    # one file per val image, in the official layout, and the AP printed is the folder's AP
    listed = (tiny_synthetic / "val" / "wider_val.txt").read_text().split()
    assert len(list(preds.rglob("*.txt"))) == len(listed)
    assert evaluate(preds, tiny_synthetic / "val" / "ground_truth").as_dict() == scores
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = run_tool("--preds", preds, "--gt", tiny_synthetic / "val" / "ground_truth")
    assert again.returncode == 0, again.stderr
    line = again.stdout.strip().splitlines()[-1]
    assert line == (f"easy: {scores['easy']:.4f}  medium: {scores['medium']:.4f}  hard: {scores['hard']:.4f}  "
                    f"(official protocol)")
    # nothing the user has is overwritten: a second run into the same folder is refused
    refused = run_tool("--weights", checkpoint, "--data", tiny_synthetic, "--output", preds, "--workers", "0")
    assert refused.returncode == 2 and "--overwrite" in refused.stderr


def test_eval_cli_flip_changes_the_detections_and_still_scores(tiny_synthetic, checkpoint, tmp_path):
    plain, flipped = tmp_path / "plain", tmp_path / "flip"
    for out, extra in ((plain, []), (flipped, ["--flip"])):
        result = run_tool("--weights", checkpoint, "--data", tiny_synthetic, "--output", out, "--json",
                          "--workers", "0", "--no-progress", *extra)
        assert result.returncode == 0, result.stderr
    a, b = read_predictions(plain), read_predictions(flipped)
    assert a.keys() == b.keys()
    assert any(len(a[k]) != len(b[k]) or not np.array_equal(a[k], b[k]) for k in a)


def test_eval_cli_bad_inputs_are_one_line_errors(tiny_synthetic, tmp_path):
    missing = run_tool("--preds", tmp_path, "--gt", tmp_path / "nowhere")
    assert missing.returncode == 2 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr

    bad = tmp_path / "preds" / "0--Parade"
    bad.mkdir(parents=True)
    (bad / "x.txt").write_text("x\n1\n1 2 three 4 0.5\n")
    malformed = run_tool("--preds", tmp_path / "preds", "--gt", tiny_synthetic / "val" / "ground_truth",
                         "--protocol", "python-port")
    assert malformed.returncode == 2 and f"{bad / 'x.txt'}:3" in malformed.stderr
    # official looks files up by ground-truth image: none of them is there
    nothing = run_tool("--preds", tmp_path / "preds", "--gt", tiny_synthetic / "val" / "ground_truth")
    assert nothing.returncode == 2 and "no prediction file matches" in nothing.stderr

    usage = run_tool("--weights", "w.pth")
    assert usage.returncode == 2 and "--data" in usage.stderr


def test_an_undecodable_val_image_is_named_and_the_other_files_are_kept(tiny_synthetic, checkpoint, tmp_path, capsys):
    from retinaface.cli.eval import main

    data = tmp_path / "data"
    shutil.copytree(tiny_synthetic, data)
    listed = (data / "val" / "wider_val.txt").read_text().split()
    bad = data / "val" / "images" / listed[5].lstrip("/")
    bad.write_bytes(bad.read_bytes()[:200])  # starts like a JPEG, does not decode
    common = ["--weights", str(checkpoint), "--data", str(data), "--workers", "0", "--no-progress"]
    preds = tmp_path / "preds"
    assert main(common + ["--output", str(preds), "--json"]) == 0  # in-process: no second torch start-up
    err = capsys.readouterr().err
    assert str(bad) in err and "warning" in err
    written = sorted(p.stem for p in preds.rglob("*.txt"))
    assert len(written) == len(listed) - 1 and bad.stem not in written

    strict = tmp_path / "strict"
    assert main(common + ["--output", str(strict), "--strict"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert len(list(strict.rglob("*.txt"))) == 5  # the files of the images before the bad one stay


def test_unflip_maps_mirror_pixels_back_and_swaps_left_and_right():
    dets = np.zeros((1, 15), dtype=np.float32)
    dets[0, :5] = [10, 20, 30, 40, 0.9]
    dets[0, 5:] = [12, 25, 28, 25, 20, 30, 14, 36, 26, 36]  # left eye, right eye, nose, mouth l, r
    back = unflip_detections(dets, image_width=100)
    # x -> W - x (retinaface.conventions.mirror_x, the training mirror's convention)
    np.testing.assert_array_equal(back[0, :5], np.float32([70, 20, 90, 40, 0.9]))
    # the mirror's left eye (x 12) is the original's right eye at 100 - 12 = 88
    np.testing.assert_array_equal(back[0, 5:], np.float32([72, 25, 88, 25, 80, 30, 74, 36, 86, 36]))
    np.testing.assert_array_equal(unflip_detections(back, 100), dets)


def test_tta_merges_views_into_one_nms_clean_sorted_set(legacy_checkpoint, fixture_io):
    from retinaface import load_model

    image = fixture_io["image_bgr"]
    detector = Detector(load_model(legacy_checkpoint), conf_threshold=0.5, post_nms_topk=None)
    plain = TestTimeAugmentation(detector, sizes=None, flip=False).detect(image)
    np.testing.assert_array_equal(plain, detector.detect(image))  # one view = the detector itself

    merged = TestTimeAugmentation(detector, sizes=[image.shape[0], image.shape[0] // 2], flip=True).detect(image)
    assert np.all(np.diff(merged[:, 4]) <= 0)
    boxes = torch.from_numpy(merged[:, :4].copy())
    boxes[:, 2:] += 1  # the +1 pixel convention of the reference NMS
    iou = box_iou(boxes, boxes).fill_diagonal_(0)
    assert float(iou.max()) <= detector.nms_threshold
    assert detector.post_nms_topk is None and detector.target_size is None  # settings restored
