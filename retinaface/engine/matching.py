"""Prior matching: turns a batch of face annotations into per-prior training targets.

This module owns the rule that decides which prior learns which face, and nothing else. It follows
the reference (Pytorch_Retinaface's ``match``) decision for decision, but for the whole batch at
once: the targets are padded to ``(B, Kmax, 15)`` with a validity mask, IoUs are computed as one
``(B, Kmax, P)`` block and every step is a tensor reduction or scatter; there is no Python loop over
images or faces.

Per image, in the reference's order:

1. IoU of every face with every prior (corner form).
2. Each face's best prior (``max`` over priors; ties go to the first prior, as ``torch.max`` does).
   Faces whose best IoU is below ``ignore_threshold`` (0.2) take no part in forcing. If no face of an
   image is left, the whole image gets all-background targets (loc 0, label 0, landmarks 0).
3. Each prior's best face (``max`` over faces; ties go to the first face).
4. Forcing: the best prior of every face that was not ignored gets overlap 2; then, as the reference's
   loop ``for j in range(num_faces): best_truth_idx[best_prior_idx[j]] = j`` does, the face index of
   each face's best prior is re-pointed to that face, the later face winning when two faces share a
   best prior. Note that the reference's loop runs over *all* faces, ignored ones included (only the
   overlap-2 step is filtered), so an ignored face still re-points its best prior's face index. That is
   reproduced by default (``reference_forcing=True``); ``reference_forcing=False`` leaves ignored
   faces out of forcing entirely, which is the rule as the spec words it.
5. Priors whose overlap is below ``iou_threshold`` (0.35) are background (label 0); the others take
   their face's label (1: face with landmarks, -1: face without landmarks) and its encoded box and
   landmarks.

Target rows are ``x1 y1 x2 y2, 5 x (x, y) landmarks, label`` (15 columns, normalized coordinates).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..box_coder import BoxCoder
from ..conventions import BOX_VARIANCES, MATCH_IGNORE_THRESHOLD, MATCH_IOU_THRESHOLD, TARGET_COLUMNS, TARGET_LABEL

Targets = Union[Sequence[Tensor], Tensor]


class MatchResult(NamedTuple):
    """Per-prior targets of a batch."""

    loc: Tensor         # (B, P, 4) encoded box targets
    labels: Tensor      # (B, P) long: 1 face with landmarks, -1 face without, 0 background
    landmarks: Tensor   # (B, P, 10) encoded landmark targets
    face_index: Tensor  # (B, P) long: index of the matched face in its image; -1 if the image has none


def pad_targets(targets: Targets, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tensor]:
    """Batch targets as ``(B, Kmax, 15)`` plus a ``(B, Kmax)`` validity mask.

    ``targets`` is a list of ``(K_i, 15)`` tensors (``K_i`` may be 0), or an already padded
    ``(B, K, 15)`` tensor whose padding rows have label 0 (real faces are labelled 1 or -1) and come
    after each image's real faces.
    """
    padded, valid, _ = _batch_targets(targets, device, dtype)
    return padded, valid


def _batch_targets(targets: Targets, device: torch.device | str | None,
                   dtype: torch.dtype) -> Tuple[Tensor, Tensor, Optional[Tuple[Tensor, Tensor]]]:
    """``pad_targets`` plus, for list input, the host-side ``(image, slot)`` of every real face."""
    if isinstance(targets, Tensor):
        if targets.dim() != 3 or targets.shape[-1] != TARGET_COLUMNS:
            raise ValueError(f"padded targets must be (B, K, {TARGET_COLUMNS}), got {tuple(targets.shape)}")
        padded = targets.to(device=device, dtype=dtype)
        return padded, padded[..., TARGET_LABEL] != 0, None
    rows = [t.reshape(-1, TARGET_COLUMNS) for t in targets]
    if not rows:
        raise ValueError("empty batch: no target tensors given")
    sizes = [int(r.shape[0]) for r in rows]  # shapes are host numbers: reading them never syncs
    batch, kmax = len(rows), max(sizes)
    counts = torch.tensor(sizes, dtype=torch.long)
    # face positions are worked out on the host, from the shapes alone
    image = torch.repeat_interleave(torch.arange(batch), counts)
    slot = torch.arange(sum(sizes)) - (torch.cumsum(counts, 0) - counts)[image]
    # one concatenation and one host-to-device copy for the whole batch, then one scatter
    flat = torch.cat(rows).to(device=device, dtype=dtype)
    device = flat.device
    padded = flat.new_zeros(batch, kmax, TARGET_COLUMNS)
    # non_blocking: host-to-device copies of index tensors that never wait for the device
    padded[image.to(device, non_blocking=True), slot.to(device, non_blocking=True)] = flat
    valid = torch.arange(kmax, device=device)[None] < counts.to(device, non_blocking=True)[:, None]
    return padded, valid, (image, slot)


def batched_box_iou(boxes: Tensor, other: Tensor) -> Tensor:
    """IoU of ``(..., N, 4)`` corner boxes with ``(M, 4)`` ones: ``(..., N, M)``.

    The arithmetic of ``torchvision.ops.box_iou`` (and of the reference's ``jaccard``) operation for
    operation, so the values are bitwise the same, but batched and with in-place steps: about a third
    of box_iou's temporaries, which is where the time goes for ``B x Kmax x 16800`` blocks.
    """
    a = boxes[..., :, None, :]
    b = other
    # three (..., N, M) buffers in all, reused through out= and in-place steps
    inter = torch.minimum(a[..., 2], b[:, 2])
    tmp = torch.maximum(a[..., 0], b[:, 0])
    inter.sub_(tmp).clamp_(min=0)
    inter_h = torch.minimum(a[..., 3], b[:, 3])
    torch.maximum(a[..., 1], b[:, 1], out=tmp)
    inter.mul_(inter_h.sub_(tmp).clamp_(min=0))
    del inter_h
    area_a = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    area_b = (other[:, 2] - other[:, 0]) * (other[:, 3] - other[:, 1])
    union = torch.add(area_a[..., None], area_b, out=tmp).sub_(inter)
    return inter.div_(union)


def _point_form(priors: Tensor) -> Tensor:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``, the same arithmetic as the reference."""
    return torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], dim=1)


