"""Batched prior matching and MultiBoxLoss against the per-image reference and hand-computed cases."""
from __future__ import annotations

import math

import pytest
import torch

from retinaface.engine.loss import LossOutput, MultiBoxLoss
from torchvision.ops import box_iou

from retinaface.engine.matching import PriorMatcher, batched_box_iou, match_priors, pad_targets
from retinaface.priors import generate_priors
from tests.matching_reference import match_reference, multibox_loss_reference

pytestmark = pytest.mark.usefixtures("single_thread")

# two side-by-side priors and one shifted copy: small enough to reason about by hand
SIDE_PRIORS = torch.tensor([[0.25, 0.5, 0.5, 1.0], [0.75, 0.5, 0.5, 1.0], [0.3125, 0.5, 0.5, 1.0]])
QUADRANT_PRIORS = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5],
                                [0.25, 0.75, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]])


def face(box, label=1.0, landmarks=None):
    box = torch.tensor(box, dtype=torch.float32)
    if label < 0:
        lm = torch.full((10,), -1.0)
    elif landmarks is None:
        centre = (box[:2] + box[2:]) / 2
        lm = centre.repeat(5)
    else:
        lm = torch.tensor(landmarks, dtype=torch.float32)
    return torch.cat([box, lm, torch.tensor([label])])


def faces(*rows):
    return torch.stack(rows) if rows else torch.zeros(0, 15)


def random_image_targets(gen: torch.Generator, priors: torch.Tensor, max_faces: int) -> torch.Tensor:
    """One image's faces: a mix of ordinary, tiny (ignored), prior-aligned, near-duplicate and exact
    duplicate boxes, labels 1 / -1."""
    k = int(torch.randint(0, max_faces + 1, (1,), generator=gen))
    if k == 0:
        return torch.zeros(0, 15)
    kind = torch.randint(0, 10, (k,), generator=gen)
    centre = torch.rand(k, 2, generator=gen)
    size = torch.exp(torch.empty(k, 2).uniform_(math.log(0.04), math.log(0.9), generator=gen))
    tiny = kind == 0
    size[tiny] = torch.exp(torch.empty(int(tiny.sum()), 2).uniform_(math.log(1e-3), math.log(0.02), generator=gen))
    aligned = kind == 1  # exactly a prior's box, or half a step off it
    if aligned.any():
        pick = torch.randint(0, priors.shape[0], (int(aligned.sum()),), generator=gen)
        shift = torch.randint(0, 2, (int(aligned.sum()), 1), generator=gen) * priors[pick, 2:] / 4
        centre[aligned] = priors[pick, :2] + shift
        size[aligned] = priors[pick, 2:]
    boxes = torch.cat([centre - size / 2, centre + size / 2], 1)
    boxes = torch.cat([boxes[:, :2].clamp(0, 0.99), boxes[:, 2:].clamp(max=1.0)], 1)
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1e-3)  # never a degenerate box
    near = (kind == 2).nonzero().flatten()
    if len(near) and k > 1:
        boxes[near] = boxes[(near + 1) % k] + 0.002  # shares a best prior with its neighbour
    labels = torch.where(torch.rand(k, generator=gen) < 0.7, 1.0, -1.0)
    lm = boxes[:, :2].repeat(1, 5) + torch.rand(k, 10, generator=gen) * (boxes[:, 2:] - boxes[:, :2]).repeat(1, 5)
    lm[labels < 0] = -1.0
    rows = torch.cat([boxes, lm, labels[:, None]], 1)
    dup = (kind == 3).nonzero().flatten()
    if len(dup):
        rows = torch.cat([rows, rows[dup]])  # exact duplicates, appended later in order
        rows[k:, 14] = -rows[k:, 14]          # with the other label, so the winner shows
        rows[k:][rows[k:, 14] < 0, 4:14] = -1.0
    return rows


def random_batch(seed: int, priors: torch.Tensor, batch: int = 4, max_faces: int = 12):
    gen = torch.Generator().manual_seed(seed)
    return [random_image_targets(gen, priors, max_faces) for _ in range(batch)]


def assert_matches_reference(targets, priors, reference_forcing=True, **kw):
    ours = match_priors(targets, priors, reference_forcing=reference_forcing, **kw)
    loc, conf, landm = match_reference(targets, priors, reference_forcing=reference_forcing)
    assert torch.equal(ours.labels, conf)
    assert torch.equal(ours.loc, loc)
    assert torch.equal(ours.landmarks, landm)
    return ours


