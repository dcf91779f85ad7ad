"""The landmark crop policy: square crop with margin, exact inverse, deterministic augmentation with
the scheme's mirror permutation."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from retinaface.landmarks import crop
from retinaface.landmarks.schemes import IBUG68, WFLW98
from retinaface.landmarks.synthetic import render_landmark_face


def test_square_region_uses_the_longer_side_and_margin():
    cx, cy, side = crop.square_region([10, 20, 50, 100], margin=0.1)
    assert (cx, cy) == (30, 60) and side == pytest.approx(80 * 1.2)
    with pytest.raises(ValueError, match="x_max > x_min"):
        crop.square_region([10, 20, 5, 100])


def test_crop_maps_the_square_onto_the_crop_edges():
    transform = crop.crop_transform([0, 0, 100, 100], size=50, margin=0.0)
    # the square [0, 100] spans the crop's outer pixel edges [-0.5, 49.5]
    np.testing.assert_allclose(transform.to_crop(np.array([[0, 0], [100, 100], [50, 50]])),
                               [[-0.5, -0.5], [49.5, 49.5], [24.5, 24.5]])
    np.testing.assert_allclose(transform.normalise([[-0.5, 24.5]]), [[0.0, 0.5]])
    np.testing.assert_allclose(transform.normalised_to_image([[0.0, 1.0]]), [[0.0, 100.0]])


def test_round_trip_to_image_pixels_within_1e4_px():
    rng = np.random.default_rng(0)
    for box in ([12.3, 40.1, 97.2, 150.9], [0, 0, 5, 3], [-30, -10, 300, 420]):
        transform = crop.crop_transform(box, size=112, margin=0.25)
        points = rng.uniform(-50, 500, size=(98, 2))
        np.testing.assert_allclose(transform.to_image(transform.to_crop(points)), points, atol=1e-4)
        np.testing.assert_allclose(transform.normalised_to_image(transform.normalise(transform.to_crop(points))),
                                   points, atol=1e-4)


def test_warped_crop_puts_an_image_dot_where_the_map_says():
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    image[120, 170] = 255                       # one bright pixel (x 170, y 120)
    crop_image, transform = crop.crop_face(image, [100, 80, 220, 180], size=240, margin=0.0)
    u, v = transform.to_crop(np.array([170.0, 120.0]))
    grey = crop_image[..., 0].astype(float)
    ys, xs = np.nonzero(grey > 0)
    weights = grey[ys, xs]
    # the blob's centre of mass is the mapped point (bilinear upsampling spreads it symmetrically)
    assert np.average(xs, weights=weights) == pytest.approx(u, abs=0.05)
    assert np.average(ys, weights=weights) == pytest.approx(v, abs=0.05)


def test_augmentation_is_deterministic_in_the_generator():
    face = render_landmark_face(0, 1, 160)
    runs = [crop.augment_face(face.image, face.points98, face.box, 96, WFLW98, np.random.default_rng(7))
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0].crop, runs[1].crop)
    np.testing.assert_array_equal(runs[0].points, runs[1].points)
    other = crop.augment_face(face.image, face.points98, face.box, 96, WFLW98, np.random.default_rng(8))
    assert not np.array_equal(other.points, runs[0].points)


def test_augmented_points_map_back_exactly():
    face = render_landmark_face(0, 2, 160)
    rng = np.random.default_rng(3)
    for _ in range(6):
        out = crop.augment_face(face.image, face.points68, face.box, 112, IBUG68, rng)
        back = out.transform.to_image(out.points)
        if out.flipped:
            back = back[list(IBUG68.mirror)]    # undo the reordering, then every index is its own point
        np.testing.assert_allclose(back, face.points68, atol=1e-4)


def test_flip_with_mirror_permutation_keeps_the_left_eye_on_the_left():
    face = render_landmark_face(0, 0, 160)
    config = crop.AugmentConfig(rotation=0, scale=0, shift=0, flip=1.0, brightness=0, contrast=0, saturation=0)
    out = crop.augment_face(face.image, face.points68, face.box, 128, IBUG68, np.random.default_rng(0), config)
    assert out.flipped
    assert out.points[36, 0] < out.points[45, 0]        # outer corner of the image-left eye stays on the left
    assert out.points[39, 0] < out.points[42, 0]
    assert out.points[0, 0] < out.points[16, 0]          # jaw starts on the left
    # and the flipped crop is the mirror image of the plain crop, point for point
    plain = crop.augment_face(face.image, face.points68, face.box, 128, IBUG68, np.random.default_rng(0),
                              crop.NO_AUGMENTATION)
    # (OpenCV's fixed-point sampling may round a mirrored position into the neighbouring 1/32 px bin)
    difference = np.abs(out.crop.astype(int) - cv2.flip(plain.crop, 1).astype(int))
    assert difference.max() <= 3 and difference.mean() < 0.1
    expected = plain.points.copy()
    expected[:, 0] = 127 - expected[:, 0]
    np.testing.assert_allclose(out.points, expected[list(IBUG68.mirror)], atol=1e-9)


def test_colour_jitter_changes_pixels_not_points():
    face = render_landmark_face(0, 4, 128)
    config = crop.AugmentConfig(rotation=0, scale=0, shift=0, flip=0, brightness=0.5, contrast=0.5, saturation=0.5)
    jittered = crop.augment_face(face.image, face.points68, face.box, 96, IBUG68, np.random.default_rng(1), config)
    plain = crop.augment_face(face.image, face.points68, face.box, 96, IBUG68, np.random.default_rng(1),
                              crop.NO_AUGMENTATION)
    np.testing.assert_allclose(jittered.points, plain.points)
    assert not np.array_equal(jittered.crop, plain.crop)


def test_augment_checks_its_inputs():
    face = render_landmark_face(0, 0, 128)
    with pytest.raises(ValueError, match=r"do not fit scheme wflw98"):
        crop.augment_face(face.image, face.points68, face.box, 96, WFLW98, np.random.default_rng(0))
    with pytest.raises(ValueError, match="0 <= flip <= 1"):
        crop.AugmentConfig(flip=2.0)
