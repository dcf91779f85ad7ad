"""The training pipeline's fast paths against the straightforward recipe (benchmarks/recipe_reference.py):
LUT distortion bit for bit, draw-first planning, path-based loading, header sizes, crop distribution."""
from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from retinaface.data import augment as A
from retinaface.data.fast_decode import decode_reduced, image_size, reduction_factor

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("recipe_reference", ROOT / "benchmarks" / "recipe_reference.py")
R = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(R)


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus noise: every uint8 value and hue occurs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 / max(w - 1, 1)), (y * 255 / max(h - 1, 1)), ((x + y) * 127 / max(h + w, 1))], -1)
    img = img + rng.normal(0, 25, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def faces(seed: int, h: int, w: int, k: int = 6):
    rng = np.random.default_rng(seed)
    wh = rng.uniform(10, 0.3 * min(h, w), (k, 1)) * rng.uniform(0.7, 1.0, (k, 2))
    xy = rng.uniform(0, 1, (k, 2)) * (np.array([w, h]) - wh)
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    lms = (xy[:, None] + rng.uniform(0, 1, (k, 5, 2)) * wh[:, None]).reshape(k, 10).astype(np.float32)
    labels = np.where(rng.random(k) < 0.7, 1.0, -1.0).astype(np.float32)
    lms[labels < 0] = -1
    return boxes, lms, labels


@pytest.mark.parametrize("contrast_first", [True, False])
def test_lut_distortion_equals_float_reference_bit_for_bit(contrast_first):
    img = textured(64, 96)
    rng = np.random.default_rng(3)
    for _ in range(25):
        d = A.Distortion(contrast_first, float(rng.uniform(-32, 32)), float(rng.uniform(0.5, 1.5)),
                         float(rng.uniform(0.5, 1.5)), int(rng.integers(-18, 19)))
        ours = A.apply_distortion(img, d)
        ref = R.distort_with(img, d.contrast_first, d.brightness, d.contrast, d.saturation, d.hue)
        np.testing.assert_array_equal(ours, ref)
        # with HSV steps, any subset matches the reference as it is
        for part in ([None, None, d.saturation, None], [None, None, None, d.hue],
                     [d.brightness, None, None, d.hue], [None, d.contrast, d.saturation, None]):
            np.testing.assert_array_equal(A.apply_distortion(img, A.Distortion(contrast_first, *part)),
                                          R.distort_with(img, contrast_first, *part))
        # without them the reference still round-trips through HSV (the library skips that, its
        # only deviation): compare the brightness / contrast tables, composed, with float64 steps
        for part in ([d.brightness, None], [None, d.contrast], [d.brightness, d.contrast]):
            ref = img.copy()
            if part[0] is not None:
                R.convert(ref, beta=part[0])
            if part[1] is not None:
                R.convert(ref, alpha=part[1])
            np.testing.assert_array_equal(A.apply_distortion(img, A.Distortion(contrast_first, *part)), ref)


def test_draws_match_reference_order():
    a, b = np.random.default_rng(11), np.random.default_rng(11)
    for _ in range(200):
        d = A.draw_distortion(a)
        assert (d.contrast_first, d.brightness, d.contrast, d.saturation, d.hue) == R.draw_distortion(b)


def test_plan_then_render_is_call_and_load_is_call(tmp_path):
    img = textured(120, 200, seed=1)
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), img)
    t = A.TrainTransform(64)
    for seed in range(30):
        boxes, lms, labels = faces(seed, 120, 200)
        x, tx = t(img, boxes, lms, labels, np.random.default_rng(seed))
        y, ty = t.load(str(path), boxes, lms, labels, np.random.default_rng(seed))
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(tx, ty)
        plan = t.plan(120, 200, boxes, lms, labels, np.random.default_rng(seed))
        np.testing.assert_array_equal(t.render(img, plan), x)
        np.testing.assert_array_equal(plan.targets, tx)


