"""Dense landmarks on detected faces: the points of a face given by its box equal the task's own
prediction path (same crop policy, same inverse map), and detect_and_landmark keeps the detector's
order and handles no faces."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retinaface.landmarks.inference import detect_and_landmark, landmarks_in_boxes
from retinaface.landmarks.models import create_landmark_model
from retinaface.landmarks.synthetic import write_synthetic_landmarks
from retinaface.landmarks.task import load_samples, predict_landmarks, read_image, sample_box


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    listing = write_synthetic_landmarks(root, count=3, size=96, seed=3, layout="wflw")
    samples = load_samples(listing[0])
    assert len(samples) == 3 and samples[0].points.shape == (98, 2)
    return samples


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    network = create_landmark_model("pfld", 98, 48).eval()
    network.crop_margin = 0.15
    return network


class BoxesDetector:
    """A detector stand-in that returns the given rows."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def detect(self, image: np.ndarray) -> np.ndarray:
        return self.rows


def test_points_from_boxes_equal_the_task_prediction(faces, model):
    for sample in faces:
        image = read_image(sample)
        box = sample_box(sample)
        ours = landmarks_in_boxes(model, image, [box])
        theirs = predict_landmarks(model, [sample], margin=0.15)
        assert ours.shape == (1, 98, 2)
        np.testing.assert_array_equal(ours, theirs)
        # a different margin is a different crop, so different points: the model's margin is used
        model.crop_margin = 0.3
        assert not np.allclose(landmarks_in_boxes(model, image, [box]), ours)
        model.crop_margin = 0.15


def test_detect_and_landmark_keeps_the_detector_rows_and_order(faces, model):
    image = read_image(faces[0])
    box = sample_box(faces[0])
    rows = np.array([[*box, 0.9], [box[0] + 5, box[1] + 3, box[2] - 4, box[3] - 2, 0.7]], np.float32)
    found, points = detect_and_landmark(BoxesDetector(rows), model, image)
    np.testing.assert_array_equal(found, rows)
    assert points.shape == (2, 98, 2)
    # the second face alone: a batch of one runs other conv kernels than a batch of two, so equal
    # up to float reduction order (1e-4 px; seen 4e-6)
    np.testing.assert_allclose(points[1], landmarks_in_boxes(model, image, rows[1:2])[0], atol=1e-4, rtol=0)
    none, no_points = detect_and_landmark(BoxesDetector(np.zeros((0, 15), np.float32)), model, image)
    assert none.shape == (0, 15) and no_points.shape == (0, 98, 2)
    with pytest.raises(ValueError, match="uint8"):
        landmarks_in_boxes(model, image.astype(np.float32), rows)
