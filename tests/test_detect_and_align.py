"""Detector.detect_and_align and ``retinaface detect --crops``: aligned crops of the detected faces."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from retinaface.inference.align import estimate_norm, norm_crop
from retinaface.build import create_model
from retinaface.checkpoint import save_model
from retinaface.conventions import DET_LANDMARKS
from retinaface.inference.detector import Detector


@pytest.fixture(scope="module")
def detector_and_image():
    torch.manual_seed(0)
    model = create_model("mobilenet0.25").eval()
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    return model, Detector(model, post_nms_topk=20), image


def test_crops_are_the_aligned_faces_above_the_threshold(detector_and_image):
    _, detector, image = detector_and_image
    all_dets = detector.detect(image)
    threshold = float(np.median(all_dets[:, 4]))  # an untrained model: keep about half
    dets, crops = detector.detect_and_align(image, size=112, min_score=threshold)
    assert len(dets) == int((all_dets[:, 4] >= threshold).sum()) > 0
    assert crops.shape == (len(dets), 112, 112, 3) and crops.dtype == np.uint8
    for det, crop in zip(dets, crops):
        landmarks = det[DET_LANDMARKS].reshape(5, 2)
        np.testing.assert_array_equal(crop, norm_crop(image, landmarks, 112))
        matrix = estimate_norm(landmarks, 112)
        assert np.linalg.det(matrix[:, :2]) > 0  # never a reflection


def test_no_face_gives_empty_crops(detector_and_image):
    _, detector, image = detector_and_image
    dets, crops = detector.detect_and_align(image, size=96, min_score=1.01)
    assert dets.shape == (0, 15) and crops.shape == (0, 96, 96, 3)


def test_detect_cli_writes_one_crop_per_face_and_never_over_earlier_crops(detector_and_image, tmp_path):
    from retinaface.cli import detect as detect_cli

    model, detector, image = detector_and_image
    weights = tmp_path / "m.pth"
    save_model(model, weights)
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), image)
    threshold = float(f"{np.median(detector.detect(image)[:, 4]):.6f}")  # the value the flag carries
    expected = int((Detector(model).detect(image)[:, 4] >= threshold).sum())
    args = [str(tmp_path / "in"), "--weights", str(weights), "--output", str(tmp_path / "out"),
            "--crops", str(tmp_path / "crops"), "--vis-threshold", f"{threshold:.6f}", "--runtime", "pytorch"]
    assert detect_cli.main(args) == 0
    crops = sorted((tmp_path / "crops").glob("a_*.jpg"))
    assert len(crops) == expected > 0
    assert cv2.imread(str(crops[0])).shape == (112, 112, 3)
    before = {p: p.read_bytes() for p in crops}
    assert detect_cli.main(args) == 0  # a re-run goes to crops2, leaving the first set alone
    assert {p: p.read_bytes() for p in crops} == before
    assert len(list((tmp_path / "crops2").glob("a_*.jpg"))) == expected
    (tmp_path / "file").write_text("x")
    assert detect_cli.main(args[:6] + ["--crops", str(tmp_path / "file")]) == 2