# ---------------------------------------------------------------------------------------- matching

def test_batched_box_iou_is_bitwise_torchvision_box_iou():
    priors = generate_priors(64, 96)
    corners = torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], 1)
    padded, _ = pad_targets(random_batch(11, priors, max_faces=15))
    boxes = padded[..., :4]
    ours = batched_box_iou(boxes, corners)
    assert ours.shape == (*boxes.shape[:2], priors.shape[0])
    assert torch.equal(ours, box_iou(boxes.reshape(-1, 4), corners).view_as(ours))


@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
@pytest.mark.parametrize("reference_forcing", [True, False])
def test_batched_matching_equals_reference_on_random_batches(size, reference_forcing):
    priors = generate_priors(*size)
    positives = 0
    for seed in range(60):
        targets = random_batch(seed, priors)
        positives += int((assert_matches_reference(targets, priors, reference_forcing).labels != 0).sum())
    assert positives > 100  # the cases are not all background


def test_batched_matching_equals_reference_at_640():
    priors = generate_priors(640, 640)
    for seed in range(3):
        assert_matches_reference(random_batch(100 + seed, priors, batch=3, max_faces=40), priors)


def test_chunked_iou_gives_identical_result():
    priors = generate_priors(64, 64)
    for seed in range(10):
        targets = random_batch(200 + seed, priors, max_faces=20)
        whole = match_priors(targets, priors)
        for chunk in (1, 3 * 4 * priors.shape[0]):
            part = match_priors(targets, priors, chunk_elements=chunk)
            for a, b in zip(whole, part):
                assert torch.equal(a, b)


def test_padded_tensor_input_equals_list_input():
    priors = generate_priors(64, 64)
    targets = random_batch(7, priors)
    padded, valid = pad_targets(targets)
    assert padded.shape == (4, max(len(t) for t in targets), 15)
    assert valid.sum() == sum(len(t) for t in targets)
    for a, b in zip(match_priors(targets, priors), match_priors(padded, priors)):
        assert torch.equal(a, b)
    matcher = PriorMatcher()
    for a, b in zip(match_priors(targets, priors), matcher(padded, priors, valid=valid)):
        assert torch.equal(a, b)


def test_exact_prior_face_is_positive_with_zero_offsets():
    out = match_priors([faces(face([0.0, 0.0, 0.5, 0.5]))], QUADRANT_PRIORS)
    assert out.labels.tolist() == [[1, 0, 0, 0]]
    assert torch.allclose(out.loc[0, 0], torch.zeros(4))
    assert torch.allclose(out.landmarks[0, 0], torch.zeros(10))  # landmarks at the prior centre
    assert out.face_index[0].tolist() == [0, 0, 0, 0]


def test_images_without_faces_or_only_ignored_faces_are_all_background():
    priors = generate_priors(64, 64)
    tiny = faces(face([0.5, 0.5, 0.505, 0.505]), face([0.1, 0.1, 0.102, 0.103], -1.0))
    normal = faces(face([0.2, 0.2, 0.45, 0.45]))
    targets = [faces(), tiny, normal]
    out = assert_matches_reference(targets, priors)
    assert (out.labels[:2] == 0).all() and (out.loc[:2] == 0).all() and (out.landmarks[:2] == 0).all()
    assert (out.face_index[:2] == -1).all()
    assert (out.labels[2] == 1).any()
    empty = match_priors([faces(), faces()], priors)  # no face in the whole batch
    assert empty.labels.shape == (2, priors.shape[0]) and (empty.labels == 0).all()


def test_forcing_makes_a_low_overlap_face_positive_and_ties_pick_the_first_prior():
    # IoU 1/3 with both side priors: below 0.35, so only forcing makes it positive, and the tie
    # between the two priors goes to the first one, as torch.max does
    targets = [faces(face([0.25, 0.0, 0.75, 1.0]))]
    out = assert_matches_reference(targets, SIDE_PRIORS[:2])
    assert out.labels.tolist() == [[1, 0]]


def test_duplicate_faces_later_one_wins_the_shared_best_prior():
    # both faces are exactly prior 0; the later face takes it; prior 2 is not forced and its tie
    # between the two faces goes to the first face
    targets = [faces(face([0.0, 0.0, 0.5, 1.0], 1.0), face([0.0, 0.0, 0.5, 1.0], -1.0))]
    out = assert_matches_reference(targets, SIDE_PRIORS)
    assert out.labels.tolist() == [[-1, 0, 1]]
    assert out.face_index.tolist() == [[1, 0, 0]]


