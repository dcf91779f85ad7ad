"""Region decoding of training JPEGs (retinaface/data/_jpeg_region.c via fast_decode.decode_region):
the same pixels as cv2.imdecode cropped, for every chroma layout and awkward rectangle; files it
must not take go to OpenCV; TrainTransform.load gives the same samples with it as without it."""
from __future__ import annotations

import struct
import warnings
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from retinaface.data import augment as A
from retinaface.data import fast_decode
from retinaface.data.fast_decode import decode_region, jpeg_info, region_decodable, region_decoder_available

pytestmark = pytest.mark.skipif(fast_decode._jpeg_region is None,
                                reason="the region decoder was not built (no C compiler or libjpeg-turbo headers)")

SAMPLINGS = {"420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
             "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, "411": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411,
             "440": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440}


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Sharp colour edges and smooth areas: chroma upsampling differences would show on both."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 2.0)
    for _ in range(12):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(3, 60)), y + int(rng.integers(3, 60))),
                      tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
    return img


def encode(img: np.ndarray, *params: int) -> bytes:
    ok, data = cv2.imencode(".jpg", img, list(params))
    assert ok
    return data.tobytes()


def test_the_decoder_is_built_and_agrees_with_opencv_here():
    assert region_decoder_available()


@pytest.mark.parametrize("sampling", list(SAMPLINGS))
@pytest.mark.parametrize("shape", [(768, 1024), (481, 650), (97, 131), (33, 17)])
def test_region_equals_the_full_decode_cropped(sampling, shape):
    h, w = shape
    img = textured(h, w, seed=h + w)
    rng = np.random.default_rng(w)
    variants = [encode(img, cv2.IMWRITE_JPEG_QUALITY, 92, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, SAMPLINGS[sampling]),
                encode(img, cv2.IMWRITE_JPEG_QUALITY, 70, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, SAMPLINGS[sampling],
                       cv2.IMWRITE_JPEG_OPTIMIZE, 1, cv2.IMWRITE_JPEG_RST_INTERVAL, 3)]
    for data in variants:
        full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        rects = [(0, 0, w, h), (0, 0, 1, 1), (w - 1, h - 1, 1, 1), (0, h - 1, w, 1), (w - 1, 0, 1, h)]
        rects += [(x, y, min(16, w - x), min(16, h - y)) for x in (0, 16, 32) if x < w for y in (0, 8, 16) if y < h]
        for _ in range(25):
            side = int(rng.integers(1, min(h, w) + 1))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            width = side if rng.random() < 0.6 else int(rng.integers(1, w - x + 1))
            rects.append((x, y, width, side))
        for x, y, rw, rh in rects:
            got = decode_region(data, x, y, rw, rh)
            assert got is not None and got.shape == (rh, rw, 3) and got.dtype == np.uint8
            np.testing.assert_array_equal(got, full[y:y + rh, x:x + rw], err_msg=f"{sampling} {shape} {(x, y, rw, rh)}")


def test_region_is_a_writable_view_of_longer_rows_like_a_slice():
    img = textured(200, 300)
    data = encode(img)
    got = decode_region(data, 40, 30, 100, 100)
    assert got.flags.writeable and not got.flags.c_contiguous   # as full[30:130, 40:140] is
    got[:] = 0                                                    # the caller may work in place


def test_bad_rectangles_and_broken_files_give_none():
    img = textured(64, 80)
    data = encode(img)
    for rect in ((-1, 0, 10, 10), (0, -1, 10, 10), (75, 0, 10, 10), (0, 60, 10, 10), (0, 0, 0, 5), (0, 0, 5, 0)):
        assert decode_region(data, *rect) is None
    assert decode_region(b"not a jpeg", 0, 0, 4, 4) is None
    assert decode_region(data[:len(data) // 2], 0, 40, 80, 20) is None    # truncated: libjpeg warns
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2: len(corrupt) // 2 + 40] = b"\xff\xd9" * 20  # EOI markers in the scan
    assert decode_region(bytes(corrupt), 0, 50, 80, 14) is None


def _exif(data: bytes, orientation: int) -> bytes:
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
            + struct.pack("<HHII", 0x0112, 3, 1, orientation) + struct.pack("<I", 0))
    app1 = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


def test_only_plain_baseline_colour_jpegs_qualify():
    img = textured(64, 80)
    plain = encode(img)
    assert region_decodable(jpeg_info(plain))
    assert region_decodable(jpeg_info(_exif(plain, 1)))            # "no rotation" is fine
    assert not region_decodable(jpeg_info(_exif(plain, 6)))        # imdecode rotates it
    assert not region_decodable(jpeg_info(encode(img, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)))
    assert not region_decodable(jpeg_info(encode(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))))
    assert not region_decodable(jpeg_info(cv2.imencode(".png", img)[1].tobytes()))
    assert not region_decodable(None)