def test_reduced_decode_same_targets_and_geometry(tmp_path):
    h, w = 600, 900
    img = textured(h, w, seed=2)
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    # no distortion here, so the white square stays findable
    full, fast = A.TrainTransform(64, distort=False), A.TrainTransform(64, distort=False, reduced_decode=True)
    # a bright square "face" whose box we can find again in the output
    box = np.array([[300, 200, 420, 320]], np.float32)
    marked = img.copy()
    marked[200:320, 300:420] = 255
    cv2.imwrite(str(path), marked, [cv2.IMWRITE_JPEG_QUALITY, 95])
    lms = np.full((1, 10), -1, np.float32)
    reduced = 0
    for seed in range(40):
        x, tx = full.load(str(path), box, lms, np.array([-1.0]), np.random.default_rng(seed))
        y, ty = fast.load(str(path), box, lms, np.array([-1.0]), np.random.default_rng(seed))
        np.testing.assert_array_equal(tx, ty)          # identical draws and targets
        if not np.array_equal(x, y):
            reduced += 1
            # the white square sits where the targets say in both images (to a pixel)
            for out in (x, y):
                bright = (out + np.array(A.DEFAULT_RGB_MEAN)[:, None, None]).min(0) > 200
                ys, xs = np.nonzero(bright)
                x1, y1, x2, y2 = ty[0, :4] * 64
                assert abs(xs.min() - x1) <= 1.5 and abs(xs.max() + 1 - x2) <= 1.5
                assert abs(ys.min() - y1) <= 1.5 and abs(ys.max() + 1 - y2) <= 1.5
            # the same picture up to resampling: 8 x 8 block means agree (the noise does not)
            blocks = lambda a: a.reshape(3, 8, 8, 8, 8).mean((2, 4))  # noqa: E731
            assert np.abs(blocks(x) - blocks(y)).mean() < 4
    assert reduced > 5


def test_header_sizes_and_fallbacks(tmp_path):
    img = textured(37, 53)
    for ext in (".jpg", ".png", ".bmp"):     # (width, height), from a path or from the bytes
        p = tmp_path / f"x{ext}"
        cv2.imwrite(str(p), img)
        assert image_size(p) == image_size(p.read_bytes()) == (53, 37)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00")
    assert image_size(tmp_path / "bad.jpg") is None
    (tmp_path / "text.jpg").write_text("not an image")
    assert image_size(tmp_path / "text.jpg") is None
    with pytest.raises(OSError):
        image_size(tmp_path / "missing.jpg")
    assert decode_reduced(tmp_path / "x.jpg", 2, 37, 53).shape == (19, 27, 3)
    assert decode_reduced(tmp_path / "x.jpg", 2, 53, 37) is None   # sides swapped: no match
    assert [reduction_factor(s, 100) for s in (99, 199, 200, 399, 400, 800, 5000)] == [1, 1, 2, 2, 4, 8, 8]
    # load() names an unreadable file
    t = A.TrainTransform(32, reduced_decode=True)
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(OSError, match="junk.jpg"):
        t.load(str(tmp_path / "junk.jpg"), np.zeros((0, 4)), np.zeros((0, 10)), np.zeros(0), np.random.default_rng(0))


def test_exif_rotated_jpeg_redraws_from_decoded_size(tmp_path):
    """A JPEG whose EXIF orientation swaps its sides: the header size is wrong for the decoded
    image, so load() must give exactly __call__ on the decoded (rotated) image."""
    img = textured(40, 90)
    ok, data = cv2.imencode(".jpg", img)
    data = data.tobytes()
    # APP1 Exif segment with Orientation = 6 (rotate 90 CW), little-endian TIFF
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHII", 0x0112, 3, 1, 6) \
        + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + tiff
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]
    path = tmp_path / "rot.jpg"
    path.write_bytes(data)
    decoded = cv2.imread(str(path))
    if decoded.shape[:2] != (90, 40):
        pytest.skip("this OpenCV build ignores EXIF orientation")
    boxes = np.array([[5, 10, 30, 40]], np.float32)
    lms, labels = np.full((1, 10), -1, np.float32), np.array([-1.0])
    t = A.TrainTransform(32, reduced_decode=True)
    for seed in range(5):
        x, tx = t(decoded, boxes, lms, labels, np.random.default_rng(seed))
        y, ty = t.load(str(path), boxes, lms, labels, np.random.default_rng(seed))
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(tx, ty)