def test_ignored_face_still_repoints_its_best_prior_as_the_reference_loop_does():
    # face 0 is prior 0 exactly (valid); face 1 is tiny inside prior 0 (best IoU < 0.2, ignored) and
    # later in order: the reference loop over all faces gives prior 0 to face 1
    big, small = face([0.0, 0.0, 0.5, 1.0], 1.0), face([0.2, 0.45, 0.21, 0.46], -1.0)
    targets = [faces(big, small)]
    quirk = assert_matches_reference(targets, SIDE_PRIORS, reference_forcing=True)
    assert quirk.labels[0, 0] == -1 and quirk.face_index[0, 0] == 1
    strict = assert_matches_reference(targets, SIDE_PRIORS, reference_forcing=False)
    assert strict.labels[0, 0] == 1 and strict.face_index[0, 0] == 0


def test_matching_runs_on_the_priors_device_and_dtype():
    priors = generate_priors(64, 64).half()
    out = match_priors(random_batch(3, priors.float()), priors)
    assert out.loc.dtype == torch.float32 and out.labels.dtype == torch.long


# -------------------------------------------------------------------------------------------- loss

def smooth_l1(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def ce(logits, target) -> float:
    return math.log(sum(math.exp(v) for v in logits)) - logits[target]


def quadrant_predictions():
    loc = torch.zeros(1, 4, 4)
    loc[0, 0] = torch.tensor([0.5, -2.0, 0.0, 0.0])
    landm = torch.zeros(1, 4, 10)
    landm[0, 0, 0], landm[0, 0, 9] = 1.0, 0.2
    conf = torch.tensor([[[0.0, 1.0], [0.0, 0.0], [2.0, 0.0], [0.0, 3.0]]])
    return loc, conf, landm


def test_loss_by_hand_all_negatives_taken():
    targets = [faces(face([0.0, 0.0, 0.5, 0.5]))]  # prior 0 positive, the other three background
    out = MultiBoxLoss()(quadrant_predictions(), QUADRANT_PRIORS, targets)
    assert isinstance(out, LossOutput)
    box = smooth_l1(0.5) + smooth_l1(-2.0)                          # 0.125 + 1.5
    landmark = smooth_l1(1.0) + smooth_l1(0.2)                      # 0.5 + 0.02
    cls = ce([0, 1], 1) + ce([0, 0], 0) + ce([2, 0], 0) + ce([0, 3], 0)  # min(7 * 1, 3) = 3 negatives
    assert out.box.item() == pytest.approx(box, rel=1e-6)
    assert out.landmark.item() == pytest.approx(landmark, rel=1e-6)
    assert out.cls.item() == pytest.approx(cls, rel=1e-6)
    assert out.total.item() == pytest.approx(2.0 * box + cls + landmark, rel=1e-6)


def test_loss_by_hand_hardest_negative_only():
    targets = [faces(face([0.0, 0.0, 0.5, 0.5]))]
    out = MultiBoxLoss(neg_pos_ratio=1)(quadrant_predictions(), QUADRANT_PRIORS, targets)
    # one negative: prior 3 (logit margin 3 towards "face") is the hardest background prior
    assert out.cls.item() == pytest.approx(ce([0, 1], 1) + ce([0, 3], 0), rel=1e-6)


def test_loss_by_hand_face_without_landmarks_and_image_without_faces():
    loc, conf, landm = quadrant_predictions()
    predictions = (loc.repeat(2, 1, 1), conf.repeat(2, 1, 1), landm.repeat(2, 1, 1))
    targets = [faces(face([0.0, 0.0, 0.5, 0.5], -1.0)), faces()]
    out = MultiBoxLoss()(predictions, QUADRANT_PRIORS, targets)
    assert out.box.item() == pytest.approx(1.625, rel=1e-6)   # label -1 is a positive for the box
    assert out.landmark.item() == 0.0                          # ... but not for the landmarks
    # image 2 has no positives, hence no negatives either (7 * 0); positive class target is 1
    cls = ce([0, 1], 1) + ce([0, 0], 0) + ce([2, 0], 0) + ce([0, 3], 0)
    assert out.cls.item() == pytest.approx(cls, rel=1e-6)


def test_loss_without_any_positive_is_zero_and_finite():
    loc, conf, landm = (t.clone().requires_grad_() for t in quadrant_predictions())
    out = MultiBoxLoss()((loc, conf, landm), QUADRANT_PRIORS, [faces()])
    assert all(v.item() == 0.0 for v in out)
    out.total.backward()
    assert torch.isfinite(conf.grad).all() and (conf.grad == 0).all()


@pytest.mark.parametrize("seed", range(6))
def test_loss_equals_per_image_reference_with_gradients(seed):
    priors = generate_priors(64, 96)
    targets = random_batch(300 + seed, priors, batch=4, max_faces=10)
    gen = torch.Generator().manual_seed(seed)
    batch, num = len(targets), priors.shape[0]
    preds = [torch.randn(batch, num, c, generator=gen) * s for c, s in ((4, 1.5), (2, 2.0), (10, 1.5))]
    ours_in = [p.clone().requires_grad_() for p in preds]
    ref_in = [p.clone().requires_grad_() for p in preds]
    out = MultiBoxLoss()(tuple(ours_in), priors, targets)
    loss_l, loss_c, loss_landm = multibox_loss_reference(tuple(ref_in), priors, targets)
    for a, b in ((out.box, loss_l), (out.cls, loss_c), (out.landmark, loss_landm)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    out.total.backward()
    (2.0 * loss_l + loss_c + loss_landm).backward()
    for a, b in zip(ours_in, ref_in):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_loss_accepts_half_precision_predictions():
    priors = generate_priors(64, 64)
    targets = random_batch(5, priors)
    preds = tuple(torch.randn(4, priors.shape[0], c).half() for c in (4, 2, 10))
    out = MultiBoxLoss()(preds, priors, targets)
    assert out.total.dtype == torch.float32 and torch.isfinite(out.total)


# ---------------------------------------------------------------------------------- no host syncs

def _loss_inputs(device, seed=5, size=(64, 96)):
    priors = generate_priors(*size)
    targets = random_batch(seed, priors, max_faces=15)
    targets[1] = torch.zeros(0, 15)  # an image without faces too
    gen = torch.Generator().manual_seed(seed)
    num = priors.shape[0]
    preds = [torch.randn(len(targets), num, c, generator=gen) for c in (4, 2, 10)]
    preds = [p.to(device).requires_grad_() for p in preds]
    return preds, priors.to(device), [t.to(device) for t in targets]


def test_loss_path_is_shape_static_on_the_meta_device():
    """Meta tensors hold no data: any value-dependent step (``.item()``, ``nonzero``, boolean-mask
    indexing, ``if tensor:``) raises on them. Matching + loss + backward run through, so on a GPU
    they never make the host wait for the device."""
    preds, priors, targets = _loss_inputs("meta")
    out = MultiBoxLoss()(preds, priors, targets)
    assert out.total.device.type == "meta" and out.total.shape == ()
    out.total.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in preds)
    # the meta device really refuses data-dependent operations (so the check above is meaningful)
    with pytest.raises(Exception):
        out.total.item()
    with pytest.raises(Exception):
        preds[0][preds[0] > 0]


def test_loss_path_calls_no_item_or_nonzero(monkeypatch):
    """On the CPU: the same losses as usual with ``Tensor.item`` / ``tolist`` / ``nonzero`` and
    ``torch.nonzero`` / ``torch.where(cond)`` patched to raise."""
    preds, priors, targets = _loss_inputs("cpu")
    expected = MultiBoxLoss()(preds, priors, targets)

    def forbidden(*args, **kwargs):
        raise AssertionError("host-device synchronisation in the loss path")

    real_where = torch.where
    monkeypatch.setattr(torch.Tensor, "item", forbidden)
    monkeypatch.setattr(torch.Tensor, "tolist", forbidden)
    monkeypatch.setattr(torch.Tensor, "nonzero", forbidden)
    monkeypatch.setattr(torch, "nonzero", forbidden)
    monkeypatch.setattr(torch, "where", lambda *a, **k: forbidden() if len(a) == 1 else real_where(*a, **k))
    out = MultiBoxLoss()(preds, priors, targets)
    out.total.backward()
    monkeypatch.undo()
    for a, b in zip(out, expected):
        assert torch.equal(a, b)
    assert float(expected.total.detach()) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_loss_path_has_no_cuda_sync():
    preds, priors, targets = _loss_inputs("cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = MultiBoxLoss()(preds, priors, targets)
        out.total.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    cpu = MultiBoxLoss()(*_loss_inputs("cpu"))
    for a, b in zip(out, cpu):
        assert torch.allclose(a.cpu(), b.detach(), rtol=1e-4, atol=1e-5)
