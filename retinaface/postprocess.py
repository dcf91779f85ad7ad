"""Post-processing: raw head outputs -> per-image detections (threshold, top-k, decode, NMS).

Only the candidates above the score threshold are decoded, so the cost depends on how many faces
the model believes in, not on the prior count. NMS is ``torchvision.ops.nms``; the reference's
"+1 pixel" convention (areas and intersections use x2 - x1 + 1) is obtained by giving NMS boxes whose
x2 and y2 are shifted by +1, which yields the same IoU.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torchvision.ops import nms

from .box_coder import BoxCoder

DETECTION_COLUMNS = 15  # x1 y1 x2 y2 score, then five (x, y) landmarks


def nms_keep(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
             plus_one: bool = True) -> torch.Tensor:
    """Indices kept by greedy NMS, in decreasing score order."""
    if plus_one:
        boxes = torch.cat([boxes[:, :2], boxes[:, 2:] + 1], dim=1)
    return nms(boxes, scores, iou_threshold)


def postprocess_image(loc: torch.Tensor, conf: torch.Tensor, landms: torch.Tensor,
                      priors: torch.Tensor, box_coder: BoxCoder, input_size: Sequence[int],
                      scale: float | Sequence[float] = 1.0, conf_threshold: float = 0.02,
                      nms_threshold: float = 0.4, pre_nms_topk: Optional[int] = 5000,
                      post_nms_topk: Optional[int] = 750, plus_one_nms: bool = True) -> torch.Tensor:
    """Detections ``(N, 15)`` of one image from its outputs ``loc (P,4)``, ``conf (P,2)``, ``landms (P,10)``.

    ``input_size`` is the network input ``(height, width)``; coordinates are divided by ``scale``
    (the resize factor applied before the network, one value or ``(sx, sy)``), so they come out in the
    original image's pixels. Rows are sorted by decreasing score.
    """
    scores = conf[:, 1]
    candidates = torch.nonzero(scores > conf_threshold).squeeze(1)
    cand_scores = scores[candidates]
    # sort by score (descending), then keep the pre-NMS top-k
    order = torch.argsort(cand_scores, descending=True)
    if pre_nms_topk is not None:
        order = order[:pre_nms_topk]
    candidates, cand_scores = candidates[order], cand_scores[order]

    height, width = int(input_size[0]), int(input_size[1])
    sel_priors = priors[candidates]
    sx, sy = (scale, scale) if isinstance(scale, (int, float)) else (float(scale[0]), float(scale[1]))
    box_scale = loc.new_tensor([width, height, width, height])
    boxes = box_coder.decode_boxes(loc[candidates], sel_priors) * box_scale
    points = box_coder.decode_landmarks(landms[candidates], sel_priors) * box_scale[:2].repeat(5)
    if (sx, sy) != (1.0, 1.0):
        boxes = boxes / loc.new_tensor([sx, sy, sx, sy])
        points = points / loc.new_tensor([sx, sy]).repeat(5)

    keep = nms_keep(boxes, cand_scores, nms_threshold, plus_one=plus_one_nms)
    if post_nms_topk is not None:
        keep = keep[:post_nms_topk]
    return torch.cat([boxes[keep], cand_scores[keep, None], points[keep]], dim=1)


def postprocess_batch(loc: torch.Tensor, conf: torch.Tensor, landms: torch.Tensor,
                      priors: torch.Tensor, box_coder: BoxCoder, input_size: Sequence[int],
                      scales: Sequence[float | Sequence[float]], **kwargs) -> List[torch.Tensor]:
    """:func:`postprocess_image` for every image of a batch sharing one input size."""
    return [postprocess_image(loc[i], conf[i], landms[i], priors, box_coder, input_size, scales[i], **kwargs)
            for i in range(loc.shape[0])]