@torch.no_grad()
def match_priors(targets: Targets, priors: Tensor, iou_threshold: float = MATCH_IOU_THRESHOLD,
                 ignore_threshold: float = MATCH_IGNORE_THRESHOLD, box_coder: Optional[BoxCoder] = None, *,
                 valid: Optional[Tensor] = None, reference_forcing: bool = True,
                 chunk_elements: int = 1 << 25) -> MatchResult:
    """Match every prior of every image to a face or to the background (see the module docstring).

    Args:
        targets: list of ``(K_i, 15)`` tensors, or a padded ``(B, K, 15)`` tensor (padding label 0).
        priors: ``(P, 4)`` priors ``(cx, cy, w, h)``, normalized; the result lives on their device.
        valid: optional ``(B, K)`` mask for a padded ``targets`` tensor (overrides the label rule).
        reference_forcing: reproduce the reference's forcing loop over all faces (see module doc).
        chunk_elements: cap on ``B * faces * P`` per IoU block. Batches beyond it are processed in
            chunks of faces, so an image with hundreds of faces cannot blow up memory; the result
            is identical (running max with strict ``>`` keeps the first-index tie rule).
    """
    coder = box_coder if box_coder is not None else BoxCoder()
    priors = priors.float()  # matching always runs in float32, also under autocast
    device = priors.device
    faces, pad_valid, positions = _batch_targets(targets, device, torch.float32)
    if valid is not None:
        valid, positions = valid.to(device=device, dtype=torch.bool), None
    else:
        valid = pad_valid
    batch, kmax, _ = faces.shape
    num_priors = priors.shape[0]

    if kmax == 0:  # no image of the batch has a face
        return MatchResult(faces.new_zeros(batch, num_priors, 4),
                           torch.zeros(batch, num_priors, dtype=torch.long, device=device),
                           faces.new_zeros(batch, num_priors, 10),
                           torch.full((batch, num_priors), -1, dtype=torch.long, device=device))

    corners = _point_form(priors)
    boxes = torch.where(valid[..., None], faces[..., :4], 0.0)  # zero boxes in padding rows
    best_prior_overlap = faces.new_empty(batch, kmax)
    best_prior_idx = torch.empty(batch, kmax, dtype=torch.long, device=device)
    best_truth_overlap = best_truth_idx = None
    step = max(1, chunk_elements // max(1, batch * num_priors))
    for start in range(0, kmax, step):
        stop = min(kmax, start + step)
        # padding rows are zero boxes, whose IoU with every prior is exactly 0; as they come after
        # the real faces, the first-index rule never makes one a prior's best face (and an image
        # with no real face is all-background anyway), so no masking pass is needed
        if positions is None:
            iou = batched_box_iou(boxes[:, start:stop], corners)
        else:
            # IoU of the real faces only, dropped into a zero (B, chunk, P) block: the cost follows
            # the number of faces, not B x Kmax (face counts per image are heavy-tailed)
            image, slot = positions
            take = (slot >= start) & (slot < stop)
            # host-side selection (image / slot live on the host), then index copies to the device
            row = (image[take] * (stop - start) + slot[take] - start).to(device, non_blocking=True)
            flat_index = (image[take] * kmax + slot[take]).to(device, non_blocking=True)
            real = batched_box_iou(boxes.view(-1, 4)[flat_index], corners)
            iou = real.new_zeros(batch * (stop - start), num_priors).index_copy_(0, row, real)
            iou = iou.view(batch, stop - start, num_priors)
            del real
        best_prior_overlap[:, start:stop], best_prior_idx[:, start:stop] = iou.max(dim=2)
        overlap, index = iou.max(dim=1)
        index += start
        if best_truth_overlap is None:
            best_truth_overlap, best_truth_idx = overlap, index
        else:
            # strictly greater: an earlier face keeps a tie, as one torch.max over all faces would
            better = overlap > best_truth_overlap
            best_truth_overlap = torch.where(better, overlap, best_truth_overlap)
            best_truth_idx = torch.where(better, index, best_truth_idx)
        del iou

    kept = valid & (best_prior_overlap >= ignore_threshold)  # faces that take part in forcing
    has_face = kept.any(dim=1)                                 # else: all-background image

    # the reference's sequential loop "best_truth_idx[best_prior_idx[j]] = j" means the last face
    # (highest j) pointing at a prior wins: a scatter with max over face indices
    repointing = valid if reference_forcing else kept
    face_ids = torch.arange(kmax, device=device).expand(batch, kmax)
    forced_face = torch.full((batch, num_priors), -1, dtype=torch.long, device=device)
    forced_face.scatter_reduce_(1, best_prior_idx, torch.where(repointing, face_ids, -1), reduce="amax")
    best_truth_idx = torch.where(forced_face >= 0, forced_face, best_truth_idx)
    # overlap 2 only for the best priors of kept faces (the reference's filtered index_fill_)
    forced = torch.zeros(batch, num_priors, dtype=torch.int32, device=device)
    forced.scatter_add_(1, best_prior_idx, kept.to(torch.int32))
    best_truth_overlap = best_truth_overlap.masked_fill(forced > 0, 2.0)

    matched = faces.gather(1, best_truth_idx[..., None].expand(batch, num_priors, TARGET_COLUMNS))
    labels = matched[..., TARGET_LABEL].long()
    labels.masked_fill_(best_truth_overlap < iou_threshold, 0)
    loc = coder.encode_boxes(matched[..., :4], priors)
    landmarks = coder.encode_landmarks(matched[..., 4:14], priors)

    no_face = ~has_face[:, None]
    labels.masked_fill_(no_face, 0)
    loc.masked_fill_(no_face[..., None], 0.0)
    landmarks.masked_fill_(no_face[..., None], 0.0)  # the reference leaves these unset; 0 is tidier
    face_index = best_truth_idx.masked_fill(no_face, -1)
    return MatchResult(loc, labels, landmarks, face_index)


class PriorMatcher:
    """``match_priors`` with its settings bound, for the loss and the trainer."""

    def __init__(self, iou_threshold: float = MATCH_IOU_THRESHOLD, ignore_threshold: float = MATCH_IGNORE_THRESHOLD,
                 variances: Sequence[float] = BOX_VARIANCES, reference_forcing: bool = True,
                 chunk_elements: int = 1 << 25) -> None:
        self.iou_threshold = float(iou_threshold)
        self.ignore_threshold = float(ignore_threshold)
        self.box_coder = BoxCoder(variances)
        self.reference_forcing = bool(reference_forcing)
        self.chunk_elements = int(chunk_elements)

    def __call__(self, targets: Targets, priors: Tensor, valid: Optional[Tensor] = None) -> MatchResult:
        return match_priors(targets, priors, self.iou_threshold, self.ignore_threshold, self.box_coder,
                            valid=valid, reference_forcing=self.reference_forcing,
                            chunk_elements=self.chunk_elements)
