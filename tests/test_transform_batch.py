"""InferenceTransform.batch: the OpenCV fill equals the plain definition, and reused buffers leak nothing."""
import numpy as np
import pytest
import torch

from retinaface import create_model
from retinaface.inference.detector import Detector
from retinaface.inference.transform import InferenceTransform


def _reference(images, mean=(104.0, 117.0, 123.0)):
    """images - mean in float32, CHW, zero-padded bottom-right to the largest size."""
    height = max(i.shape[0] for i in images)
    width = max(i.shape[1] for i in images)
    out = torch.zeros(len(images), 3, height, width)
    for k, img in enumerate(images):
        pixels = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1) - torch.tensor(mean).view(3, 1, 1)
        out[k, :, :img.shape[0], :img.shape[1]] = pixels
    return out


@pytest.mark.parametrize("channels_last", [False, True])
def test_fill_matches_definition_for_uint8_float_and_padded_batches(channels_last):
    rng = np.random.default_rng(3)
    transform = InferenceTransform(channels_last=channels_last, mean=(100.5, 0.0, 255.0))
    uint8 = [rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), rng.integers(0, 256, (50, 41, 3), dtype=np.uint8)]
    floats = [(rng.random((33, 47, 3)) * 255).astype(np.float32)]  # what the resize step hands over
    for images in (uint8, floats, uint8[:1], [uint8[0][::-1, ::2]]):  # the last one is a strided view
        batch = transform.batch(images)
        assert batch.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        assert torch.equal(batch, _reference(images, transform.mean))


@pytest.mark.parametrize("channels_last", [False, True])
def test_reused_buffer_is_written_over_and_padding_is_cleared(channels_last):
    rng = np.random.default_rng(4)
    transform = InferenceTransform(channels_last=channels_last)
    full = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(2)]
    first = transform.batch(full)
    smaller = [full[0], rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)]
    second = transform.batch(smaller, out=first)
    assert second.data_ptr() == first.data_ptr()  # the buffer was reused ...
    assert torch.equal(second, _reference(smaller))  # ... and the old pixels under the padding are gone
    other_shape = transform.batch(full[:1], out=second)
    assert other_shape.data_ptr() != second.data_ptr() and torch.equal(other_shape, _reference(full[:1]))


def test_detector_reuse_gives_the_same_detections_as_a_fresh_detector():
    torch.manual_seed(0)
    model = create_model("mobilenet0.25").eval()
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)]
    detector = Detector(model, conf_threshold=0.3)
    for _ in range(2):  # the second round runs on buffers left by the first
        for image in images + images[::-1]:
            fresh = Detector(model, conf_threshold=0.3).detect(image)
            np.testing.assert_array_equal(detector.detect(image), fresh)
        batched = detector.detect_batch(images)  # padded batch of two, after single-image buffers
        for got, want in zip(batched, Detector(model, conf_threshold=0.3).detect_batch(images)):
            np.testing.assert_array_equal(got, want)


def test_threads_with_different_sizes_fill_correct_batches():
    """The per-thread scratch planes of the NCHW fill: threads alternating sizes never see another's."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    transform = InferenceTransform(channels_last=False)
    images = [rng.integers(0, 256, (20 + 7 * (k % 3), 30 + 5 * (k % 4), 3), dtype=np.uint8) for k in range(48)]

    def check(img):
        return torch.equal(transform.batch([img]), _reference([img], transform.mean))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(check, images * 4))
