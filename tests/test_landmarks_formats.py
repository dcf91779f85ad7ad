"""Dense-landmark readers and the schemes' mirror tables: small files written here in each official
layout, one-line ``path:lineno:`` errors, and the real files of ../shared/real/landmarks when present."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from conftest import require_real
from retinaface.landmarks import formats, schemes
from retinaface.landmarks.formats import LandmarkFormatError


def pts_text(points: np.ndarray, n_points=None) -> str:
    body = "".join(f"{x:.3f} {y:.3f}\n" for x, y in points)
    return f"version: 1\nn_points:  {len(points) if n_points is None else n_points}\n{{\n{body}}}\n"


def wflw_line(points: np.ndarray, box=(10, 20, 110, 140), flags=(1, 0, 0, 1, 0, 0), image="12--Group/a.jpg") -> str:
    coords = " ".join(f"{v:.6f}" for v in np.asarray(points).reshape(-1))
    return f"{coords} {' '.join(str(b) for b in box)} {' '.join(str(f) for f in flags)} {image}"


# ----------------------------------------------------------------------------------- 300W .pts
def test_pts_reads_points_one_based_to_zero_based_and_finds_the_image(tmp_path):
    points = np.arange(136, dtype=np.float64).reshape(68, 2) + 1.5
    path = tmp_path / "face.pts"
    path.write_text(pts_text(points))
    (tmp_path / "face.png").write_bytes(b"")
    sample = formats.read_pts(path)
    np.testing.assert_allclose(sample.points, points - 1.0)
    assert sample.image_path == str(tmp_path / "face.png")
    assert sample.format == formats.FORMAT_PTS and sample.name == "face" and sample.box is None


def test_pts_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 300, size=(68, 2))
    formats.write_pts(tmp_path / "x.pts", points)
    text = (tmp_path / "x.pts").read_text()
    assert text.startswith("version: 1\nn_points:  68\n{\n") and text.endswith("}\n")
    np.testing.assert_allclose(formats.read_pts(tmp_path / "x.pts").points, points, atol=1e-6)


@pytest.mark.parametrize("mutate, line, words", [
    (lambda t: t.replace("version: 1", "version: 2"), 1, "version"),
    (lambda t: t.replace("n_points:  68", "n_points:  67"), 1, "n_points is 67"),
    (lambda t: t.replace("{\n", ""), 3, "or '{', got '0.000 1.000'"),
    (lambda t: t.replace("}\n", ""), 71, "no '}'"),
    (lambda t: t.replace("4.000 5.000", "4.000 five"), 6, "'five' is not a number"),
    (lambda t: t.replace("4.000 5.000\n", ""), 71, "67 point lines"),
    (lambda t: t.replace("4.000 5.000", "4.000 5.000 6.000"), 6, "expected 'x y'"),
])
def test_pts_errors_name_file_and_line(tmp_path, mutate, line, words):
    points = np.arange(136, dtype=np.float64).reshape(68, 2)
    path = tmp_path / "bad.pts"
    path.write_text(mutate(pts_text(points)))
    with pytest.raises(LandmarkFormatError) as info:
        formats.read_pts(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ") and words in message and "\n" not in message
    assert isinstance(info.value, ValueError)


# ----------------------------------------------------------------------------------- WFLW lists
def test_wflw_list_reads_98_and_68_point_lines(tmp_path):
    p98 = np.random.default_rng(1).uniform(0, 200, size=(98, 2))
    p68 = p98[:68]
    (tmp_path / "list_98pt_rect_attr_test.txt").write_text(wflw_line(p98) + "\n\n" + wflw_line(p98 + 1) + "\n")
    (tmp_path / "list_68pt_rect_attr_test.txt").write_text(wflw_line(p68, flags=(0, 0, 0, 0, 0, 1)) + "\n")
    samples = formats.read_wflw_list(tmp_path / "list_98pt_rect_attr_test.txt", image_root=tmp_path / "images")
    assert len(samples) == 2
    np.testing.assert_allclose(samples[0].points, p98, atol=1e-6)
    np.testing.assert_allclose(samples[1].points, p98 + 1, atol=1e-6)
    np.testing.assert_array_equal(samples[0].box, [10, 20, 110, 140])
    assert samples[0].attributes == {"pose": 1, "expression": 0, "illumination": 0, "make-up": 1, "occlusion": 0,
                                     "blur": 0}
    assert samples[0].image_path == str(tmp_path / "images" / "12--Group/a.jpg")
    assert samples[0].name == "12--Group/a.jpg" and samples[1].source.endswith(":3")
    short = formats.read_wflw_list(tmp_path / "list_68pt_rect_attr_test.txt")
    assert short[0].points.shape == (68, 2) and short[0].attributes["blur"] == 1


def test_wflw_list_errors_name_file_and_line(tmp_path):
    good = wflw_line(np.zeros((98, 2)))
    path = tmp_path / "list.txt"
    path.write_text(good + "\n" + good.replace("12--Group", "12--Group extra") + "\n")
    with pytest.raises(LandmarkFormatError, match=r"list\.txt:2: expected 207 fields .* got 208$"):
        formats.read_wflw_list(path)
    path.write_text(good + "\n" + wflw_line(np.zeros((98, 2)), flags=(0, 0, 2, 0, 0, 0)) + "\n")
    with pytest.raises(LandmarkFormatError, match=r"list\.txt:2: illumination flag '2' is not 0 or 1"):
        formats.read_wflw_list(path)
    path.write_text(wflw_line(np.zeros((98, 2)), box=(50, 20, 10, 140)) + "\n")
    with pytest.raises(LandmarkFormatError, match=r"list\.txt:1: box .* is not x_min y_min x_max y_max"):
        formats.read_wflw_list(path)
    path.write_text("1 2 3 a.jpg\n")
    with pytest.raises(LandmarkFormatError, match=r"list\.txt:1: 4 fields: neither a 98-point line \(207 fields\)"):
        formats.read_wflw_list(path)
    path.write_text(good.replace("0.000000", "nan", 1) + "\n")
    with pytest.raises(LandmarkFormatError, match=r"list\.txt:1: coordinate 0 'nan' is not finite"):
        formats.read_wflw_list(path)


def test_wflw_line_format_round_trip():
    points = np.random.default_rng(2).uniform(0, 500, size=(98, 2))
    line = formats.format_wflw_line(points, [1, 2, 30, 40.5], {"blur": 1}, "a/b.jpg")
    sample = formats.parse_wflw_line(line, "mem", 1, 98)
    np.testing.assert_allclose(sample.points, points, atol=1e-6)
    np.testing.assert_allclose(sample.box, [1, 2, 30, 40.5])
    assert line.split()[196:200] == ["1", "2", "30", "40.500000"]
    assert sample.attributes == {"pose": 0, "expression": 0, "illumination": 0, "make-up": 0, "occlusion": 0,
                                 "blur": 1}
    with pytest.raises(ValueError, match="white space"):
        formats.format_wflw_line(points, [1, 2, 3, 4], {}, "a b.jpg")


# ----------------------------------------------------------------------------------- .mat files
def test_aflw2000_mat_marks_absent_points(tmp_path):
    pt2d = np.vstack([np.arange(21) * 10.0 + 5, np.arange(21) * 3.0 + 7])
    pt2d[:, 4] = [-1, 452]  # how AFLW2000-3D stores a point AFLW did not mark
    scipy.io.savemat(tmp_path / "image00001.mat", {"pt2d": pt2d, "pt3d_68": np.zeros((3, 68))})
    sample = formats.read_aflw2000_mat(tmp_path / "image00001.mat")
    assert sample.points.shape == (21, 2) and sample.format == formats.FORMAT_AFLW2000
    np.testing.assert_array_equal(sample.valid, np.arange(21) != 4)
    np.testing.assert_allclose(sample.points[3], [35, 16])
    assert np.all(np.isnan(sample.points[4]))
    assert sample.attributes["pt3d_68"].shape == (68, 3)
    assert formats.read_landmarks(tmp_path / "image00001.mat")[0].num_points == 21
    scipy.io.savemat(tmp_path / "bad.mat", {"pt2d": np.zeros((2, 19))})
    with pytest.raises(LandmarkFormatError, match=r"bad\.mat:0: pt2d has shape \(2, 19\), expected \(2, 21\)"):
        formats.read_aflw2000_mat(tmp_path / "bad.mat")


def cofw_arrays(count: int):
    rng = np.random.default_rng(3)
    images = np.empty((count, 1), dtype=object)
    phis = np.zeros((count, 87))
    for i in range(count):
        images[i, 0] = rng.integers(0, 255, size=(40 + i, 50, 3), dtype=np.uint8)
        phis[i, :29] = rng.uniform(1, 50, 29)
        phis[i, 29:58] = rng.uniform(1, 40, 29)
        phis[i, 58:] = rng.integers(0, 2, 29)
    boxes = np.array([[5, 6, 30, 32]] * count, dtype=np.float64)
    return images, phis, boxes


def test_cofw_mat_official_layout(tmp_path):
    images, phis, boxes = cofw_arrays(3)
    scipy.io.savemat(tmp_path / "COFW_test_color.mat", {"IsT": images, "phisT": phis, "bboxesT": boxes})
    samples = formats.read_cofw_mat(tmp_path / "COFW_test_color.mat")
    assert len(samples) == 3
    for i, s in enumerate(samples):
        np.testing.assert_allclose(s.points[:, 0], phis[i, :29] - 1)  # MATLAB's 1-based pixels
        np.testing.assert_allclose(s.points[:, 1], phis[i, 29:58] - 1)
        np.testing.assert_array_equal(s.attributes["occluded"], phis[i, 58:] == 1)
        np.testing.assert_allclose(s.box, np.array([5, 6, 35, 38]) - 1)
        assert s.image.shape == (40 + i, 50, 3) and s.name == str(i + 1)
    assert len(formats.read_landmarks(tmp_path / "COFW_test_color.mat")) == 3


def test_cofw_mat_errors(tmp_path):
    images, phis, boxes = cofw_arrays(2)
    scipy.io.savemat(tmp_path / "short.mat", {"IsT": images, "phisT": phis[:, :58]})
    with pytest.raises(LandmarkFormatError, match=r"short\.mat:0: phis has shape \(2, 58\), expected \(N, 87\)"):
        formats.read_cofw_mat(tmp_path / "short.mat")
    phis[1, 60] = 0.5
    scipy.io.savemat(tmp_path / "flags.mat", {"IsTr": images, "phisTr": phis})
    with pytest.raises(LandmarkFormatError, match=r"flags\.mat:2: face record 2: occlusion flags must be 0 or 1"):
        formats.read_cofw_mat(tmp_path / "flags.mat")
    scipy.io.savemat(tmp_path / "other.mat", {"x": np.zeros(3)})
    with pytest.raises(LandmarkFormatError, match=r"other\.mat:0: no 'IsT'/'phisT'"):
        formats.read_cofw_mat(tmp_path / "other.mat")


def test_cofw_v73_file_without_h5py_is_one_clear_line(tmp_path):
    pytest.importorskip("scipy")
    try:
        import h5py  # noqa: F401
        pytest.skip("h5py is installed: the v7.3 path reads instead of refusing")
    except ImportError:
        pass
    # MATLAB v7.3: a 128-byte text header with version 0x0200 and endian mark 'IM', then HDF5
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    path = tmp_path / "COFW_test_color.mat"
    path.write_bytes(header + b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(LandmarkFormatError) as info:
        formats.read_cofw_mat(path)
    assert str(info.value) == f"{path}:0: a MATLAB v7.3 (HDF5) file; reading it needs h5py (pip install h5py)"


def test_read_landmarks_refuses_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"unknown landmark file type '\.csv'"):
        formats.read_landmarks(tmp_path / "a.csv")


# ----------------------------------------------------------------------------------- schemes
@pytest.mark.parametrize("name", sorted(schemes.SCHEMES))
def test_mirror_tables_are_involutions_that_swap_eye_corners(name):
    scheme = schemes.SCHEMES[name]
    mirror = np.array(scheme.mirror)
    np.testing.assert_array_equal(mirror[mirror], np.arange(scheme.num_points))
    if scheme.outer_eye_corners is not None:
        left, right = scheme.outer_eye_corners
        assert mirror[left] == right and mirror[right] == left
    (l_pupil,), (r_pupil,) = scheme.pupils if len(scheme.pupils[0]) == 1 else ((None,), (None,))
    if l_pupil is not None:
        assert mirror[l_pupil] == r_pupil
    points = np.random.default_rng(4).uniform(0, 100, size=(scheme.num_points, 2))
    np.testing.assert_allclose(schemes.flip_points(schemes.flip_points(points, 100, name), 100, name), points)


def test_known_pairs_of_each_scheme():
    assert schemes.IBUG68.mirror[36] == 45 and schemes.IBUG68.mirror[39] == 42 and schemes.IBUG68.mirror[8] == 8
    assert schemes.IBUG68.mirror[48] == 54 and schemes.IBUG68.mirror[66] == 66
    assert schemes.WFLW98.mirror[60] == 72 and schemes.WFLW98.mirror[96] == 97 and schemes.WFLW98.mirror[16] == 16
    assert schemes.WFLW98.mirror[38] == 50 and schemes.WFLW98.mirror[88] == 92
    assert schemes.COFW29.mirror[8] == 9 and schemes.COFW29.mirror[4] == 6 and schemes.COFW29.mirror[28] == 28
    assert schemes.AFLW21.mirror[6] == 11 and schemes.AFLW21.mirror[12] == 16 and schemes.AFLW21.mirror[14] == 14
    assert schemes.RETINAFACE5.mirror == (1, 0, 2, 4, 3)


def test_flip_points_pixel_centre_convention():
    points = np.zeros((5, 2))
    points[0] = [0, 3]     # the left eye on the first pixel column
    points[1] = [9, 3]     # the right eye on the last
    flipped = schemes.flip_points(points, 10, "retinaface5")
    np.testing.assert_allclose(flipped[0], [0, 3])   # the new left eye: the old right eye, mirrored
    np.testing.assert_allclose(flipped[1], [9, 3])
    np.testing.assert_allclose(schemes.flip_points(points, 10, 5, pixel_centres=False)[0], [1, 3])


def test_get_scheme_by_name_count_and_error():
    assert schemes.get_scheme(68) is schemes.IBUG68 and schemes.get_scheme("cofw29") is schemes.COFW29
    with pytest.raises(ValueError, match="unknown landmark scheme 19"):
        schemes.get_scheme(19)


def test_mirror_table_checks():
    with pytest.raises(ValueError, match="not its own inverse"):
        schemes.check_mirror((1, 2, 0), 3)
    with pytest.raises(ValueError, match="not a permutation"):
        schemes.check_mirror((0, 0, 1), 3)


# ----------------------------------------------------------------------------------- real files
def test_real_wflw_lists_read():
    root = require_real("landmarks", "wflw_test")
    samples = formats.read_wflw_list(root / "list_98pt_rect_attr_test.txt", image_root=root / "images")
    assert len(samples) == 165 and all(s.points.shape == (98, 2) for s in samples)
    assert all(Path(s.image_path).is_file() for s in samples)
    # the box holds the face: the eye corners lie inside it
    inside = [s.box[0] <= s.points[60, 0] <= s.box[2] and s.box[1] <= s.points[60, 1] <= s.box[3] for s in samples]
    assert np.mean(inside) > 0.9
    assert all(s.points[60, 0] < s.points[72, 0] for s in samples if s.attributes["pose"] == 0)
    short = formats.read_wflw_list(root / "list_68pt_rect_attr_test.txt")
    assert len(short) == 49 and all(s.points.shape == (68, 2) for s in short)


def test_real_300w_and_aflw_files_read():
    root = require_real("landmarks", "300w")
    files = sorted(root.rglob("*.pts"))
    samples = [formats.read_pts(p) for p in files]
    assert len(samples) == 20 and all(s.image_path is not None for s in samples)
    # image-left outer eye corner (36) left of the image-right one (45) on these frontal faces
    assert all(s.points[36, 0] < s.points[45, 0] for s in samples)
    aflw = [formats.read_aflw2000_mat(p) for p in sorted(require_real("landmarks", "aflw").rglob("*.mat"))]
    assert len(aflw) == 16 and all(s.points.shape == (21, 2) and s.valid.sum() >= 10 for s in aflw)
