"""Five-point alignment: exact recovery of similarity images, upright crops, no reflections."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from retinaface.inference.align import (align_faces, estimate_norm, estimate_norm_batch, norm_crop, norm_crop_batch,
                              template)
from retinaface.conventions import ARCFACE_TEMPLATE_112, MIRROR_ORDER

TEMPLATE = np.asarray(ARCFACE_TEMPLATE_112)


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize("size", [112, 128, 224, (112, 96)])
def test_exact_similarity_images_come_back_to_the_template(size):
    rng = np.random.default_rng(0)
    target = template(size)
    for _ in range(50):
        forward = similarity(rng.uniform(-180, 180), rng.uniform(0.2, 6.0), *rng.uniform(-300, 300, 2))
        landmarks = apply(forward, TEMPLATE)
        matrix = estimate_norm(landmarks, size)
        assert matrix.shape == (2, 3)
        assert np.abs(apply(matrix, landmarks) - target).max() < 1e-3
        assert np.linalg.det(matrix[:, :2]) > 0


def test_template_sizes():
    assert np.allclose(template(112), TEMPLATE)
    assert np.allclose(template(224), TEMPLATE * 2)
    shifted = template((112, 96))
    assert np.allclose(shifted[:, 0], TEMPLATE[:, 0] - 8) and np.allclose(shifted[:, 1], TEMPLATE[:, 1])


def draw_face(canvas_size: int, points: np.ndarray) -> np.ndarray:
    """A light face with a red left eye, a blue right eye, a dark nose and mouth corners."""
    image = np.full((canvas_size, canvas_size, 3), 40, np.uint8)
    centre = points.mean(axis=0)
    cv2.ellipse(image, tuple(int(v) for v in centre), (int(canvas_size * 0.3), int(canvas_size * 0.4)), 0, 0, 360,
                (170, 190, 210), -1)
    radius = max(2, canvas_size // 40)
    cv2.circle(image, tuple(int(round(v)) for v in points[0]), radius, (0, 0, 255), -1)
    cv2.circle(image, tuple(int(round(v)) for v in points[1]), radius, (255, 0, 0), -1)
    for p in points[2:]:
        cv2.circle(image, tuple(int(round(v)) for v in p), radius, (20, 20, 20), -1)
    return image


def colour_centroid(crop: np.ndarray, bgr) -> np.ndarray:
    mask = np.all(np.abs(crop.astype(int) - np.array(bgr)) < 60, axis=2)
    assert mask.sum() > 3
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_rotated_synthetic_face_gives_an_upright_crop():
    points = TEMPLATE * 2 + 16  # face drawn at the template, twice as large, on a 256 canvas
    image = draw_face(256, points)
    rotation = cv2.getRotationMatrix2D((128, 128), 30, 1.0)
    rotated = cv2.warpAffine(image, rotation, (256, 256))
    landmarks = apply(rotation, points)
    # the drawn face really is rotated: its eye line is 30 degrees off horizontal
    dx, dy = landmarks[1] - landmarks[0]
    assert abs(abs(np.degrees(np.arctan2(dy, dx))) - 30) < 1
    crop = norm_crop(rotated, landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    left, right = colour_centroid(crop, (0, 0, 255)), colour_centroid(crop, (255, 0, 0))
    assert abs(left[1] - right[1]) < 1.0          # eye line horizontal
    assert left[0] < 56 < right[0]                # left eye (red) on the template's left: no mirror
    assert np.abs(left - TEMPLATE[0]).max() < 1.5 and np.abs(right - TEMPLATE[1]).max() < 1.5


def test_mirrored_landmarks_never_give_a_reflection():
    rng = np.random.default_rng(1)
    for _ in range(30):
        forward = similarity(rng.uniform(-60, 60), rng.uniform(0.5, 3), *rng.uniform(0, 200, 2))
        landmarks = apply(forward, TEMPLATE) + rng.normal(0, 0.5, (5, 2))
        swapped = landmarks[list(MIRROR_ORDER)]  # left and right labels exchanged
        # a reflection of the template: x -> -x, the same point order
        reflected = landmarks * np.array([-1.0, 1.0]) + np.array([300.0, 0.0])
        for points in (landmarks, swapped, reflected):
            matrix = estimate_norm(points)
            assert np.linalg.det(matrix[:, :2]) > 0
        # swapped labels are put back in order: same transform as the correctly labelled points
        assert np.allclose(estimate_norm(swapped), estimate_norm(landmarks), atol=1e-9)
        with pytest.raises(ValueError, match="mirrored order"):
            estimate_norm(swapped, strict=True)
        estimate_norm(landmarks, strict=True)  # correctly ordered points pass strict mode


def test_batched_form_equals_single_form():
    rng = np.random.default_rng(2)
    points = TEMPLATE * 2 + 16
    image = cv2.warpAffine(draw_face(256, points), cv2.getRotationMatrix2D((128, 128), 15, 1.0), (256, 256))
    image = (image.astype(int) + rng.integers(0, 30, image.shape)).clip(0, 255).astype(np.uint8)
    faces = np.stack([apply(similarity(rng.uniform(-40, 40), rng.uniform(0.5, 2), *rng.uniform(20, 200, 2)),
                            TEMPLATE) for _ in range(6)])
    faces[2] = faces[2][list(MIRROR_ORDER)]
    matrices = estimate_norm_batch(faces, (112, 96))
    crops = norm_crop_batch(image, faces, (112, 96))
    assert crops.shape == (6, 112, 96, 3)
    for i in range(6):
        assert np.allclose(matrices[i], estimate_norm(faces[i], (112, 96)))
        assert np.array_equal(crops[i], norm_crop(image, faces[i], (112, 96)))
    detections = np.concatenate([np.zeros((6, 5)), faces.reshape(6, 10)], axis=1)
    assert np.array_equal(align_faces(image, detections, (112, 96)), crops)
    assert norm_crop_batch(image, np.zeros((0, 5, 2))).shape == (0, 112, 112, 3)


@pytest.mark.parametrize("landmarks, message", [
    (np.zeros((4, 2)), "shape"),
    (np.full((5, 2), np.nan), "NaN"),
    (np.ones((5, 2)), "one point"),
])
def test_bad_landmarks_are_refused_with_a_clear_message(landmarks, message):
    with pytest.raises(ValueError, match=message):
        estimate_norm(landmarks)


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        norm_crop(np.zeros((50, 50, 3), np.float32), TEMPLATE)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        norm_crop(np.zeros((50, 50), np.uint8), TEMPLATE)
