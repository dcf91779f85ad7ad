"""Tiled detection: tile layout, shifting back, merging across tiles, small faces kept."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from retinaface.inference.tiling import detect_tiled, merge_detections, shift_detections, tile_grid, tile_origins


class BlobDetector:
    """A stand-in detector with a known size limit: bright square blobs become detections.

    Like the real network it first resizes its input so the long side is at most ``max_side`` and
    cannot see faces smaller than ``min_face`` pixels at that scale (RetinaFace's smallest anchor
    plays that role). A blob cut by the image border gives a truncated box, as a real detector's.
    """

    nms_threshold = 0.4
    plus_one_nms = True
    post_nms_topk = None

    def __init__(self, max_side=None, min_face=6):
        self.max_side, self.min_face = max_side, min_face
        self.calls = []

    def detect(self, image):
        return self.detect_batch([image])[0]

    def detect_batch(self, images, batch_size=16):
        self.calls.append([img.shape for img in images])
        return [self._one(img) for img in images]

    def _one(self, image):
        h, w = image.shape[:2]
        scale = 1.0 if self.max_side is None else min(1.0, self.max_side / max(h, w))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        mask = (small[:, :, 2] > 200).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        rows = []
        for x, y, bw, bh, _ in stats[1:count]:
            if min(bw, bh) < self.min_face:
                continue
            x1, y1, x2, y2 = np.array([x, y, x + bw - 1, y + bh - 1], dtype=np.float32) / scale
            points = np.tile([(x1 + x2) / 2, (y1 + y2) / 2], 5)
            rows.append([x1, y1, x2, y2, 0.9, *points])
        return np.array(rows, dtype=np.float32).reshape(-1, 15)


def _canvas(height, width, faces):
    image = np.full((height, width, 3), 90, dtype=np.uint8)
    for x, y, s in faces:
        image[y:y + s, x:x + s] = (40, 60, 255)
    return image


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_tile_origins_cover_the_image_with_the_asked_overlap():
    for length, size, overlap in [(4000, 640, 64), (3000, 640, 100), (641, 640, 0), (1000, 512, 511)]:
        starts = tile_origins(length, size, overlap)
        assert starts[0] == 0 and starts[-1] + size == length
        assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:]))
    assert tile_origins(500, 640, 64) == [0]
    with pytest.raises(ValueError, match="overlap"):
        tile_origins(1000, 640, 640)
    grid = tile_grid(3000, 4000, 640, 64)
    covered = np.zeros((3000, 4000), dtype=bool)
    for y0, x0, y1, x1 in grid:
        covered[y0:y1, x0:x1] = True
    assert covered.all()


def test_shift_moves_boxes_and_landmarks_and_merge_suppresses_duplicates():
    det = np.array([[1, 2, 11, 12, 0.9] + [5, 6] * 5], dtype=np.float32)
    shifted = shift_detections(det, 100, 50)
    np.testing.assert_allclose(shifted[0, :4], [101, 52, 111, 62])
    np.testing.assert_allclose(shifted[0, 5:], [105, 56] * 5)
    twin = shifted.copy()
    twin[0, 4] = 0.5
    twin[0, :4] += 1
    merged = merge_detections(np.concatenate([twin, shifted]), 0.4)
    assert len(merged) == 1 and merged[0, 4] == pytest.approx(0.9)


def test_tiling_keeps_tiny_faces_that_a_downscaled_run_misses():
    rng = np.random.default_rng(0)
    faces = [(int(x), int(y), 10) for x, y in zip(rng.integers(0, 3980, 40), rng.integers(0, 2980, 40))]
    # one face straddling a tile border, to be found whole once
    faces.append((600, 300, 30))
    image = _canvas(3000, 4000, faces)
    truth = [(x, y, x + s - 1, y + s - 1) for x, y, s in faces]

    downscaled = BlobDetector(max_side=1600).detect(image)
    found_down = sum(any(_iou(t, d) > 0.5 for d in downscaled) for t in truth)
    assert found_down <= 1  # only the 30-px face survives the 2.5x downscale

    detector = BlobDetector(max_side=None)
    tiled = detect_tiled(detector, image, size=640, overlap=64, batch_size=4)
    matched = [max((_iou(t, d) for d in tiled), default=0.0) for t in truth]
    # overlapping random faces merge into one blob; all others are found exactly
    assert sum(m > 0.9 for m in matched) >= len(truth) - 2
    assert len(tiled) <= len(truth)  # no duplicates left from the overlaps
    # every batch held tiles of one shape (edge tiles padded)
    assert {shape for call in detector.calls for shape in call} == {(640, 640, 3)}


def test_image_within_one_tile_is_detected_directly():
    image = _canvas(300, 400, [(50, 60, 20)])
    detector = BlobDetector()
    np.testing.assert_array_equal(detect_tiled(detector, image, size=640, overlap=64), detector.detect(image))


def test_real_detector_tiles_agree_with_whole_image_on_one_tile():
    torch = pytest.importorskip("torch")
    import retinaface

    torch.manual_seed(0)
    detector = retinaface.Detector(retinaface.create_model("mobilenet0.25").eval())
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    np.testing.assert_allclose(detect_tiled(detector, image, size=128, overlap=16), detector.detect(image))
    # two tiles (no pyramid): every merged row comes from a tile's own detections, shifted back
    wide = rng.integers(0, 255, (128, 200, 3), dtype=np.uint8)
    merged = detect_tiled(detector, wide, size=128, overlap=56, pyramid=False)
    left, right = detector.detect(wide[:, :128]), shift_detections(detector.detect(wide[:, 72:]), 72, 0)
    pool = np.concatenate([left, right])
    for row in merged:
        assert np.abs(pool - row).max(axis=1).min() < 1e-4
