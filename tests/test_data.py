"""Tests of retinaface.data: label readers, augmentation, data sets, synthetic data."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from retinaface.data import (ImageAnnotation, TrainTransform, ValTransform, WiderFaceTrainDataset,
                             WiderFaceValDataset, check_images, detect_label_format, detection_collate,
                             generate_synthetic_widerface, load_training_annotations, read_retinaface_labels,
                             read_val_list, read_wider_bbx_labels, worker_init_fn)
from retinaface.data.augment import mirror, photometric_distort, random_square_crop

LM = " ".join(["10.5 20.5 0.0"] * 5)
NO_LM = " ".join(["-1.0"] * 15)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def touch_jpeg(path: Path, size: int = 96) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", np.zeros((size, size, 3), np.uint8))
    path.write_bytes(data.tobytes())


# ---------------------------------------------------------------------------- Pytorch_Retinaface labels
def test_retinaface_labels_parse(tmp_path, caplog):
    label = write(tmp_path / "train" / "label.txt",
                  "# 0--Parade/a.jpg\n"
                  f"10 20 30 40 {LM} 0.82\n"
                  f"5 6 7 8 {NO_LM}\n"
                  f"1 1 0 9 {LM} 0.5\n"          # zero width: dropped
                  "# /1--Crowd/b.jpg\n"
                  "\n"
                  "3 4 5 6\n"                     # a bare box: no landmarks
                  "# 2--Empty/c.jpg\n")
    with caplog.at_level("WARNING"):
        anns, stats = read_retinaface_labels(label)
    assert [a.name for a in anns] == ["a", "b", "c"]
    assert [a.event for a in anns] == ["0--Parade", "1--Crowd", "2--Empty"]
    assert anns[0].path == str(tmp_path / "train" / "images" / "0--Parade" / "a.jpg")
    assert anns[1].path == str(tmp_path / "train" / "images" / "1--Crowd" / "b.jpg")
    np.testing.assert_array_equal(anns[0].boxes, [[10, 20, 40, 60], [5, 6, 12, 14]])
    assert anns[0].boxes.dtype == np.float32 and anns[0].landmarks.shape == (2, 10)
    np.testing.assert_array_equal(anns[0].landmarks[0], [10.5, 20.5] * 5)
    np.testing.assert_array_equal(anns[0].landmarks[1], [-1] * 10)
    np.testing.assert_array_equal(anns[0].has_landmarks, [True, False])
    np.testing.assert_array_equal(anns[0].labels, [1, -1])
    np.testing.assert_array_equal(anns[1].boxes, [[3, 4, 8, 10]])
    assert not anns[1].has_landmarks[0]
    assert anns[2].num_faces == 0 and anns[2].boxes.shape == (0, 4)
    assert stats.num_images == 3 and stats.num_faces == 3 and stats.num_without_landmarks == 2
    assert stats.num_dropped_empty == 1 and stats.dropped_lines == [4]
    assert "dropped 1 face box" in caplog.text and str(label) in caplog.text


@pytest.mark.parametrize("text, line, what", [
    (f"10 20 30 40 {LM} 0.8\n", 1, "before any"),
    (f"# a/b.jpg\n10 20 30 40 {LM} 0.8\n10 20 30 40 1 2 3\n", 3, "expected 20 numbers"),
    (f"# a/b.jpg\n\n10 20 x 40 {LM} 0.8\n", 3, "not a number: 'x'"),
    ("# a/b.jpg\n# \n", 2, "without an image path"),
    (f"# a/b.jpg\n10 20 30 nan {LM} 0.8\n", 2, "non-finite"),
])
def test_retinaface_labels_bad_lines(tmp_path, text, line, what):
    label = write(tmp_path / "label.txt", text)
    with pytest.raises(ValueError) as err:
        read_retinaface_labels(label)
    assert f"{label}:{line}:" in str(err.value)
    assert what in str(err.value)


# ---------------------------------------------------------------------------- official WIDER labels
WIDER_GT = """0--Parade/0_Parade_1.jpg
3
10 20 30 40 0 0 0 0 0 0
1 2 3 4 2 0 0 1 0 0
5 5 0 10 0 0 0 0 0 0
0--Parade/0_Parade_2.jpg
0
0 0 0 0 0 0 0 0 0 0
1--Crowd/1_Crowd_3.jpg
1
7 8 9 10 1 1 1 0 1 1
"""


def test_wider_bbx_labels_parse(tmp_path):
    gt = write(tmp_path / "wider_face_split" / "wider_face_train_bbx_gt.txt", WIDER_GT)
    anns, stats = read_wider_bbx_labels(gt)
    assert [a.name for a in anns] == ["0_Parade_1", "0_Parade_2", "1_Crowd_3"]
    assert anns[0].path == str(tmp_path / "WIDER_train" / "images" / "0--Parade" / "0_Parade_1.jpg")
    np.testing.assert_array_equal(anns[0].boxes, [[10, 20, 40, 60]])   # invalid + zero-width gone
    assert anns[1].num_faces == 0
    np.testing.assert_array_equal(anns[2].boxes, [[7, 8, 16, 18]])
    assert not anns[2].has_landmarks.any() and (anns[2].landmarks == -1).all()
    np.testing.assert_array_equal(anns[2].labels, [-1])
    assert stats.num_skipped_invalid == 1 and stats.num_dropped_empty == 1 and stats.dropped_lines == [5]
    assert stats.num_faces == 2


@pytest.mark.parametrize("text, line, what", [
    ("a/b.jpg\nthree\n", 2, "expected the number of faces"),
    ("a/b.jpg\n2\n1 2 3 4 0 0 0 0 0 0\na/c.jpg\n1\n", 4, "count does not match"),
    ("a/b.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0 0\n", 4, "expected an image path"),
    ("a/b.jpg\n1\n1 2 3 4 0 0\n", 3, "expected 10 numbers"),
    ("a/b.jpg\n1\n1 2 3 4 0 0 0 0 0 zero\n", 3, "not a number"),
    ("a/b.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", 4, "file ends after 1 of 2"),
    ("a/b.jpg\n-1\n", 2, "negative"),
])
def test_wider_bbx_labels_bad_lines(tmp_path, text, line, what):
    gt = write(tmp_path / "gt.txt", text)
    with pytest.raises(ValueError) as err:
        read_wider_bbx_labels(gt, tmp_path)
    assert f"{gt}:{line}:" in str(err.value)
    assert what in str(err.value)


def test_val_list(tmp_path):
    listing = write(tmp_path / "val" / "wider_val.txt", "/0--Parade/x_1.jpg\n\n/1--Crowd/y_2.jpg\n")
    items = read_val_list(listing)
    assert [(i.event, i.name) for i in items] == [("0--Parade", "x_1"), ("1--Crowd", "y_2")]
    assert items[1].path == str(tmp_path / "val" / "images" / "1--Crowd" / "y_2.jpg")
    bad = write(tmp_path / "bad.txt", "/0--Parade/x_1.jpg\nnoevent.jpg\n")
    with pytest.raises(ValueError, match=rf"{bad}:2:"):
        read_val_list(bad)


# ---------------------------------------------------------------------------- image checks and layouts
def test_check_images(tmp_path):
    anns = []
    for i in range(4):
        anns.append(ImageAnnotation(str(tmp_path / "ev" / f"{i}.jpg"), np.zeros((0, 4)), np.zeros((0, 10)),
                                    np.zeros(0, bool)))
    touch_jpeg(tmp_path / "ev" / "0.jpg")
    touch_jpeg(tmp_path / "ev" / "2.jpg")
    write(tmp_path / "ev" / "3.jpg", "<html>not found</html>")       # exists but is no image
    with pytest.raises(FileNotFoundError) as err:
        check_images(anns)
    msg = str(err.value)
    assert "2 of 4" in msg and str(tmp_path / "ev" / "1.jpg") in msg and "missing" in msg
    assert "3.jpg (not an image" in msg
    good, skipped = check_images(anns, skip_bad=True)
    assert skipped == 2 and [Path(a.path).name for a in good] == ["0.jpg", "2.jpg"]
    (tmp_path / "ev" / "2.jpg").write_bytes(b"")
    good, skipped = check_images(anns, skip_bad=True, check_header=False)
    assert skipped == 2 and [Path(a.path).name for a in good] == ["0.jpg", "3.jpg"]


def test_detect_label_format(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        detect_label_format(tmp_path)
    assert "train/label.txt" in str(err.value) and "wider_face_train_bbx_gt.txt" in str(err.value)

    wider = tmp_path / "wider"
    write(wider / "wider_face_split" / "wider_face_train_bbx_gt.txt", WIDER_GT)
    (wider / "WIDER_train" / "images").mkdir(parents=True)
    fmt, label, images = detect_label_format(wider)
    assert fmt == "wider" and images == wider / "WIDER_train" / "images"
    anns, stats = load_training_annotations(wider, check=False)
    assert len(anns) == 3 and stats.num_faces == 2
    with pytest.raises(FileNotFoundError, match="0_Parade_1.jpg"):
        load_training_annotations(wider)                    # images are not there
    anns, _ = load_training_annotations(wider, skip_bad=True)
    assert anns == []

    rf = tmp_path / "rf"
    write(rf / "train" / "label.txt", f"# 0--Parade/a.jpg\n10 20 30 40 {LM} 0.82\n")
    touch_jpeg(rf / "train" / "images" / "0--Parade" / "a.jpg")
    assert detect_label_format(rf)[0] == "retinaface"
    anns, stats = load_training_annotations(rf)
    assert len(anns) == 1 and stats.num_faces == 1 and anns[0].has_landmarks.all()
    # The split folder itself and the label file itself work too.
    assert detect_label_format(rf / "train")[1] == rf / "train" / "label.txt"
    assert detect_label_format(rf / "train" / "label.txt")[2] == rf / "train" / "images"


# ---------------------------------------------------------------------------- augmentation
def marker_scene():
    """A black 200 x 300 image; three non-overlapping faces, each a filled box of its own colour
    with five 5 x 5 landmark blocks of their own colours; face 2 has no landmarks."""
    image = np.zeros((200, 300, 3), np.uint8)
    boxes = np.array([[20, 30, 90, 110], [150, 40, 230, 130], [100, 140, 140, 190]], np.float32)
    local = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]])
    landmarks = np.full((3, 10), -1.0, np.float32)
    box_colours, lm_colours = {}, {}
    for f, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        box_colours[f] = (40 + 60 * f, 200 - 50 * f, 30 + 20 * f)
        image[y1:y2, x1:x2] = box_colours[f]
        if f == 2:
            continue
        for j, (u, v) in enumerate(local):
            px, py = int(x1 + u * (x2 - x1)), int(y1 + v * (y2 - y1))
            colour = (10 + 20 * j, 250 - 15 * j - 100 * f, 120 + 25 * f)
            lm_colours[f, j] = colour
            image[py - 2:py + 3, px - 2:px + 3] = colour
            landmarks[f, 2 * j:2 * j + 2] = (px + 0.5, py + 0.5)   # centre of pixel (px, py)
    labels = np.array([1, 1, -1], np.float32)
    return image, boxes, landmarks, labels, box_colours, lm_colours


def colour_at(chw: np.ndarray, x: float, y: float, size: int):
    col = min(max(int(x * size), 0), size - 1)
    row = min(max(int(y * size), 0), size - 1)
    return tuple(int(round(v)) for v in chw[:, row, col] + np.array([104, 117, 123]))


def test_augmentation_markers_consistent():
    image, boxes, landmarks, labels, box_colours, lm_colours = marker_scene()
    size = 240
    transform = TrainTransform(image_size=size, distort=False, interpolations=(cv2.INTER_NEAREST,))
    swap = [1, 0, 2, 4, 3]
    mirrored_seen = {False: 0, True: 0}
    dropped_seen = 0
    for seed in range(40):
        chw, targets = transform(image, boxes, landmarks, labels, np.random.default_rng(seed))
        assert chw.shape == (3, size, size) and chw.dtype == np.float32
        assert targets.shape[1] == 15 and targets.dtype == np.float32
        assert 1 <= len(targets) <= 3
        dropped_seen += len(targets) < 3
        assert (targets[:, :4] >= 0).all() and (targets[:, :4] <= 1).all()
        assert (targets[:, 2] > targets[:, 0]).all() and (targets[:, 3] > targets[:, 1]).all()
        pixels = chw.transpose(1, 2, 0) + np.array([104, 117, 123], np.float32)
        for row in targets:
            x1, y1, x2, y2 = row[:4]
            # Which face is it? Its fill colour near the (clipped) box's top-left corner.
            probe = colour_at(chw, x1 + 0.08 * (x2 - x1), y1 + 0.08 * (y2 - y1), size)
            face = next(f for f, c in box_colours.items() if c == probe)
            # The face's pixels (fill and landmark blocks) span exactly the target box.
            own = [box_colours[face]] + [c for (f, _), c in lm_colours.items() if f == face]
            mask = np.zeros((size, size), bool)
            for c in own:
                mask |= (np.abs(pixels - np.array(c)) < 0.5).all(axis=2)
            ys, xs = np.nonzero(mask)
            np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], row[:4] * size, atol=1.01)
            if face == 2:
                assert row[14] == -1 and (row[4:14] == -1).all()
                continue
            assert row[14] == 1 and (row[4:14] >= 0).all() and (row[4:14] <= 1).all()
            pts = row[4:14].reshape(5, 2)
            assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]    # left stays left, mirrored or not
            inner = [(j, p) for j, p in enumerate(pts) if (p > 0.01).all() and (p < 0.99).all()]
            found = {m: all(colour_at(chw, p[0], p[1], size) == lm_colours[face, (swap[j] if m else j)]
                            for j, p in inner) for m in (False, True)}
            assert found[False] != found[True], (seed, face)
            mirrored_seen[found[True]] += 1
    assert mirrored_seen[False] > 0 and mirrored_seen[True] > 0
    assert dropped_seen > 0


def test_augmentation_fixed_seed_and_absent_landmarks():
    image, boxes, landmarks, labels, *_ = marker_scene()
    transform = TrainTransform(image_size=128)
    a = transform(image, boxes, landmarks, labels, np.random.default_rng(7))
    b = transform(image, boxes, landmarks, labels, np.random.default_rng(7))
    c = transform(image, boxes, landmarks, labels, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    for seed in range(30):
        _, targets = transform(image, boxes, landmarks, labels, np.random.default_rng(seed))
        absent = targets[:, 14] == -1
        assert (targets[absent, 4:14] == -1).all()
        assert (targets[~absent, 4:14] >= 0).all() and (targets[:, :4] >= 0).all() and (targets[:, :4] <= 1).all()


def test_random_crop_keeps_faces_with_centre_inside():
    rng = np.random.default_rng(0)
    image = np.zeros((300, 400, 3), np.uint8)
    boxes = np.array([[10, 10, 50, 60], [200, 100, 260, 170], [330, 240, 390, 290], [120, 200, 150, 240]],
                     np.float32)
    landmarks = np.tile(boxes[:, :2], 5) + 5
    has_lm = np.array([True, True, False, True])
    landmarks[~has_lm] = -1
    dropped = 0
    for seed in range(60):
        res = random_square_crop(image, boxes, landmarks, has_lm, np.random.default_rng(seed))
        assert res.roi is not None
        x1, y1, x2, y2 = res.roi
        side = x2 - x1
        assert side == y2 - y1 and res.image.shape[:2] == (side, side)
        assert any(int(s * 300) == side for s in (0.3, 0.45, 0.6, 0.8, 1.0))
        cx, cy = boxes[:, [0, 2]].mean(1), boxes[:, [1, 3]].mean(1)
        expected = np.flatnonzero((x1 < cx) & (cx < x2) & (y1 < cy) & (cy < y2))
        np.testing.assert_array_equal(res.keep, expected)
        dropped += len(res.keep) < 4
        full = (boxes[:, 0] >= x1) & (boxes[:, 1] >= y1) & (boxes[:, 2] <= x2) & (boxes[:, 3] <= y2)
        assert full.any()
        clipped = np.clip(boxes[res.keep], [x1, y1, x1, y1], [x2, y2, x2, y2]) - [x1, y1, x1, y1]
        np.testing.assert_allclose(res.boxes, clipped)
        lm_kept = has_lm[res.keep]
        assert (res.landmarks[~lm_kept] == -1).all()
        assert (res.landmarks[lm_kept] >= 0).all() and (res.landmarks[lm_kept] <= side).all()
    assert dropped > 0
    # No face fits in any square crop: the crop fails and the input comes back whole.
    wide = np.array([[10, 10, 390, 290]], np.float32)
    res = random_square_crop(image, wide, np.full((1, 10), -1, np.float32), np.array([False]), rng)
    assert res.roi is None and res.image is image


def test_failed_crop_pads_with_mean_and_normalizes_by_long_side():
    image = np.full((100, 300, 3), 200, np.uint8)
    boxes = np.array([[10, 10, 260, 90]], np.float32)          # wider than any square crop
    landmarks = np.array([[50, 40, 100, 40, 75, 60, 60, 80, 90, 80]], np.float32)
    transform = TrainTransform(image_size=150, distort=False, mirror_prob=0.0,
                               interpolations=(cv2.INTER_NEAREST,))
    chw, targets = transform(image, boxes, landmarks, np.array([1.0]), np.random.default_rng(0))
    np.testing.assert_allclose(targets[0, :4], np.array([10, 10, 260, 90]) / 300, rtol=1e-6)
    np.testing.assert_allclose(targets[0, 4:14], landmarks[0] / 300, rtol=1e-6)
    assert (chw[:, 60:, :] == 0).all()                          # padding is the mean colour
    np.testing.assert_array_equal(chw[:, 10, 10], np.array([200, 200, 200]) - np.array([104, 117, 123]))


def test_mirror_swaps_left_and_right():
    image = np.zeros((10, 20, 3), np.uint8)
    image[:, :5] = 255
    boxes = np.array([[2, 1, 6, 5]], np.float32)
    lm = np.array([[1, 1, 5, 1, 3, 3, 2, 4, 4, 4], [-1] * 10], np.float32)
    out, b, l = mirror(image, np.vstack([boxes, boxes]), lm, np.array([True, False]))
    assert (out[:, 15:] == 255).all() and (out[:, :15] == 0).all()
    np.testing.assert_array_equal(b[0], [14, 1, 18, 5])
    np.testing.assert_array_equal(l[0], [15, 1, 19, 1, 17, 3, 16, 4, 18, 4])
    np.testing.assert_array_equal(l[1], [-1] * 10)


def test_photometric_distort_keeps_grey_grey_and_is_seeded():
    grey = np.full((16, 16, 3), 90, np.uint8)
    for seed in range(20):
        out = photometric_distort(grey, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == grey.shape
        assert (out == out[0, 0, 0]).all()  # saturation/hue cannot colour a grey image
    colour = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    a = photometric_distort(colour, np.random.default_rng(3))
    b = photometric_distort(colour, np.random.default_rng(3))
    assert np.array_equal(a, b)
    assert any(not np.array_equal(photometric_distort(colour, np.random.default_rng(s)), colour)
               for s in range(5))


def test_val_transform():
    image, boxes, landmarks, labels, *_ = marker_scene()
    chw, targets = ValTransform(64)(image, boxes, landmarks, labels)
    assert chw.shape == (3, 64, 64)
    np.testing.assert_allclose(targets[:, :4], boxes / 300, rtol=1e-6)
    assert (targets[2, 4:] == [-1] * 10 + [-1]).all()


# ---------------------------------------------------------------------------- synthetic data
SMALL = dict(num_train=10, num_val=6, image_size=(160, 224), seed=3)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_widerface(root, **SMALL)
    return root


def test_synthetic_deterministic_and_skips_regeneration(synthetic_root, tmp_path):
    other = generate_synthetic_widerface(tmp_path / "again", **SMALL)
    for rel in ("train/label.txt", "val/label.txt", "val/wider_val.txt"):
        assert (synthetic_root / rel).read_bytes() == (other.root / rel).read_bytes()
    first = sorted((synthetic_root / "train" / "images").rglob("*.jpg"))
    assert len(first) == 10
    assert first[0].read_bytes() == (other.root / first[0].relative_to(synthetic_root)).read_bytes()
    # A complete set with the same parameters is left alone.
    stamp = other.manifest.stat().st_mtime_ns
    generate_synthetic_widerface(other.root, **SMALL)
    assert other.manifest.stat().st_mtime_ns == stamp
    # Other parameters regenerate it.
    generate_synthetic_widerface(other.root, **{**SMALL, "seed": 4, "num_train": 4})
    assert json.loads(other.manifest.read_text())["params"]["seed"] == 4
    assert len(list((other.root / "train" / "images").rglob("*.jpg"))) == 4
    assert (other.root / "train" / "label.txt").read_bytes() != (synthetic_root / "train" / "label.txt").read_bytes()
    # A folder holding something else is never written into.
    foreign = tmp_path / "foreign"
    write(foreign / "train" / "label.txt", "# a/b.jpg\n")
    with pytest.raises(FileExistsError):
        generate_synthetic_widerface(foreign, **SMALL)


def test_synthetic_layouts_parse_back(synthetic_root):
    from retinaface.formats.ground_truth import load_ground_truth

    train, stats = load_training_annotations(synthetic_root)
    assert len(train) == 10 and stats.num_faces > 10 and stats.num_dropped_empty == 0
    assert all(a.has_landmarks.all() for a in train)
    for a in train:
        image = cv2.imread(a.path)
        h, w = image.shape[:2]
        assert (h, w) == (160, 224)
        assert (a.boxes[:, :2] >= 0).all() and (a.boxes[:, 2] <= w).all() and (a.boxes[:, 3] <= h).all()
        pts = a.landmarks.reshape(-1, 5, 2)
        inside = ((pts >= a.boxes[:, None, :2] - 1) & (pts <= a.boxes[:, None, 2:] + 1)).all()
        assert inside and (pts[:, 0, 0] < pts[:, 1, 0]).all()
    val, _ = load_training_annotations(synthetic_root, split="val")
    listed = read_val_list(synthetic_root / "val" / "wider_val.txt")
    assert [(v.event, v.name) for v in listed] == [(a.event, a.name) for a in val]
    assert len({v.event for v in listed}) >= 3

    gt = load_ground_truth(synthetic_root / "val" / "ground_truth")
    assert gt.image_keys() == [(a.event, a.name) for a in val]
    for (event, name, gt_boxes), a in zip(gt, val):
        xywh = np.concatenate([a.boxes[:, :2], a.boxes[:, 2:] - a.boxes[:, :2]], axis=1)
        np.testing.assert_array_equal(np.asarray(gt_boxes).reshape(-1, 4), xywh)
    assert gt.num_counted("easy") <= gt.num_counted("medium") <= gt.num_counted("hard") == gt.num_faces
    for e, per_event in enumerate(gt.keep["easy"]):
        for i, keep in enumerate(per_event):
            heights = np.asarray(gt.boxes[e][i])[:, 3]
            np.testing.assert_array_equal(keep, np.flatnonzero(heights >= 50) + 1)


# ---------------------------------------------------------------------------- data sets
def test_train_dataset_collate_and_epochs(synthetic_root):
    anns, _ = load_training_annotations(synthetic_root)
    ds = WiderFaceTrainDataset(anns, TrainTransform(image_size=96), seed=5)
    image, targets = ds[0]
    assert image.shape == (3, 96, 96) and image.dtype == torch.float32
    assert targets.ndim == 2 and targets.shape[1] == 15 and targets.dtype == torch.float32
    again = ds[0]
    assert torch.equal(image, again[0]) and torch.equal(targets, again[1])
    ds.set_epoch(1)
    assert ds.epoch == 1 and not torch.equal(image, ds[0][0])

    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=detection_collate)
    images, target_list = next(iter(loader))
    assert images.shape == (4, 3, 96, 96)
    assert len(target_list) == 4 and all(t.shape[1] == 15 for t in target_list)
    assert [len(t) for t in target_list] == [len(ds[i][1]) for i in range(4)]
    # Same batches whatever the number of workers.
    # (worker_init_fn must not hang in forked workers after the parent used OpenCV's thread pool)
    workers = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=detection_collate, num_workers=2,
                                          worker_init_fn=worker_init_fn, persistent_workers=True)
    images_w, targets_w = next(iter(workers))
    assert torch.equal(images, images_w) and all(torch.equal(a, b) for a, b in zip(target_list, targets_w))
    # set_epoch reaches persistent workers.
    ds.set_epoch(0)
    assert torch.equal(next(iter(workers))[0][0], image)

    empty = detection_collate([(torch.zeros(3, 8, 8), torch.zeros(0, 15))])
    assert empty[0].shape == (1, 3, 8, 8) and empty[1][0].shape == (0, 15)


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "ev" / "bad.jpg"
    write(bad, "garbage")
    ann = ImageAnnotation(str(bad), np.zeros((0, 4)), np.zeros((0, 10)), np.zeros(0, bool))
    with pytest.raises(OSError, match="bad.jpg"):
        WiderFaceTrainDataset([ann])[0]


def test_val_dataset(synthetic_root):
    ds = WiderFaceValDataset(synthetic_root)
    assert len(ds) == 6
    image, (event, name) = ds[0]
    assert image.dtype == np.uint8 and image.shape == (160, 224, 3)
    first = read_val_list(synthetic_root / "val" / "wider_val.txt")[0]
    assert (event, name) == (first.event, first.name)
    with pytest.raises(FileNotFoundError, match="wider_val.txt"):
        WiderFaceValDataset(synthetic_root / "train")


def test_train_dataset_negative_seed_and_index(tmp_path):
    """A negative seed (the trainer's seeding accepts one) must not crash sample generation, and
    ds[-1] is the same sample as ds[len - 1], augmentation included."""
    image, boxes, landmarks, labels, *_ = marker_scene()
    anns = []
    for i in range(3):
        path = tmp_path / "ev" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        anns.append(ImageAnnotation(str(path), boxes, landmarks, labels > 0))
    ds = WiderFaceTrainDataset(anns, TrainTransform(image_size=64), seed=-3)
    a, b = ds[1], ds[1]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], ds[0][0])
    last, neg = ds[2], ds[-1]
    assert torch.equal(last[0], neg[0]) and torch.equal(last[1], neg[1])
    # Non-negative seeds keep their streams.
    from retinaface.data import sample_rng
    assert sample_rng(5, 1, 2).random() == np.random.default_rng(np.random.SeedSequence([5, 1, 2])).random()


def test_wider_bbx_reads_bom_and_paths_with_spaces(tmp_path):
    from retinaface.formats.wider_bbx import read_bbx_blocks

    f = tmp_path / "gt.txt"
    f.write_bytes("\ufeff0--Parade/a b.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n".encode("utf-8"))
    blocks = read_bbx_blocks(f)
    assert blocks[0].path == "0--Parade/a b.jpg" and len(blocks[0].faces) == 1


def test_wider_bbx_names_file_and_line_of_non_utf8_bytes(tmp_path):
    from retinaface.formats.wider_bbx import read_bbx_blocks

    f = tmp_path / "gt.txt"
    f.write_bytes(b"0--Parade/a.jpg\n1\n1 2 3 4 0 0 0 0 \xff0 0\n")
    with pytest.raises(ValueError, match=r"gt.txt:3: not UTF-8"):
        read_bbx_blocks(f)
