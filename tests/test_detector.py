import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from retinaface import Detector, create_model, load_model
from retinaface.inference.transform import resize_scale


def match_fraction(ours, reference, tol=1e-3):
    """Share of reference rows that some row of ours reproduces (all 15 values within tol)."""
    if len(reference) == 0:
        return 1.0
    diff = np.abs(ours[:, None, :] - reference[None, :, :]).max(-1)
    return float((diff.min(0) <= tol).mean())


@pytest.fixture(scope="module")
def detector(legacy_checkpoint):
    return Detector(load_model(legacy_checkpoint))


def test_fixture_detections_reproduced(detector, fixture_io):
    dets = detector.detect(fixture_io["image_bgr"])
    reference = fixture_io["detections"]
    assert dets.dtype == np.float32 and dets.shape == reference.shape
    assert np.all(np.diff(dets[:, 4]) <= 0)  # sorted by score
    assert match_fraction(dets, reference) >= 0.99


def test_batch_of_equal_sizes_equals_one_by_one(detector, fixture_io):
    image = fixture_io["image_bgr"]
    others = [np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(image[::-1])]
    batch = detector.detect_batch([image] + others)
    for img, dets in zip([image] + others, batch):
        single = detector.detect(img)
        assert dets.shape == single.shape
        assert np.all(np.diff(dets[:, 4]) <= 0)
        # Batched convolutions differ from single ones by ~1e-7, which may swap two detections of
        # near-equal score (or the last one kept); the same detections must come out otherwise.
        assert np.allclose(dets[:, 4], single[:, 4], atol=1e-5)
        assert match_fraction(dets, single, tol=1e-4) >= 0.998
        assert match_fraction(single, dets, tol=1e-4) >= 0.998


def test_padded_batch_of_mixed_sizes_agrees(legacy_checkpoint, fixture_io):
    from retinaface.inference.profiling import calibrate_score_bias

    image = fixture_io["image_bgr"]
    small = np.ascontiguousarray(image[:200, :260])
    model = load_model(legacy_checkpoint)
    calibrate_score_bias(model, small, 40, spread=None)  # a trained model: only fewer candidates
    detector = Detector(model)
    batch = detector.detect_batch([image, small])
    assert np.allclose(batch[0], detector.detect(image), atol=1e-4)  # the largest image is not padded
    single = detector.detect(small)
    # padding changes features only through the network's border effects: most boxes stay put
    assert abs(len(batch[1]) - len(single)) <= 0.25 * len(single)
    iou = box_iou(torch.from_numpy(single[:, :4]), torch.from_numpy(batch[1][:, :4]))
    assert (iou.max(1).values > 0.9).float().mean() >= 0.75


def test_thresholds_and_topk(fixture_io, legacy_checkpoint):
    model = load_model(legacy_checkpoint)
    dets = Detector(model, conf_threshold=0.5, post_nms_topk=10).detect(fixture_io["image_bgr"])
    assert len(dets) == 10 and dets[:, 4].min() > 0.5
    none = Detector(model, conf_threshold=0.999).detect(fixture_io["image_bgr"])
    assert none.shape == (0, 15)


def test_resize_policy_maps_back_to_original_pixels(fixture_io, legacy_checkpoint):
    image = fixture_io["image_bgr"]  # 240 x 320
    model = load_model(legacy_checkpoint)
    assert resize_scale(240, 320, 480, 1000) == 2.0
    assert resize_scale(240, 320, 480, 600) == 600 / 320
    upscaled = np.ascontiguousarray(np.repeat(np.repeat(image, 2, axis=0), 2, axis=1))
    direct = Detector(model).detect(upscaled)
    via_policy = Detector(model, target_size=480, max_size=2000).detect(image)
    # the policy resizes 240x320 -> 480x640 bilinearly; results are reported in 240x320 pixels
    assert via_policy[:, :4].max() < 3 * 320
    top = box_iou(torch.from_numpy(direct[:20, :4] / 2), torch.from_numpy(via_policy[:, :4]))
    assert (top.max(1).values > 0.7).float().mean() > 0.7


def test_bad_image_is_rejected(detector):
    with pytest.raises(ValueError, match=r"image 0: expected an \(H, W, 3\) BGR array"):
        detector.detect(np.zeros((10, 10), np.uint8))


def test_plus_one_nms_differs_from_plain_nms():
    from retinaface.inference.postprocess import nms_keep

    # IoU is 50/150 = 0.333 with +1 widths (suppressed at 0.3) and 36/126 = 0.286 without (kept)
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 5.0, 9.0, 14.0]])
    scores = torch.tensor([0.9, 0.8])
    assert nms_keep(boxes, scores, 0.3, plus_one=True).tolist() == [0]
    assert nms_keep(boxes, scores, 0.3, plus_one=False).tolist() == [0, 1]


