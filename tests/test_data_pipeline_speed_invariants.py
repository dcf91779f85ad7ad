"""The training pipeline's speed-ups change no sample: ``TrainTransform`` (``__call__``, ``load``) and
``WiderFaceTrainDataset`` give, bit for bit, what the pipeline gave before them for the same
generator. ``frozen_*`` below is that earlier default path, kept as it was (all tries tested at
once, NumPy mean subtraction, split/merge HSV steps, ``cv2.imread``), as the oracle."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
import pytest
import torch

from retinaface.data import ImageAnnotation, WiderFaceTrainDataset, read_image, sample_rng
from retinaface.data import augment as A
from retinaface.data.fast_decode import decode_full, decode_reduced, image_size, read_bytes, read_full

_MIRROR_COLUMNS = np.stack([2 * np.array([1, 0, 2, 4, 3]), 2 * np.array([1, 0, 2, 4, 3]) + 1], axis=1).ravel()


# ---------------------------------------------------------------------------- the frozen pipeline
def frozen_crop(height, width, boxes, landmarks, has_landmarks, rng, tries=250,
                scales=(0.3, 0.45, 0.6, 0.8, 1.0)):
    k = len(boxes)
    if k == 0:
        return boxes, landmarks, np.arange(0), None
    short = min(width, height)
    side = (np.asarray(scales, dtype=np.float64)[rng.integers(0, len(scales), size=tries)] * short).astype(np.int64)
    left = np.floor(rng.random(tries) * (width - side + 1)).astype(np.int64)
    top = np.floor(rng.random(tries) * (height - side + 1)).astype(np.int64)
    roi = np.stack([left, top, left + side, top + side], axis=1).astype(np.float64)
    b = boxes.astype(np.float64)
    inside = ((b[None, :, 0] >= roi[:, None, 0]) & (b[None, :, 1] >= roi[:, None, 1])
              & (b[None, :, 2] <= roi[:, None, 2]) & (b[None, :, 3] <= roi[:, None, 3]))
    inside &= ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))[None, :]
    cx = (b[:, 0] + b[:, 2]) / 2
    cy = (b[:, 1] + b[:, 3]) / 2
    centre_in = ((roi[:, None, 0] < cx[None]) & (cx[None] < roi[:, None, 2])
                 & (roi[:, None, 1] < cy[None]) & (cy[None] < roi[:, None, 3]))
    ok = inside.any(axis=1) & centre_in.any(axis=1)
    if not ok.any():
        return boxes, landmarks, np.arange(k), None
    t = int(np.argmax(ok))
    x1, y1, x2, y2 = roi[t]
    keep = np.flatnonzero(centre_in[t])
    kb = b[keep]
    kb[:, 0:2] = np.maximum(kb[:, 0:2], (x1, y1)) - (x1, y1)
    kb[:, 2:4] = np.minimum(kb[:, 2:4], (x2, y2)) - (x1, y1)
    kl = landmarks[keep].astype(np.float64)
    lm = has_landmarks[keep]
    shifted = np.clip(kl.reshape(-1, 5, 2) - (x1, y1), 0, (x2 - x1, y2 - y1)).reshape(-1, 10)
    kl = np.where(lm[:, None], shifted, kl)
    return kb.astype(np.float32), kl.astype(np.float32), keep, roi[t].copy()


@dataclass
class FrozenDistortion:
    contrast_first: bool
    brightness: Optional[float]
    contrast: Optional[float]
    saturation: Optional[float]
    hue: Optional[int]


def frozen_draw_distortion(rng):
    contrast_first = rng.random() < 0.5
    brightness = rng.uniform(-32, 32) if rng.random() < 0.5 else None
    contrast = None
    if contrast_first and rng.random() < 0.5:
        contrast = rng.uniform(0.5, 1.5)
    do_sat = rng.random() < 0.5
    sat = rng.uniform(0.5, 1.5)
    do_hue = rng.random() < 0.5
    hue = int(rng.integers(-18, 19))
    if not contrast_first and rng.random() < 0.5:
        contrast = rng.uniform(0.5, 1.5)
    return FrozenDistortion(bool(contrast_first), brightness, contrast, sat if do_sat else None,
                            hue if do_hue else None)


def _lut(alpha=1.0, beta=0.0):
    return np.clip(np.arange(256, dtype=np.float64) * alpha + beta, 0, 255).astype(np.uint8)


def frozen_distort(image, d):
    image = np.ascontiguousarray(image)
    hsv_steps = d.saturation is not None or d.hue is not None
    before = _lut(beta=d.brightness) if d.brightness is not None else None
    after = None
    if d.contrast is not None and (d.contrast_first or not hsv_steps):
        contrast = _lut(alpha=d.contrast)
        before = contrast if before is None else contrast[before]
    elif d.contrast is not None:
        after = _lut(alpha=d.contrast)
    if before is not None:
        image = cv2.LUT(image, before)
    if hsv_steps:
        h, s, v = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
        if d.saturation is not None:
            s = cv2.LUT(s, _lut(alpha=d.saturation))
        if d.hue is not None:
            h = cv2.LUT(h, ((np.arange(256) + d.hue) % 180).astype(np.uint8))
        image = cv2.cvtColor(cv2.merge([h, s, v]), cv2.COLOR_HSV2BGR)
    if after is not None:
        image = cv2.LUT(image, after)
    return image


def frozen_transform(image, boxes, landmarks, labels, rng, size=640, mean=(104, 117, 123), distort=True,
                     mirror_prob=0.5, interpolations=A.INTERPOLATIONS):
    """The default TrainTransform.__call__ as it was: (3, S, S) float32 image, (K, 15) targets."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    k = len(boxes)
    landmarks = np.asarray(landmarks, dtype=np.float32).reshape(k, 10)
    has_lm = np.asarray(labels).reshape(k) > 0
    height, width = image.shape[:2]
    boxes, landmarks, keep, roi = frozen_crop(height, width, boxes, landmarks, has_lm, rng)
    has_lm = has_lm[keep]
    d = frozen_draw_distortion(rng) if distort else None
    if roi is None:
        canvas_w = canvas_h = max(height, width)
    else:
        canvas_w, canvas_h = int(roi[2] - roi[0]), int(roi[3] - roi[1])
    flip = bool(rng.random() < mirror_prob)
    if flip:
        boxes = boxes.copy()
        boxes[:, [0, 2]] = canvas_w - boxes[:, [2, 0]]
        flipped = landmarks.copy()
        flipped[:, 0::2] = canvas_w - flipped[:, 0::2]
        landmarks = np.where(has_lm[:, None], flipped[:, _MIRROR_COLUMNS], landmarks)
    interpolation = interpolations[int(rng.integers(0, len(interpolations)))]
    targets = np.empty((k := len(boxes), 15), dtype=np.float32)
    scale = np.array([canvas_w, canvas_h], dtype=np.float64)
    targets[:, 0:4] = (boxes.reshape(k, 2, 2) / scale).reshape(k, 4)
    targets[:, 4:14] = np.where(has_lm[:, None], (landmarks.reshape(k, 5, 2) / scale).reshape(k, 10), -1.0)
    targets[:, 14] = np.where(has_lm, 1.0, -1.0)

    if roi is not None:
        x1, y1, x2, y2 = (int(v) for v in roi)
        image = image[y1:y2, x1:x2]
    if d is not None:
        image = frozen_distort(image, d)
    if roi is None and image.shape[0] != image.shape[1]:
        side = max(image.shape[:2])
        square = np.empty((side, side, 3), dtype=image.dtype)
        square[:] = np.asarray(mean, dtype=image.dtype)
        square[:image.shape[0], :image.shape[1]] = image
        image = square
    if flip:
        image = cv2.flip(image, 1)
    image = cv2.resize(image, (size, size), interpolation=interpolation)
    m = np.asarray(mean, dtype=np.float32)
    out = np.empty((3, size, size), dtype=np.float32)
    for c, plane in enumerate(cv2.split(image)):
        np.subtract(plane, m[c], out=out[c], dtype=np.float32)
    return out, targets


