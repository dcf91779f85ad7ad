"""InferenceTransform's CPU fill (``batch[i] = image - mean``) on every input path: the compiled
kernel and the OpenCV fallback, NCHW and NHWC batches, on the shapes where OpenCV's array/scalar
reading is ambiguous (1x1, 1xN, Nx1), on non-contiguous views and odd sizes, each against the
subtraction written out in NumPy float32."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from retinaface.inference import transform
from retinaface.inference.transform import InferenceTransform

SIZES = [(1, 1), (1, 7), (7, 1), (1, 2), (2, 1), (3, 5), (37, 53), (61, 17)]
MEANS = [(104.0, 117.0, 123.0), (104.3, 116.779, 123.675)]


def _images(rng: np.random.Generator) -> list:
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
    images.append(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)[::2, 3:])  # a strided view
    images.append(rng.integers(0, 256, (2, 3, 3), dtype=np.uint8)[:1, :1])    # a 1x1 view
    images.append(np.ascontiguousarray(rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)[:, :, ::-1])[:, :1])
    return images


def _expected(img: np.ndarray, mean) -> np.ndarray:
    """``(3, h, w)``: the pixels minus the mean in float32, as NumPy computes it."""
    return (img.astype(np.float32) - np.asarray(mean, np.float32)).transpose(2, 0, 1)


def _paths():
    yield "fallback"
    if transform._kernels is not None:
        yield "compiled"


@pytest.mark.parametrize("path", list(_paths()))
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mean", MEANS)
def test_every_fill_path_gives_the_numpy_subtraction_on_awkward_shapes(path, channels_last, mean, monkeypatch):
    if path == "fallback":
        monkeypatch.setattr(transform, "_kernels", None)
    prepare = InferenceTransform(mean=mean, channels_last=channels_last)
    images = _images(np.random.default_rng(7))
    for img in images:  # alone: no padding
        got = prepare.batch([img]).numpy()[0]
        np.testing.assert_array_equal(got, _expected(img, mean), err_msg=f"{path} {img.shape}")
    batch = prepare.batch(images).numpy()  # together: padded to the largest height and width
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        np.testing.assert_array_equal(batch[i, :, :h, :w], _expected(img, mean), err_msg=f"{path} {img.shape}")
        assert not batch[i, :, h:, :].any() and not batch[i, :, :, w:].any()  # zero padding


_OPENCV_SUBTRACT = cv2.subtract


def _subtract_reading_1x1_as_a_scalar(src, src2, dst=None, mask=None, dtype=-1):
    """cv2.subtract as OpenCV 5.1 behaves: a 1x1 array is read as a scalar, a new (4, 1) array
    is returned and ``dst`` is left as it was (the bug behind zero-filled 1x1 images)."""
    if isinstance(src, np.ndarray) and src.size == 1:
        return np.array([[float(src.ravel()[0]) - float(np.ravel(src2)[0])], [0.0], [0.0], [0.0]])
    return _OPENCV_SUBTRACT(src, src2, dst=dst, mask=mask, dtype=dtype)


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_fallback_fills_a_1x1_image_when_opencv_reads_it_as_a_scalar(channels_last, monkeypatch):
    """Pins the fix independently of the installed OpenCV: the old fill ignored subtract's return
    value and left zeros in the batch for a 1x1 image."""
    monkeypatch.setattr(transform, "_kernels", None)
    monkeypatch.setattr(transform.cv2, "subtract", _subtract_reading_1x1_as_a_scalar)
    pixel = np.array([[[200, 10, 150]]], dtype=np.uint8)
    mean = (104.0, 117.0, 123.0)
    got = InferenceTransform(mean=mean, channels_last=channels_last).batch([pixel]).numpy()[0]
    np.testing.assert_array_equal(got[:, 0, 0], np.array([96.0, -107.0, 27.0], np.float32))