def test_crop_distribution_matches_one_try_at_a_time():
    """The vectorised crop (all tries drawn at once) and the reference's loop give the same
    distribution of crop sides, positions and kept faces (a few standard errors apart)."""
    h, w = 300, 400
    img = np.zeros((h, w, 3), np.uint8)
    boxes = np.array([[50, 40, 90, 90], [200, 100, 260, 170], [330, 220, 380, 290]], np.float32)
    lms = np.full((3, 10), -1, np.float32)
    labels = np.array([-1.0, -1.0, -1.0])
    n = 1500
    ours, ref = [], []
    for i in range(n):
        p = A.draw_square_crop(h, w, boxes, lms, labels > 0, np.random.default_rng([1, i]))
        ours.append((p.roi[2] - p.roi[0], p.roi[0], len(p.keep)) if p.roi is not None else (0, 0, 3))
        out, kb, *_, failed = R.crop(img, boxes, lms, labels, np.random.default_rng([2, i]))
        ref.append((out.shape[0], 0, len(kb)) if not failed else (0, 0, 3))
        if not failed:
            ref[-1] = (out.shape[0], float("nan"), len(kb))
    ours, ref = np.array(ours, float), np.array(ref, float)
    for side in np.unique(np.concatenate([ours[:, 0], ref[:, 0]])):
        p_a, p_b = (ours[:, 0] == side).mean(), (ref[:, 0] == side).mean()
        se = np.sqrt(max(p_a * (1 - p_a), p_b * (1 - p_b), 1e-4) * 2 / n)
        assert abs(p_a - p_b) < 4 * se, (side, p_a, p_b)
    assert abs(ours[:, 2].mean() - ref[:, 2].mean()) < 4 * np.sqrt(2 * ours[:, 2].var() / n) + 1e-9
    # positions uniform over the valid range: mean left offset of full-height crops
    full = ours[:, 0] == 300
    assert full.sum() > 100
    assert abs(ours[full, 1].mean() - 50) < 4 * 29 / np.sqrt(full.sum())


def test_uint8_output_plus_the_device_subtraction_equals_the_float_output(tmp_path):
    """TrainTransform(normalize=False) and MeanSubtractingLoader: the same float32 batches as the
    default, on every decode path (region, reduced, whole image) and for a fractional mean."""
    import torch

    from retinaface.data import MeanSubtractingLoader, detection_collate
    from retinaface.data.augment import TrainTransform, chw_uint8
    from retinaface.data.dataset import subtract_mean

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    np.testing.assert_array_equal(chw_uint8(img), img.transpose(2, 0, 1))
    np.testing.assert_array_equal(chw_uint8(img[3:30, 5:41]), img[3:30, 5:41].transpose(2, 0, 1))   # a view

    big = cv2.GaussianBlur(rng.integers(0, 256, (700, 900, 3), dtype=np.uint8), (5, 5), 2)
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), big)
    boxes = np.array([[100, 100, 160, 170], [400, 300, 430, 335], [600, 80, 700, 200]], np.float32)
    lms = np.tile(np.array([[110, 120, 140, 120, 125, 140, 112, 155, 138, 155]], np.float32), (3, 1))
    labels = np.array([1.0, -1.0, 1.0], np.float32)
    for mean in ((104, 117, 123), (103.94, 116.78, 123.68)):
        for options in (dict(), dict(reduced_decode=True)):
            floats = TrainTransform(96, rgb_mean=mean, **options)
            uint8s = TrainTransform(96, rgb_mean=mean, normalize=False, **options)
            batch_f, batch_u = [], []
            for seed in range(8):
                a = floats.load(str(path), boxes, lms, labels, np.random.default_rng(seed))
                b = uint8s.load(str(path), boxes, lms, labels, np.random.default_rng(seed))
                assert b[0].dtype == np.uint8 and b[0].shape == a[0].shape
                np.testing.assert_array_equal(a[1], b[1])
                batch_f.append((torch.from_numpy(a[0]), torch.from_numpy(a[1])))
                batch_u.append((torch.from_numpy(b[0]), torch.from_numpy(b[1])))
            want = detection_collate(batch_f)[0]
            got, _ = next(iter(MeanSubtractingLoader([detection_collate(batch_u)], mean, "cpu")))
            assert got.dtype == torch.float32 and torch.equal(got, want)
            mean32 = torch.tensor([float(np.float32(m)) for m in mean])
            assert torch.equal(subtract_mean(detection_collate(batch_u)[0], mean32), want)
    with pytest.raises(TypeError, match="uint8 batches"):
        next(iter(MeanSubtractingLoader([(want, [])], mean, "cpu")))
