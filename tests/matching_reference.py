"""Straightforward per-image matching and loss, written step by step after the reference
(Pytorch_Retinaface's ``match`` and ``MultiBoxLoss``), as the oracle for the batched versions in
``retinaface.engine.matching`` and ``retinaface.engine.loss``. Test and benchmark code only: one Python loop per image,
the forcing loop per face, exactly as the reference runs them.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def point_form(priors: Tensor) -> Tensor:
    return torch.cat((priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2), 1)


def jaccard(box_a: Tensor, box_b: Tensor) -> Tensor:
    a, b = box_a.size(0), box_b.size(0)
    max_xy = torch.min(box_a[:, 2:].unsqueeze(1).expand(a, b, 2), box_b[:, 2:].unsqueeze(0).expand(a, b, 2))
    min_xy = torch.max(box_a[:, :2].unsqueeze(1).expand(a, b, 2), box_b[:, :2].unsqueeze(0).expand(a, b, 2))
    inter = torch.clamp(max_xy - min_xy, min=0)
    inter = inter[:, :, 0] * inter[:, :, 1]
    area_a = ((box_a[:, 2] - box_a[:, 0]) * (box_a[:, 3] - box_a[:, 1])).unsqueeze(1).expand_as(inter)
    area_b = ((box_b[:, 2] - box_b[:, 0]) * (box_b[:, 3] - box_b[:, 1])).unsqueeze(0).expand_as(inter)
    return inter / (area_a + area_b - inter)


def encode(matched: Tensor, priors: Tensor, variances: Sequence[float]) -> Tensor:
    g_cxcy = (matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]
    g_cxcy /= variances[0] * priors[:, 2:]
    g_wh = (matched[:, 2:] - matched[:, :2]) / priors[:, 2:]
    g_wh = torch.log(g_wh) / variances[1]
    return torch.cat([g_cxcy, g_wh], 1)


def encode_landm(matched: Tensor, priors: Tensor, variances: Sequence[float]) -> Tensor:
    matched = matched.reshape(matched.size(0), 5, 2)
    g = (matched - priors[:, None, :2]) / (variances[0] * priors[:, None, 2:])
    return g.reshape(g.size(0), -1)


def match_one(threshold: float, truths: Tensor, priors: Tensor, variances: Sequence[float], labels: Tensor,
              landms: Tensor, reference_forcing: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """One image, the reference's steps in order. Returns (loc (P,4), conf (P,) long, landm (P,10))."""
    num_priors = priors.size(0)
    overlaps = jaccard(truths, point_form(priors))
    best_prior_overlap, best_prior_idx = overlaps.max(1, keepdim=True)
    valid_gt_idx = best_prior_overlap[:, 0] >= 0.2
    best_prior_idx_filter = best_prior_idx[valid_gt_idx, :]
    if best_prior_idx_filter.shape[0] <= 0:
        return priors.new_zeros(num_priors, 4), torch.zeros(num_priors, dtype=torch.long), priors.new_zeros(num_priors, 10)
    best_truth_overlap, best_truth_idx = overlaps.max(0, keepdim=True)
    best_truth_idx.squeeze_(0)
    best_truth_overlap.squeeze_(0)
    best_prior_idx.squeeze_(1)
    best_prior_idx_filter.squeeze_(1)
    best_truth_overlap.index_fill_(0, best_prior_idx_filter, 2)
    for j in range(best_prior_idx.size(0)):
        if reference_forcing or valid_gt_idx[j]:
            best_truth_idx[best_prior_idx[j]] = j
    matches = truths[best_truth_idx]
    conf = labels[best_truth_idx].clone()
    conf[best_truth_overlap < threshold] = 0
    loc = encode(matches, priors, variances)
    landm = encode_landm(landms[best_truth_idx], priors, variances)
    return loc, conf.long(), landm


def match_reference(targets: List[Tensor], priors: Tensor, threshold: float = 0.35,
                    variances: Sequence[float] = (0.1, 0.2),
                    reference_forcing: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """The reference's per-image loop over a batch: (loc_t (B,P,4), conf_t (B,P), landm_t (B,P,10))."""
    locs, confs, landms = [], [], []
    for t in targets:
        loc, conf, landm = match_one(threshold, t[:, :4], priors, variances, t[:, -1], t[:, 4:14],
                                     reference_forcing)
        locs.append(loc)
        confs.append(conf)
        landms.append(landm)
    return torch.stack(locs), torch.stack(confs), torch.stack(landms)


def log_sum_exp(x: Tensor) -> Tensor:
    x_max = x.detach().max()
    return torch.log(torch.sum(torch.exp(x - x_max), 1, keepdim=True)) + x_max


def multibox_loss_reference(predictions: Tuple[Tensor, Tensor, Tensor], priors: Tensor, targets: List[Tensor],
                            neg_pos_ratio: int = 7, threshold: float = 0.35,
                            variances: Sequence[float] = (0.1, 0.2)) -> Tuple[Tensor, Tensor, Tensor]:
    """The reference loss, as its code reads: returns (loss_l, loss_c, loss_landm)."""
    loc_data, conf_data, landm_data = predictions
    num, num_priors, num_classes = conf_data.shape
    loc_t, conf_t, landm_t = match_reference(targets, priors, threshold, variances)

    pos1 = conf_t > 0
    n1 = max(pos1.long().sum().float(), 1)
    loss_landm = F.smooth_l1_loss(landm_data[pos1], landm_t[pos1], reduction="sum")

    pos = conf_t != 0
    conf_t = conf_t.clone()
    conf_t[pos] = 1
    loss_l = F.smooth_l1_loss(loc_data[pos], loc_t[pos], reduction="sum")

    batch_conf = conf_data.reshape(-1, num_classes)
    loss_c = log_sum_exp(batch_conf) - batch_conf.gather(1, conf_t.view(-1, 1))
    loss_c[pos.view(-1, 1)] = 0
    loss_c = loss_c.view(num, -1)
    _, loss_idx = loss_c.sort(1, descending=True)
    _, idx_rank = loss_idx.sort(1)
    num_pos = pos.long().sum(1, keepdim=True)
    num_neg = torch.clamp(neg_pos_ratio * num_pos, max=pos.size(1) - 1)
    neg = idx_rank < num_neg.expand_as(idx_rank)
    selected = pos | neg
    loss_c = F.cross_entropy(conf_data[selected], conf_t[selected], reduction="sum")

    n = max(num_pos.sum().float(), 1)
    return loss_l / n, loss_c / n, loss_landm / n1
