"""The Detector's parts: InferenceTransform, PostProcessor, shared use by threads, flip TTA convention."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from retinaface import Detector, load_model
from retinaface.conventions import BGR_MEAN, MIRROR_ORDER, mirror_x
from retinaface.inference.postprocess import PostProcessor
from retinaface.inference.transform import InferenceTransform
from retinaface.inference.tta import TestTimeAugmentation, unflip_detections


@pytest.fixture(scope="module")
def model(legacy_checkpoint):
    return load_model(legacy_checkpoint)


def test_detector_from_parts_equals_keyword_settings(model, fixture_io):
    image = fixture_io["image_bgr"]
    by_keywords = Detector(model, conf_threshold=0.3, post_nms_topk=20, target_size=200, max_size=260)
    by_parts = Detector(model, InferenceTransform(target_size=200, max_size=260, channels_last=True),
                        PostProcessor(conf_threshold=0.3, post_nms_topk=20))
    np.testing.assert_array_equal(by_parts.detect(image), by_keywords.detect(image))
    assert (by_parts.conf_threshold, by_parts.post_nms_topk, by_parts.target_size) == (0.3, 20, 200)
    # the keyword arguments override the given part's fields, the part itself is left alone
    part = PostProcessor(conf_threshold=0.3)
    assert Detector(model, postprocess=part, conf_threshold=0.6).conf_threshold == 0.6
    assert part.conf_threshold == 0.3


def test_transform_batches_with_the_mean_and_pads_with_zero():
    a = np.full((40, 64, 3), 200, np.uint8)
    b = np.zeros((32, 48, 3), np.uint8)
    batch, scales = InferenceTransform()([a, b])
    assert tuple(batch.shape) == (2, 3, 40, 64) and scales == [1.0, 1.0]
    torch.testing.assert_close(batch[0, :, 0, 0], 200 - torch.tensor(BGR_MEAN))
    torch.testing.assert_close(batch[1, :, 0, 0], -torch.tensor(BGR_MEAN))
    assert float(batch[1, :, 32:].abs().max()) == 0 and float(batch[1, :, :, 48:].abs().max()) == 0


def test_transform_letterboxes_into_a_fixed_size():
    transform = InferenceTransform(fixed_size=(64, 96))
    big = np.full((128, 128, 3), 50, np.uint8)
    batch, scales = transform([big])
    assert tuple(batch.shape) == (1, 3, 64, 96) and scales == [0.5]
    assert float(batch[0, :, :, 64:].abs().max()) == 0  # padded right of the 64x64 resized image
    small = np.full((20, 30, 3), 50, np.uint8)  # fits: padded, not upscaled
    batch, scales = transform([small])
    assert tuple(batch.shape) == (1, 3, 64, 96) and scales == [1.0]


def test_postprocessor_maps_back_before_nms():
    # one prior at the centre of a 64x64 input; two candidates: scale 2 maps boxes to half size
    priors = torch.tensor([[0.5, 0.5, 0.25, 0.25], [0.5, 0.5, 0.25, 0.25]])
    loc = torch.zeros(2, 4)
    conf = torch.tensor([[0.1, 0.9], [0.2, 0.8]])
    landms = torch.zeros(2, 10)
    dets = PostProcessor()(loc, conf, landms, priors, (64, 64), scale=2.0)
    assert dets.shape == (1, 15)  # identical boxes: NMS keeps the best
    torch.testing.assert_close(dets[0, :5], torch.tensor([12.0, 12.0, 20.0, 20.0, 0.9]))


def test_tta_does_not_mutate_the_detector(model, fixture_io):
    detector = Detector(model, conf_threshold=0.5, target_size=240, max_size=400)
    before = (detector.transform, detector.postprocess)
    TestTimeAugmentation(detector, sizes=[160, 240], flip=True).detect(fixture_io["image_bgr"])
    assert (detector.transform, detector.postprocess) == before
    assert detector.transform is before[0] and detector.postprocess is before[1]


def test_one_detector_with_tta_shared_by_four_threads_gives_the_single_threaded_results(model, fixture_io):
    image = fixture_io["image_bgr"]
    images = [image, np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(image[:200, :280]),
              np.ascontiguousarray(image[::-1])]
    detector = Detector(model, conf_threshold=0.3)
    tta = TestTimeAugmentation(detector, sizes=[120, 240], flip=True)
    expected = {i: tta.detect(img) for i, img in enumerate(images)}
    expected_plain = {i: detector.detect(img) for i, img in enumerate(images)}
    results, errors = {}, []
    barrier = threading.Barrier(4)

    def work(worker: int) -> None:
        try:
            barrier.wait()
            for step in range(3):  # each thread walks the images in its own order, TTA and plain
                i = (worker + step) % len(images)
                results[(worker, step, "tta")] = (i, tta.detect(images[i]))
                results[(worker, step, "plain")] = (i, detector.detect(images[i]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 4 * 3 * 2
    for (_, _, kind), (i, dets) in results.items():
        np.testing.assert_array_equal(dets, (expected if kind == "tta" else expected_plain)[i])


def test_unflip_uses_the_training_mirror_convention():
    dets = np.zeros((1, 15), np.float32)
    dets[0, :5] = [10, 20, 30, 40, 0.9]
    dets[0, 5:] = [12, 25, 28, 25, 20, 30, 14, 36, 26, 36]  # left eye, right eye, nose, mouth l, r
    back = unflip_detections(dets, image_width=100)
    np.testing.assert_array_equal(back[0, :5], np.float32([mirror_x(30, 100), 20, mirror_x(10, 100), 40, 0.9]))
    points = dets[0, 5:].reshape(5, 2)[list(MIRROR_ORDER)]
    np.testing.assert_array_equal(back[0, 5::2], mirror_x(points[:, 0], 100))
    np.testing.assert_array_equal(back[0, 6::2], points[:, 1])
    np.testing.assert_array_equal(unflip_detections(back, 100), dets)  # its own inverse


def reference_postprocess(loc, conf, landms, priors, size, scale, conf_threshold=0.02, nms_threshold=0.4,
                          pre_nms_topk=5000, post_nms_topk=750, variances=(0.1, 0.2)):
    """The recipe's demo post-processing written out with torch ops, in float64 (the spec's
    arithmetic, not the library's): threshold, sort (equal scores: lower prior first), top-k,
    decode, divide by the scale, NMS with the +1 pixel convention, top-k."""
    from torchvision.ops import nms

    loc, conf, landms, priors = (t.double() for t in (loc, conf, landms, priors))
    scores = conf[:, 1]
    idx = torch.nonzero(scores > conf_threshold).squeeze(1)
    order = torch.argsort(scores[idx], descending=True, stable=True)[:pre_nms_topk]
    idx = idx[order]
    p, d, lm = priors[idx], loc[idx], landms[idx]
    h, w = size
    centre = p[:, :2] + d[:, :2] * variances[0] * p[:, 2:]
    wh = p[:, 2:] * torch.exp(d[:, 2:] * variances[1])
    boxes = torch.cat([centre - wh / 2, centre + wh / 2], 1) * torch.tensor([w, h, w, h]) / torch.tensor(scale * 2)
    points = (p[:, None, :2] + lm.view(-1, 5, 2) * variances[0] * p[:, None, 2:]) * torch.tensor([w, h])
    points = (points / torch.tensor(scale)).reshape(-1, 10)
    shifted = torch.cat([boxes[:, :2], boxes[:, 2:] + 1], 1)
    keep = nms(shifted, scores[idx], nms_threshold)[:post_nms_topk]
    return torch.cat([boxes, scores[idx][:, None], points], 1)[keep]


@pytest.mark.parametrize("seed", range(6))
def test_postprocessor_equals_the_recipe_written_out(seed):
    """Random heads over real priors, with clusters of overlapping candidates, exactly equal scores
    (ties) and an anisotropic resize scale: the same rows in the same order as the reference, to
    float32 rounding."""
    from retinaface.priors import generate_priors

    rng = np.random.default_rng(seed)
    h, w = (96, 128) if seed % 2 else (120, 90)
    priors = generate_priors(h, w)
    n = len(priors)
    loc = torch.from_numpy(rng.normal(0, 0.6, (n, 4)).astype(np.float32))
    landms = torch.from_numpy(rng.normal(0, 1.0, (n, 10)).astype(np.float32))
    scores = rng.uniform(0, 0.05, n).astype(np.float32)
    hot = rng.choice(n, 200, replace=False)
    scores[hot] = rng.choice([0.5, 0.75, 0.9], 200) if seed % 3 == 0 else rng.uniform(0.02, 0.99, 200)  # ties
    scores[hot[:5]] = 0.02                                   # on the threshold: not candidates
    conf = torch.from_numpy(np.stack([1 - scores, scores], 1))
    scale = (0.5, 0.75) if seed % 2 else 2.0
    scale_pair = scale if isinstance(scale, tuple) else (scale, scale)
    for settings in (dict(), dict(pre_nms_topk=50, post_nms_topk=7), dict(nms_threshold=0.3, conf_threshold=0.3)):
        got = PostProcessor(**settings)(loc, conf, landms, priors, (h, w), scale)
        want = reference_postprocess(loc, conf, landms, priors, (h, w), scale_pair, **settings).float()
        assert got.dtype == torch.float32 and got.shape == want.shape, settings
        assert torch.equal(got[:, 4], want[:, 4])                       # the same rows, in the same order
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)
    # what a GPU's outputs go through first (only the candidates are copied): the same detections
    post = PostProcessor()
    assert torch.equal(post(*post.candidates_only(loc, conf, landms, priors), (h, w), scale),
                       post(loc, conf, landms, priors, (h, w), scale))
    empty = PostProcessor(conf_threshold=0.99)(loc, conf, landms, priors, (h, w), 1.0)
    assert empty.shape == (0, 15) and empty.dtype == torch.float32