def test_channels_last_input_gives_the_same_detections_and_leaves_the_model_alone(legacy_checkpoint, fixture_io):
    model = load_model(legacy_checkpoint)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = Detector(model)  # CPU default: NHWC batches
    plain = Detector(model, channels_last=False)
    assert fast.channels_last and not plain.channels_last
    assert fast.transform([fixture_io["image_bgr"]])[0].is_contiguous(memory_format=torch.channels_last)
    a, b = fast.detect(fixture_io["image_bgr"]), plain.detect(fixture_io["image_bgr"])
    assert np.allclose(a[:, 4], b[:, 4], atol=1e-5)
    assert match_fraction(a, b, tol=1e-3) >= 0.998
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) and v.is_contiguous()


def test_empty_images_give_no_detections(detector, fixture_io):
    empty = np.zeros((0, 40, 3), np.uint8)
    assert detector.detect(empty).shape == (0, 15)
    image = fixture_io["image_bgr"]
    batch = detector.detect_batch([empty, image, np.zeros((0, 0, 3), np.uint8)])
    assert batch[0].shape == (0, 15) and batch[2].shape == (0, 15)
    assert np.allclose(batch[1], detector.detect(image), atol=1e-4)
    assert resize_scale(0, 40, 1600, 2150) == 1.0
    policy = Detector(detector.model, target_size=1600, max_size=2150)
    assert policy.detect(empty).shape == (0, 15)


def test_thin_strip_resized_to_one_pixel_maps_back_per_axis(legacy_checkpoint):
    # long side 500 -> 100 makes the 1-pixel short side round to 0: keep it at 1 pixel and map x
    # back by 500/100 and y by 1/1
    strip = np.full((1, 500, 3), 128, np.uint8)
    detector = Detector(load_model(legacy_checkpoint), max_size=100)
    prepared, scale = detector.transform.resize(strip)
    assert prepared.shape == (1, 100, 3) and scale == (0.2, 1.0)
    dets = detector.detect(strip)
    reference = Detector(detector.model).detect(np.full((1, 100, 3), 128, np.uint8))
    assert len(dets) == len(reference) > 0
    expected = reference.copy()
    expected[:, 0:4:2] *= 5
    expected[:, 5:15:2] *= 5
    assert np.allclose(dets, expected, rtol=1e-5, atol=1e-3)


def test_postprocessing_the_fixtures_raw_outputs_gives_its_detections(detector, fixture_io):
    """The reference's own head outputs through our post-processing (threshold, sort, decode, NMS
    with +1, top-k): the reference's detections, matched row by row.

    Scores come straight from the fixture (so the tolerance below holds them exactly). Coordinates
    go through ``exp``, whose last bit depends on the CPU's code path (MKL picks one per CPU; 16 of
    11,250 numbers differed by one unit on one machine), so they are compared at 1e-6 relative
    (about 8 float32 units in the last place of each value) plus 1e-4 px for values near zero. A last-bit change
    may flip an NMS decision at the threshold, so rows are matched order-free and 99 % must match
    each way (the fixture's README says the same)."""
    from retinaface.priors import generate_priors

    h, w = fixture_io["image_bgr"].shape[:2]
    got = detector.postprocess(*(torch.from_numpy(fixture_io[k][0]) for k in ("loc", "conf", "landms")),
                               generate_priors(h, w), (h, w), 1.0).numpy()
    want = fixture_io["detections"]
    assert abs(len(got) - len(want)) <= 0.01 * len(want)
    close = np.all(np.abs(got[:, None, :] - want[None, :, :]) <= 1e-4 + 1e-6 * np.abs(want[None, :, :]), axis=-1)
    assert close.any(0).mean() >= 0.99 and close.any(1).mean() >= 0.99
    assert np.all(np.diff(got[:, 4]) <= 0)  # sorted by score, as the reference


def test_score_calibration_gives_untrained_heads_a_trained_spread_and_candidate_count():
    """Benchmarks time post-processing on untrained weights made to score like a trained model:
    ~N candidates, margins spread as a trained model's (otherwise INT8 keeps all or none)."""
    from retinaface.inference.profiling import TRAINED_MARGIN_SPREAD, face_margins, calibrate_score_bias

    image = np.random.default_rng(1).integers(0, 256, (160, 224, 3), dtype=np.uint8)
    torch.manual_seed(0)
    model = create_model("mobilenet0.25").eval()
    assert float(face_margins(model, image).std()) < 0.3  # untrained: nearly equal margins
    calibrate_score_bias(model, image, 120)
    margins = face_margins(model, image)
    assert abs(float(margins.std()) - TRAINED_MARGIN_SPREAD) < 1e-3
    assert abs(int((margins > np.log(0.02 / 0.98)).sum()) - 120) <= 2
    weights = [head.conv1x1.weight.clone() for head in model.ClassHead]
    calibrate_score_bias(model, image, 30, spread=None)  # shift only
    assert all(torch.equal(w, head.conv1x1.weight) for w, head in zip(weights, model.ClassHead))
    assert abs(int((face_margins(model, image) > np.log(0.02 / 0.98)).sum()) - 30) <= 2