# ---------------------------------------------------------------------------- inputs
def scene(seed: int, h: int, w: int, k: int):
    """A textured image (all hues and levels) with ``k`` faces, 30 % without landmarks."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) * 127 / max(h + w, 1)], -1)
    img = np.clip(img + rng.normal(0, 30, img.shape), 0, 255).astype(np.uint8)
    wh = rng.uniform(6, 0.35 * min(h, w), (k, 1)) * rng.uniform(0.7, 1.0, (k, 2))
    xy = rng.uniform(0, 1, (k, 2)) * (np.array([w, h]) - wh)
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    lms = (xy[:, None] + rng.uniform(0, 1, (k, 5, 2)) * wh[:, None]).reshape(k, 10).astype(np.float32)
    labels = np.where(rng.random(k) < 0.7, 1.0, -1.0).astype(np.float32)
    lms[labels < 0] = -1
    return img, boxes, lms, labels


CASES = [  # (seed, height, width, faces)
    (0, 240, 320, 12), (1, 300, 200, 6), (2, 97, 131, 3), (3, 180, 180, 1), (4, 64, 250, 4), (5, 150, 90, 0)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    out = []
    for seed, h, w, k in CASES:
        img, boxes, lms, labels = scene(seed, h, w, k)
        path = folder / f"{seed}.{'png' if seed % 3 == 2 else 'jpg'}"
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90] if path.suffix == ".jpg" else [])
        out.append((str(path), boxes, lms, labels))
    # a face wider than any square crop: every try fails, the image is padded
    img, *_ = scene(9, 120, 300, 0)
    path = folder / "wide.jpg"
    cv2.imwrite(str(path), img)
    out.append((str(path), np.array([[5, 10, 280, 100], [40, 40, 40, 60]], np.float32),
                np.array([[50, 40, 90, 40, 70, 60, 60, 80, 80, 80], [-1] * 10], np.float32), np.array([1.0, -1.0])))
    return out


# ---------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("size", [48, 160])
def test_default_transform_bit_identical_to_frozen(files, size):
    t = A.TrainTransform(size)
    for n, (path, boxes, lms, labels) in enumerate(files):
        image = cv2.imread(path)
        for seed in range(12):
            expected = frozen_transform(image, boxes, lms, labels, np.random.default_rng([seed, n]), size)
            for got in (t(image, boxes, lms, labels, np.random.default_rng([seed, n])),
                        t.load(path, boxes, lms, labels, np.random.default_rng([seed, n]))):
                np.testing.assert_array_equal(got[0], expected[0])
                np.testing.assert_array_equal(got[1], expected[1])
                assert got[0].dtype == np.float32 and got[1].dtype == np.float32


@pytest.mark.parametrize("interpolation", A.INTERPOLATIONS)
def test_every_interpolation_and_option_bit_identical(files, interpolation):
    """Each interpolation forced (INTER_NEAREST with crops larger and smaller than the output
    included), distortion on and off, always / never mirrored, a non-integer mean."""
    options = [dict(), dict(distort=False), dict(mirror_prob=1.0), dict(mirror_prob=0.0),
               dict(rgb_mean=(103.94, 116.78, 123.68))]
    for opts in options:
        t = A.TrainTransform(64, interpolations=(interpolation,), **opts)
        frozen_opts = {"mean" if k == "rgb_mean" else k: v for k, v in opts.items()}
        for n, (path, boxes, lms, labels) in enumerate(files):
            image = cv2.imread(path)
            for seed in range(3):
                rng = [seed, n, interpolation]
                expected = frozen_transform(image, boxes, lms, labels, np.random.default_rng(rng), 64,
                                            interpolations=(interpolation,), **frozen_opts)
                got = t.load(path, boxes, lms, labels, np.random.default_rng(rng))
                np.testing.assert_array_equal(got[0], expected[0])
                np.testing.assert_array_equal(got[1], expected[1])


def test_crop_draw_identical_to_all_tries_at_once():
    """draw_square_crop tests its first tries before the rest: the same crop, faces, boxes and
    landmarks as testing all 250 at once, and the generator left in the same state."""
    rng = np.random.default_rng(0)
    fails = 0
    for trial in range(1500):
        h, w = int(rng.integers(10, 900)), int(rng.integers(10, 900))
        k = int(rng.integers(0, 14))
        wh = rng.uniform(0, 1, (k, 2)) ** 2 * [w, h] * rng.choice([0.2, 1.0, 1.6])
        xy = rng.uniform(-0.1, 1, (k, 2)) * [w, h]
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        if k and trial % 5 == 0:
            boxes = np.round(boxes)                 # corners on the crop's edges
        if k and trial % 7 == 0:
            boxes[0, 2] = boxes[0, 0]               # zero width
        if k and trial % 13 == 0:
            boxes[-1] = np.nan
        lms = (xy[:, None] + rng.uniform(-0.2, 1.2, (k, 5, 2)) * wh[:, None]).reshape(k, 10).astype(np.float32)
        has = rng.random(k) < 0.7
        lms[~has] = -1
        tries = 250 if trial % 4 else int(rng.integers(1, 40))
        seed = int(rng.integers(1 << 31))
        a_rng, b_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        boxes_f, lms_f, keep_f, roi_f = frozen_crop(h, w, boxes, lms, has, a_rng, tries=tries)
        plan = A.draw_square_crop(h, w, boxes, lms, has, b_rng, tries=tries)
        assert a_rng.random() == b_rng.random()
        fails += roi_f is None
        assert (plan.roi is None) == (roi_f is None)
        if roi_f is not None:
            np.testing.assert_array_equal(plan.roi, roi_f)
        for got, want in ((plan.boxes, boxes_f), (plan.landmarks, lms_f), (plan.keep, keep_f)):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    assert 100 < fails < 1400          # both outcomes well covered


def test_distortion_on_a_view_equals_on_a_copy():
    img, *_ = scene(3, 200, 260, 0)
    rng = np.random.default_rng(4)
    for _ in range(40):
        d = A.draw_distortion(rng)
        view = img[17:160, 33:201]
        frozen = frozen_distort(view, FrozenDistortion(d.contrast_first, d.brightness, d.contrast, d.saturation,
                                                       d.hue))
        np.testing.assert_array_equal(A.apply_distortion(view, d), frozen)
        np.testing.assert_array_equal(A.apply_distortion(np.ascontiguousarray(view), d), frozen)
    np.testing.assert_array_equal(img, scene(3, 200, 260, 0)[0])   # the input is not written to


def test_normalize_equals_numpy_subtraction():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for mean in ((104, 117, 123), (103.94, 116.78, 123.68), (0.1, 255.5, -3.3)):
        expected = img.transpose(2, 0, 1).astype(np.float32) - np.asarray(mean, np.float32)[:, None, None]
        got = A.normalize_chw(img, mean)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, expected)


def _exif_rotated(img: np.ndarray, orientation: int) -> bytes:
    data = cv2.imencode(".jpg", img)[1].tobytes()
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
            + struct.pack("<HHII", 0x0112, 3, 1, orientation) + struct.pack("<I", 0))
    app1 = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


def test_decoding_the_bytes_gives_imread_pixels(tmp_path):
    img, *_ = scene(2, 41, 67, 0)
    paths = []
    for ext in (".jpg", ".png", ".bmp"):
        paths.append(tmp_path / f"c{ext}")
        cv2.imwrite(str(paths[-1]), img)
    paths.append(tmp_path / "g.jpg")
    cv2.imwrite(str(paths[-1]), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    for orientation in (2, 3, 6, 8):           # EXIF orientations: imread applies them, so must we
        paths.append(tmp_path / f"r{orientation}.jpg")
        paths[-1].write_bytes(_exif_rotated(img, orientation))
    for path in paths:
        expected = cv2.imread(str(path), cv2.IMREAD_COLOR)
        for got in (read_full(path), read_image(path), decode_full(read_bytes(path), path)):
            assert got.dtype == np.uint8 and got.ndim == 3
            np.testing.assert_array_equal(got, expected)
    # the reduced decode and the header's size read the same from the bytes as from the file
    big = np.tile(img, (5, 5, 1))
    cv2.imwrite(str(tmp_path / "big.jpg"), big)
    data = read_bytes(tmp_path / "big.jpg")
    assert image_size(data) == image_size(tmp_path / "big.jpg") == big.shape[1::-1]
    for factor in (2, 4, 8):
        np.testing.assert_array_equal(decode_reduced(data, factor, *big.shape[:2]),
                                      decode_reduced(tmp_path / "big.jpg", factor, *big.shape[:2]))
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    for bad in (tmp_path / "junk.jpg", tmp_path / "missing.jpg", tmp_path):
        with pytest.raises(OSError, match="cannot read image"):
            read_full(bad)


def test_dataset_goes_through_load_with_the_same_samples(files, monkeypatch):
    anns = [ImageAnnotation(path, boxes, lms, labels > 0) for path, boxes, lms, labels in files]
    transform = A.TrainTransform(96)
    ds = WiderFaceTrainDataset(anns, transform, seed=11)
    calls = []
    real_load = A.TrainTransform.load
    monkeypatch.setattr(A.TrainTransform, "load", lambda self, *a: calls.append(a[0]) or real_load(self, *a))
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        for i, ann in enumerate(anns):
            image, targets = ds[i]
            expected = frozen_transform(cv2.imread(ann.path), ann.boxes, ann.landmarks, ann.labels,
                                        sample_rng(11, epoch, i), 96)
            assert torch.equal(image, torch.from_numpy(expected[0]))
            assert torch.equal(targets, torch.from_numpy(expected[1]))
    assert calls == [a.path for a in anns] * 2
    # a plain callable still gets the decoded image
    seen = []

    def plain(image, boxes, landmarks, labels, rng):
        seen.append(image.shape)
        return np.zeros((3, 8, 8), np.float32), np.zeros((0, 15), np.float32)

    WiderFaceTrainDataset(anns[:1], plain)[0]
    assert seen == [cv2.imread(anns[0].path).shape]


def test_benchmark_stages_are_the_real_pipelines(tmp_path):
    """benchmarks/bench_data.py times both pipelines stage by stage; those step-by-step copies must
    stay the pipelines they time (stage_table raises when an output differs)."""
    import importlib.util
    import sys
    from pathlib import Path

    bench_dir = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench_dir))
    try:
        spec = importlib.util.spec_from_file_location("bench_data", bench_dir / "bench_data.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        samples = bench.make_inputs(tmp_path, 8, height=192, width=256)
        ref, lib = bench.stage_table(samples, 64, repeats=2)
    finally:
        sys.path.remove(str(bench_dir))
    assert set(ref) == set(lib) == set(bench.STAGES)
    assert all(v >= 0 for v in (*ref.values(), *lib.values()))
