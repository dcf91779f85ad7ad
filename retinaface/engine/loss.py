"""The RetinaFace training loss (the reference's MultiBoxLoss), vectorised over the batch.

This module owns how matched targets and head outputs become the three loss terms:

- box: smooth-L1 (beta 1), summed over positive priors (label != 0), divided by their number;
- landmark: smooth-L1 summed over priors with label 1 (faces that have landmarks), divided by their
  number;
- class: 2-way cross-entropy over the positives (target 1 for labels 1 and -1) plus, per image, the
  ``neg_pos_ratio`` x positives background priors with the highest classification loss (at most
  P - 1), summed and divided by the number of positives;
- total = box_weight * box + class + landmark.

Every divisor is ``max(count, 1)`` so a batch without positives gives finite zeros, not NaN. Matching
is delegated to :mod:`retinaface.engine.matching`. Masked sums (rather than boolean indexing) keep the loss
free of host-device synchronisation.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..conventions import BOX_VARIANCES, MATCH_IGNORE_THRESHOLD, MATCH_IOU_THRESHOLD
from .matching import MatchResult, PriorMatcher, Targets


class LossOutput(NamedTuple):
    """Scalar loss terms; ``total = box_weight * box + cls + landmark``."""

    total: Tensor
    box: Tensor
    cls: Tensor
    landmark: Tensor


class MultiBoxLoss(nn.Module):
    """Matching + hard negative mining + the three loss terms (see the module docstring)."""

    def __init__(self, num_classes: int = 2, overlap_threshold: float = MATCH_IOU_THRESHOLD, neg_pos_ratio: int = 7,
                 box_weight: float = 2.0, variances: Sequence[float] = BOX_VARIANCES,
                 ignore_threshold: float = MATCH_IGNORE_THRESHOLD, reference_forcing: bool = True) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.neg_pos_ratio = int(neg_pos_ratio)
        self.box_weight = float(box_weight)
        self.matcher = PriorMatcher(overlap_threshold, ignore_threshold, variances, reference_forcing)

    def forward(self, predictions: Tuple[Tensor, Tensor, Tensor], priors: Tensor,
                targets: Targets) -> LossOutput:
        """``predictions = (loc (B,P,4), conf (B,P,C) logits, landms (B,P,10))``; ``priors (P,4)``;
        ``targets``: list of ``(K_i, 15)`` tensors or a padded ``(B, K, 15)`` tensor."""
        match = self.matcher(targets, priors.detach())
        return self.from_match(predictions, match)

    def from_match(self, predictions: Tuple[Tensor, Tensor, Tensor], match: MatchResult) -> LossOutput:
        """The loss for already matched targets (e.g. matched elsewhere, or in tests)."""
        loc_p, conf_p, landm_p = (p.float() for p in predictions)  # losses in float32 under AMP
        batch, num_priors, num_classes = conf_p.shape
        labels = match.labels
        pos = labels != 0
        pos_landm = labels > 0
        num_pos = pos.sum(dim=1, keepdim=True)
        n = num_pos.sum().clamp(min=1).float()
        n_landm = pos_landm.sum().clamp(min=1).float()

        # targets of non-positive priors are zeroed so that a degenerate face cannot leak a NaN
        # through the masked-out terms' gradients
        loc_t = torch.where(pos[..., None], match.loc, 0.0)
        box = F.smooth_l1_loss(loc_p, loc_t, reduction="none", beta=1.0).sum(-1)
        box = torch.where(pos, box, 0.0).sum() / n

        landm_t = torch.where(pos_landm[..., None], match.landmarks, 0.0)
        landmark = F.smooth_l1_loss(landm_p, landm_t, reduction="none", beta=1.0).sum(-1)
        landmark = torch.where(pos_landm, landmark, 0.0).sum() / n_landm

        cls_t = pos.long()  # labels 1 and -1 are both class "face"
        ce = F.cross_entropy(conf_p.reshape(-1, num_classes), cls_t.reshape(-1), reduction="none")
        ce = ce.view(batch, num_priors)
        with torch.no_grad():
            # hard negative mining: the mining loss is the per-prior cross-entropy (the reference's
            # log_sum_exp(conf) - conf[label]) with positives zeroed, ranked within each image
            mining = ce.detach().masked_fill(pos, 0.0)
            order = mining.argsort(dim=1, descending=True)
            num_neg = (self.neg_pos_ratio * num_pos).clamp(max=num_priors - 1)
            take = torch.arange(num_priors, device=ce.device)[None] < num_neg
            neg = torch.zeros_like(pos).scatter_(1, order, take)
        cls = torch.where(pos | neg, ce, 0.0).sum() / n

        total = self.box_weight * box + cls + landmark
        return LossOutput(total, box, cls, landmark)
