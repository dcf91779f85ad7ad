"""Synthetic faces with true 68 / 98 points: determinism, points on what is drawn, and round trips
through the 300W and WFLW readers."""
from __future__ import annotations

import numpy as np
import pytest

from retinaface.landmarks import formats, synthetic
from retinaface.landmarks.schemes import IBUG68, WFLW98


def test_render_is_deterministic_in_seed_and_index():
    a, b = synthetic.render_landmark_face(3, 5, 128), synthetic.render_landmark_face(3, 5, 128)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.points98, b.points98)
    c = synthetic.render_landmark_face(4, 5, 128)
    assert not np.array_equal(a.points98, c.points98)


def test_both_schemes_share_the_drawn_features():
    face = synthetic.render_landmark_face(0, 7, 160)
    assert face.points68.shape == (68, 2) and face.points98.shape == (98, 2)
    p68, p98 = face.points68, face.points98
    np.testing.assert_allclose(p68[48:68], p98[76:96])              # the mouth: one mark-up
    np.testing.assert_allclose(p68[27:36], p98[51:60])              # the nose
    np.testing.assert_allclose(p68[[36, 39, 42, 45]], p98[[60, 64, 68, 72]])   # eye corners
    np.testing.assert_allclose(p68[17:22], p98[33:38])              # left brow, upper edge
    np.testing.assert_allclose(p68[[0, 8, 16]], p98[[0, 16, 32]])  # contour ends and chin


def test_points_lie_on_the_face_ellipse_and_in_the_box():
    face = synthetic.render_landmark_face(1, 2, 160)
    params = face.params
    t = np.radians(params["theta"])
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    local = (face.points98[:33] - params["centre"]) @ rot   # back to face-local coordinates
    radius = (local[:, 0] / params["a"]) ** 2 + (local[:, 1] / params["b"]) ** 2
    np.testing.assert_allclose(radius, 1.0, atol=1e-9)
    assert np.all(face.points98 >= face.box[:2] - 1) and np.all(face.points98 <= face.box[2:] + 1)


def test_pupils_are_dark_and_the_eye_white_is_bright():
    checked = 0
    for index in range(30):
        face = synthetic.render_landmark_face(0, index, 192)
        if any(face.attributes[k] for k in ("illumination", "occlusion", "blur")):
            continue
        grey = face.image.astype(float).mean(axis=2)
        for pupil, corner in ((96, 60), (97, 72)):
            px, py = np.round(face.points98[pupil]).astype(int)
            # the sclera: half way from the iris edge to the outer corner, on the eye's axis
            sx, sy = np.round(0.3 * face.points98[pupil] + 0.7 * face.points98[corner]).astype(int)
            assert grey[py, px] < 90 and grey[sy, sx] > 140, (index, pupil)
        checked += 1
    assert checked >= 10


def test_symmetric_face_model_matches_the_mirror_tables():
    points68, points98 = synthetic.local_points(synthetic.FaceShape(30.0, 40.0, opening=0.1))
    for points, scheme in ((points68, IBUG68), (points98, WFLW98)):
        np.testing.assert_allclose((points * [-1, 1])[list(scheme.mirror)], points, atol=1e-9)
    assert points68[36, 0] < points68[39, 0] < points68[42, 0] < points68[45, 0]


def test_wflw_layout_round_trip(tmp_path):
    written = synthetic.write_synthetic_landmarks(tmp_path, count=12, size=128, seed=2, layout="wflw")
    assert [p.name for p in written] == ["list_98pt_rect_attr_synthetic.txt", "list_68pt_rect_attr_synthetic.txt"]
    samples = formats.read_wflw_list(written[0], image_root=tmp_path / "images")
    short = formats.read_wflw_list(written[1])
    assert len(samples) == len(short) == 12
    for index, (s98, s68) in enumerate(zip(samples, short)):
        face = synthetic.render_landmark_face(2, index, 128)
        np.testing.assert_allclose(s98.points, face.points98, atol=1e-5)
        np.testing.assert_allclose(s68.points, face.points68, atol=1e-5)
        np.testing.assert_array_equal(s98.box, face.box)
        assert s98.attributes == face.attributes
        assert (tmp_path / "images" / s98.name).is_file()


def test_300w_layout_round_trip(tmp_path):
    written = synthetic.write_synthetic_landmarks(tmp_path, count=5, size=128, seed=1, layout="300w")
    assert len(written) == 5
    for index, path in enumerate(written):
        sample = formats.read_pts(path)
        np.testing.assert_allclose(sample.points, synthetic.render_landmark_face(1, index, 128).points68, atol=1e-5)
        assert sample.image_path == str(path.with_suffix(".jpg"))
    # the file holds 300W's 1-based numbers: the first point line is the 0-based point plus one
    first = np.array(path.read_text().splitlines()[3].split(), dtype=float)
    np.testing.assert_allclose(first, synthetic.render_landmark_face(1, 4, 128).points68[0] + 1, atol=1e-5)


def test_write_checks_layout():
    with pytest.raises(ValueError, match="unknown layout 'ibug'"):
        synthetic.write_synthetic_landmarks("unused", layout="ibug")
