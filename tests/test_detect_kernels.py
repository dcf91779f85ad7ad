"""The compiled detect-path kernels (retinaface/_detect_kernels.c) against the paths they replace
(OpenCV, NumPy, torchvision.ops.nms) and against greedy NMS written out in Python: the same batches,
indices and detections bit for bit, on adversarial inputs (odd sizes, padding, fractional means,
ties, IoU at the threshold, NaN, degenerate and inverted boxes, overflowing sizes, resize scales)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retinaface.inference import postprocess, transform
from retinaface.inference.postprocess import PostProcessor, nms_in_order, nms_keep, top_candidates
from retinaface.inference.transform import InferenceTransform

KERNELS = postprocess._kernels
needs_kernels = pytest.mark.skipif(KERNELS is None, reason="the post-processing kernels are not built here")


@pytest.fixture
def without_kernels(monkeypatch):
    """Run the paths without the kernels (OpenCV, NumPy, torchvision) inside the block."""
    def run(fn, *args, **kwargs):
        with monkeypatch.context() as patch:
            patch.setattr(postprocess, "_kernels", None)
            patch.setattr(transform, "_kernels", None)
            return fn(*args, **kwargs)
    return run


@needs_kernels
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mean", [(104.0, 117.0, 123.0), (104.3, 116.779, 123.675), (0.0, 0.0, 0.0)])
def test_compiled_fill_gives_the_opencv_batch_bit_for_bit(mean, channels_last, without_kernels):
    rng = np.random.default_rng(2)
    sizes = [(240, 320), (37, 53), (1, 1), (61, 17)]
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    images.append(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)[::2, 5:])  # a view
    assert not images[-1].flags.c_contiguous
    prepare = InferenceTransform(mean=mean, channels_last=channels_last)
    for batch_images in ([images[0]], [images[1]], images):  # one image, an odd size, a padded batch
        compiled = prepare.batch(batch_images).numpy()
        fallback = without_kernels(prepare.batch, batch_images).numpy()
        np.testing.assert_array_equal(compiled.view(np.int32), fallback.view(np.int32))
        for i, img in enumerate(batch_images):  # float32 arithmetic, NumPy's
            h, w = img.shape[:2]
            want = (img.astype(np.float32) - np.float32(mean)).transpose(2, 0, 1)
            np.testing.assert_array_equal(compiled[i, :, :h, :w], want)
            assert not compiled[i, :, h:, :].any() and not compiled[i, :, :, w:].any()  # zero padding


def greedy_reference(boxes: np.ndarray, threshold: float, plus_one: bool) -> list:
    """Greedy NMS visiting the rows in order, one pair at a time, in float32 as torchvision rounds
    (the IoU compared with the threshold as a double)."""
    f = np.float32
    pad = f(1) if plus_one else f(0)
    x1, y1 = boxes[:, 0].astype(f), boxes[:, 1].astype(f)
    x2, y2 = boxes[:, 2].astype(f) + pad, boxes[:, 3].astype(f) + pad
    area = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    with np.errstate(all="ignore"):
        for i in range(len(boxes)):
            if suppressed[i]:
                continue
            keep.append(i)
            for j in range(i + 1, len(boxes)):
                w = max(f(0), min(x2[i], x2[j]) - max(x1[i], x1[j]))
                h = max(f(0), min(y2[i], y2[j]) - max(y1[i], y1[j]))
                inter = f(w * h)
                if float(f(inter / f(area[i] + area[j] - inter))) > threshold:
                    suppressed[j] = True
    return keep


def box_sets():
    rng = np.random.default_rng(0)
    scattered = rng.uniform(0, 600, (300, 2)).astype(np.float32)
    yield "scattered", np.concatenate([scattered, scattered + rng.uniform(4, 60, (300, 2))], 1).astype(np.float32)
    centres = rng.uniform(50, 550, (12, 2))
    jitter = centres[rng.integers(0, 12, 400)] + rng.normal(0, 3, (400, 2))
    size = rng.uniform(20, 40, (400, 1))
    yield "clusters", np.concatenate([jitter - size / 2, jitter + size / 2], 1).astype(np.float32)
    # IoU exactly 0.4 in float32 arithmetic without the +1 (areas 7 and 7, intersection 4) and
    # exactly 0.5; the 0.4 case rounds to a float above the double 0.4, so it suppresses
    yield "at the threshold", np.float32([[0, 0, 7, 1], [3, 0, 10, 1], [20, 0, 23, 1], [21, 0, 24, 1],
                                          [0, 5, 2, 6], [1, 5, 3, 6]])
    yield "identical and degenerate", np.float32([[5, 5, 20, 20]] * 4 + [[3, 3, 3, 3], [3, 3, 3, 3],
                                                  [10, 10, 4, 4], [0, 0, -1, -1], [5, 5, 20, 20]])
    yield "NaN and inf", np.float32([[np.nan, 0, 10, 10], [0, 0, 10, 10], [0, 0, np.inf, 10],
                                     [0, 0, 10, 10], [-np.inf, 0, np.inf, np.inf], [1, 1, 9, 9]])
    yield "empty", np.zeros((0, 4), np.float32)
    yield "one", np.float32([[1, 2, 3, 4]])
    many = rng.uniform(0, 2000, (2500, 2))
    yield "2500 boxes", np.concatenate([many, many + rng.uniform(10, 300, (2500, 2))], 1).astype(np.float32)


@needs_kernels
@pytest.mark.parametrize("threshold", [0.4, 0.5, 0.3, 1.0, 0.05])
@pytest.mark.parametrize("plus_one", [True, False])
def test_compiled_nms_keeps_what_torchvision_and_the_written_out_loop_keep(threshold, plus_one, without_kernels):
    for name, boxes in box_sets():
        # as detection rows (15 columns), the way the post-processor hands them over
        rows = np.concatenate([boxes, np.zeros((len(boxes), 11), np.float32)], 1)
        compiled = nms_in_order(rows, threshold, plus_one)
        fallback = without_kernels(nms_in_order, rows, threshold, plus_one)
        assert compiled.dtype == np.int64 and fallback.dtype == np.int64
        assert compiled.tolist() == fallback.tolist(), name
        if len(boxes) <= 400:
            assert compiled.tolist() == greedy_reference(boxes, threshold, plus_one), name


def test_the_exact_threshold_case_is_decided_as_torchvision_decides_it():
    from torchvision.ops import nms

    boxes = torch.tensor([[0.0, 0.0, 7.0, 1.0], [3.0, 0.0, 10.0, 1.0]])  # IoU 4 / 10 in float32
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.4).tolist() == [0]
    assert nms_in_order(boxes.numpy(), 0.4, plus_one=False).tolist() == [0]
    assert nms_in_order(boxes.numpy(), 0.41, plus_one=False).tolist() == [0, 1]


def test_nms_keep_visits_equal_scores_in_index_order_on_both_paths(without_kernels):
    """Equal scores are visited lower index first (which twin of a pair survives depends on it),
    with or without the kernels; torch.sort itself does not keep equal values in order."""
    rng = np.random.default_rng(3)
    corners = np.stack(np.meshgrid(np.arange(20), np.arange(15)), -1).reshape(-1, 2).astype(np.float32) * 100
    # box k and box k + 300 are twins one pixel apart (IoU ~0.8), all with the same score; other
    # boxes do not overlap. Shuffled, the twin at the lower index must win each pair.
    boxes = np.concatenate([np.concatenate([corners, corners + 20], 1), np.concatenate([corners + 1, corners + 21], 1)])
    order = rng.permutation(len(boxes))
    boxes, scores = boxes[order], np.full(len(boxes), 0.75, np.float32)
    position = np.argsort(order)  # where box k went
    expected = sorted(min(int(position[k]), int(position[k + 300])) for k in range(300))
    for keep in (nms_keep(boxes, scores, 0.4), without_kernels(nms_keep, boxes, scores, 0.4)):
        assert keep.tolist() == expected
    tensor_keep = nms_keep(torch.from_numpy(boxes), torch.from_numpy(scores), 0.4)
    assert isinstance(tensor_keep, torch.Tensor) and tensor_keep.tolist() == expected


def score_sets():
    rng = np.random.default_rng(1)
    quantised = (rng.integers(0, 40, (12600, 2)) / 40).astype(np.float32)  # thousands of ties
    yield "ties", quantised
    smooth = rng.uniform(0, 1, (4200, 2)).astype(np.float32) ** 8
    yield "smooth", smooth
    odd = np.float32([[0, 0.02], [0, np.float32(0.02)], [0, np.nextafter(np.float32(0.02), np.float32(1))],
                      [0, np.nan], [0, -0.0], [0, 0.0], [0, 1.0], [0, np.inf], [0, 1.0]])
    yield "threshold, NaN, zeros", odd
    yield "no priors", np.zeros((0, 2), np.float32)


@needs_kernels
@pytest.mark.parametrize("threshold", [0.02, 0.0, 0.5, 0.999])
@pytest.mark.parametrize("limit", [None, 1, 7, 5000])
def test_compiled_candidate_selection_matches_numpy(threshold, limit, without_kernels):
    for name, conf in score_sets():
        compiled = top_candidates(conf, threshold, limit)
        fallback = without_kernels(top_candidates, conf, threshold, limit)
        assert compiled.tolist() == fallback.tolist(), name
        scores = conf[compiled, 1]
        assert (np.diff(scores) <= 0).all() and (scores > np.float32(threshold)).all(), name
        ties = np.diff(scores) == 0
        assert (np.diff(compiled)[ties] > 0).all(), name  # equal scores: lower prior first
        if limit is None:
            assert len(compiled) == int((conf[:, 1] > np.float32(threshold)).sum()), name


def head_outputs(priors_count: int, seed: int, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    loc = (rng.standard_normal((priors_count, 4)) * spread).astype(np.float32)
    landms = (rng.standard_normal((priors_count, 10)) * spread).astype(np.float32)
    conf = rng.uniform(0, 1, (priors_count, 2)).astype(np.float32) ** 6
    priors = np.concatenate([rng.uniform(0, 1, (priors_count, 2)), rng.uniform(0.005, 0.3, (priors_count, 2))],
                            1).astype(np.float32)
    return loc, conf, landms, priors


@needs_kernels
@pytest.mark.parametrize("scale", [1.0, 0.7315, (1.25, 0.6)])
@pytest.mark.parametrize("spread", [1.0, 400.0])  # 400: sizes overflow to inf, corners to -inf / inf / NaN
def test_compiled_decoding_matches_the_box_coder_bit_for_bit(scale, spread, without_kernels):
    post = PostProcessor()
    loc, conf, landms, priors = head_outputs(6000, seed=5, spread=spread)
    candidates = top_candidates(conf, 0.02, 5000)
    with np.errstate(all="ignore"):
        compiled = post.decode(loc, conf, landms, priors, candidates, (480, 640), scale)
        fallback = without_kernels(post.decode, loc, conf, landms, priors, candidates, (480, 640), scale)
    assert compiled.shape == (len(candidates), 15) and compiled.dtype == np.float32
    np.testing.assert_array_equal(compiled.view(np.int32), fallback.view(np.int32))


@needs_kernels
def test_post_processor_gives_the_same_detections_with_and_without_kernels(without_kernels):
    for seed, (size, scale) in enumerate([((480, 640), 1.0), ((240, 320), 0.5), ((736, 1280), (0.9, 1.1))]):
        loc, conf, landms, priors = (torch.from_numpy(a) for a in head_outputs(size[0] * size[1] // 24, seed))
        for post in (PostProcessor(), PostProcessor(plus_one_nms=False, pre_nms_topk=200, post_nms_topk=50)):
            compiled = post(loc, conf, landms, priors, size, scale)
            fallback = without_kernels(post, loc, conf, landms, priors, size, scale)
            assert len(compiled) > 10
            np.testing.assert_array_equal(compiled.numpy().view(np.int32), fallback.numpy().view(np.int32))


@needs_kernels
def test_kernels_refuse_buffers_that_do_not_fit():
    loc, conf, landms, priors = head_outputs(10, seed=0)
    sizes = np.ones((1, 2), np.float32)
    out = np.empty((1, 15), np.float32)
    with pytest.raises(ValueError, match="candidate 0 is prior 10, outside 0..9"):
        KERNELS.decode(loc, conf, landms, priors, np.int64([10]), sizes, 0.1, 640, 480, 1.0, 1.0, out)
    with pytest.raises(ValueError, match="out holds 4 bytes"):
        KERNELS.decode(loc, conf, landms, priors, np.int64([3]), sizes, 0.1, 640, 480, 1.0, 1.0,
                       np.empty(1, np.float32))
    with pytest.raises(ValueError, match="rows holds"):
        KERNELS.nms(np.zeros((2, 4), np.float32), 4, 3, 1.0, 0.4, np.empty(3, np.int64))
    with pytest.raises(ValueError, match="out holds"):
        KERNELS.top_candidates(conf, 1, 2, 10, 0.02, -1, np.empty(2, np.int64))
    image = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="does not fit the batch"):  # planes 4 wide for 5 pixels
        KERNELS.fill_batch(image, 4, 5, 15, 1.0, 2.0, 3.0, np.empty((3, 4, 4), np.float32), 4, 16)
    with pytest.raises(ValueError, match="out holds"):
        KERNELS.fill_batch(image, 4, 5, 15, 1.0, 2.0, 3.0, np.empty((3, 4, 4), np.float32), 5, 20)
    with pytest.raises(ValueError, match="does not fit the batch"):  # rows of 4 pixels
        KERNELS.fill_batch(image, 4, 5, 15, 1.0, 2.0, 3.0, np.empty((4, 4, 3), np.float32), 12, 0)
    with pytest.raises(ValueError, match="out holds"):
        KERNELS.fill_batch(image, 4, 5, 15, 1.0, 2.0, 3.0, np.empty((3, 5, 3), np.float32), 15, 0)