def test_a_decoder_that_disagrees_with_opencv_is_switched_off(monkeypatch):
    real = fast_decode._jpeg_region.decode_region

    class Shifted:  # a decoder whose pixels are one grey level off
        @staticmethod
        def decode_region(*args):
            buffer, row_width, x_offset = real(*args)
            return bytearray((b + 1) & 255 for b in buffer), row_width, x_offset

    monkeypatch.setattr(fast_decode, "_jpeg_region", Shifted)
    fast_decode.region_decoder_available.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="disagrees with OpenCV"):
            assert not region_decoder_available()
        assert decode_region(encode(textured(40, 40)), 0, 0, 8, 8) is None
        assert not region_decodable(jpeg_info(encode(textured(40, 40))))
    finally:
        fast_decode.region_decoder_available.cache_clear()


def test_threads_decode_in_parallel_with_the_same_pixels():
    data = encode(textured(480, 640))
    rects = [(int(x), int(y), 200, 150) for x, y in np.random.default_rng(3).integers(0, 300, (32, 2))]
    expected = [decode_region(data, *r) for r in rects]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda r: decode_region(data, *r), rects))
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def scene_file(tmp_path, h=360, w=480, faces=8, seed=0):
    rng = np.random.default_rng(seed)
    img = textured(h, w, seed)
    wh = rng.uniform(10, 60, (faces, 2))
    xy = rng.uniform(0, 1, (faces, 2)) * (np.array([w, h]) - wh)
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    lms = (xy[:, None] + rng.uniform(0, 1, (faces, 5, 2)) * wh[:, None]).reshape(faces, 10).astype(np.float32)
    labels = np.ones(faces, np.float32)
    path = tmp_path / f"scene{seed}.jpg"
    path.write_bytes(encode(img, cv2.IMWRITE_JPEG_QUALITY, 90))
    return str(path), boxes, lms, labels


def test_load_takes_the_region_path_with_identical_samples(tmp_path, monkeypatch):
    path, boxes, lms, labels = scene_file(tmp_path)
    image = cv2.imread(path)
    region_calls, full_calls = [], []
    real_region, real_full = A.decode_region, A.decode_full
    monkeypatch.setattr(A, "decode_region", lambda *a: region_calls.append(a[1:]) or real_region(*a))
    monkeypatch.setattr(A, "decode_full", lambda *a: full_calls.append(a[1]) or real_full(*a))
    with_region, without = A.TrainTransform(160), A.TrainTransform(160, region_decode=False)
    for seed in range(40):
        got = with_region.load(path, boxes, lms, labels, np.random.default_rng(seed))
        for other in (without.load(path, boxes, lms, labels, np.random.default_rng(seed)),
                      with_region(image, boxes, lms, labels, np.random.default_rng(seed))):
            np.testing.assert_array_equal(got[0], other[0])
            np.testing.assert_array_equal(got[1], other[1])
    assert len(region_calls) == 40 and len(full_calls) == 40    # every sample cropped; only `without` decoded whole
    assert len({rect for rect in region_calls}) > 30            # different crops


def test_load_falls_back_to_opencv_for_files_the_region_path_cannot_take(tmp_path):
    path, boxes, lms, labels = scene_file(tmp_path)
    data = open(path, "rb").read()
    t = A.TrainTransform(96)
    variants = {"truncated.jpg": data[: len(data) * 2 // 3], "rotated.jpg": _exif(data, 3),
                "progressive.jpg": encode(cv2.imread(path), cv2.IMWRITE_JPEG_PROGRESSIVE, 1)}
    for name, payload in variants.items():
        (tmp_path / name).write_bytes(payload)
        image = cv2.imread(str(tmp_path / name))
        for seed in range(6):
            got = t.load(str(tmp_path / name), boxes, lms, labels, np.random.default_rng(seed))
            want = t(image, boxes, lms, labels, np.random.default_rng(seed))
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])


def test_no_warning_from_the_self_check_here():
    fast_decode.region_decoder_available.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert region_decoder_available()


def test_header_sampling_factors_and_untested_layouts_decode_whole():
    img = textured(64, 80)
    expected = {"444": ((1, 1), (1, 1), (1, 1)), "422": ((2, 1), (1, 1), (1, 1)), "440": ((1, 2), (1, 1), (1, 1)),
                "420": ((2, 2), (1, 1), (1, 1)), "411": ((4, 1), (1, 1), (1, 1))}
    for name, factors in expected.items():
        info = jpeg_info(encode(img, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, SAMPLINGS[name]))
        assert info.sampling == factors and region_decodable(info), name
    data = bytearray(encode(img))
    sof = data.index(b"\xff\xc0")
    data[sof + 11] = 0x31    # luma 3x1: a layout the tests never ran
    assert jpeg_info(bytes(data)).sampling[0] == (3, 1)
    assert not region_decodable(jpeg_info(bytes(data)))
