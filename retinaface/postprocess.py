"""Post-processing: raw head outputs -> per-image detections (threshold, top-k, decode, NMS).

Owns :class:`PostProcessor` (the Detector's eager path) and :class:`DecodedRetinaFace` (the same
decoding as a traceable graph, for export with ``--with-postprocess``; NMS stays outside there).

Only the candidates above the score threshold are decoded, so the cost depends on how many faces
the model believes in, not on the prior count. NMS is ``torchvision.ops.nms``; the reference's
"+1 pixel" convention (areas and intersections use x2 - x1 + 1) is obtained by giving NMS boxes whose
x2 and y2 are shifted by +1, which yields the same IoU.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torchvision.ops import nms

from .box_coder import BoxCoder
from .conventions import CONF_THRESHOLD, DET_BOX, DET_SCORE, NMS_THRESHOLD, POST_NMS_TOPK, PRE_NMS_TOPK
from .priors import pixel_priors
from .transform import Scale, to_original_pixels


def nms_keep(boxes, scores, iou_threshold: float, plus_one: bool = True):
    """Indices kept by greedy NMS of ``boxes (N, 4)`` / ``scores (N,)``, in decreasing score order;
    tensors in, a tensor out, or NumPy arrays in, an array out."""
    as_numpy = isinstance(boxes, np.ndarray)
    if plus_one:
        if as_numpy:
            boxes = boxes.copy()
            boxes[:, 2:] += 1
        else:
            boxes = torch.cat([boxes[:, :2], boxes[:, 2:] + 1], dim=1)
    if as_numpy:
        return nms(torch.from_numpy(np.ascontiguousarray(boxes)), torch.from_numpy(np.ascontiguousarray(scores)),
                   iou_threshold).numpy()
    return nms(boxes, scores, iou_threshold)


def _host_array(values: torch.Tensor) -> np.ndarray:
    """``values`` as a float32 NumPy array on the host (a view of a CPU float32 tensor)."""
    return values.detach().to("cpu", torch.float32).numpy()


def _check_topk(name: str, value: Optional[int]) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class PostProcessor:
    """Threshold, top-k, decode and NMS of one image's head outputs.

    Defaults are the reference demo's (``retinaface.conventions``): score > 0.02, the top 5000
    candidates decoded, NMS at IoU 0.4 with the +1 pixel convention (``plus_one_nms``), the top 750
    kept; ``None`` for a top-k means no cap. Immutable, so one instance may serve several threads.
    """

    conf_threshold: float = CONF_THRESHOLD
    nms_threshold: float = NMS_THRESHOLD
    pre_nms_topk: Optional[int] = PRE_NMS_TOPK
    post_nms_topk: Optional[int] = POST_NMS_TOPK
    plus_one_nms: bool = True
    variances: Tuple[float, float] = (0.1, 0.2)

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf_threshold < 1.0:
            raise ValueError(f"conf_threshold must be in [0, 1), got {self.conf_threshold}")
        if not 0.0 < self.nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold must be in (0, 1], got {self.nms_threshold}")
        _check_topk("pre_nms_topk", self.pre_nms_topk)
        _check_topk("post_nms_topk", self.post_nms_topk)
        object.__setattr__(self, "variances", (float(self.variances[0]), float(self.variances[1])))

    @classmethod
    def for_model(cls, model: nn.Module, **settings) -> "PostProcessor":
        """A post-processor with ``model.config``'s variances and the given settings."""
        return cls(variances=tuple(model.config.variances), **settings)

    def replace(self, **changes) -> "PostProcessor":
        """A copy with some fields changed (this one is left as it is)."""
        return dataclasses.replace(self, **changes)

    @property
    def box_coder(self) -> BoxCoder:
        return BoxCoder(self.variances)

    def __call__(self, loc: torch.Tensor, conf: torch.Tensor, landms: torch.Tensor, priors: torch.Tensor,
                 input_size: Sequence[int], scale: Scale = 1.0) -> torch.Tensor:
        """Detections ``(N, 15)`` of one image from ``loc (P, 4)``, ``conf (P, 2)``, ``landms (P, 10)``.

        ``priors`` are the normalized ``(P, 4)`` priors of the network input ``input_size``
        ``(height, width)``. Coordinates are divided by ``scale`` (the transform's resize factor)
        before NMS, as the reference does, so they come out in the original image's pixels. Rows
        are sorted by decreasing score (equal scores: lower prior index first). A CPU float32
        tensor comes back.

        It runs on the host in NumPy: the threshold, the sort and the decoding of a few hundred
        candidates are ~25 small array operations, each cheaper than a torch call (a scratch A/B
        inside ``Detector.detect`` while writing it, not kept: 0.04-0.1 ms less per image than the
        same steps in torch ops). NMS stays ``torchvision.ops.nms``. On a GPU the threshold runs
        there first, so only the candidates are copied to the host.
        """
        if conf.device.type != "cpu":   # only the candidates cross to the host
            loc, conf, landms, priors = self.candidates_only(loc, conf, landms, priors)
        scores = _host_array(conf)[:, 1]
        candidates = np.flatnonzero(scores > self.conf_threshold)
        cand_scores = scores[candidates]
        # descending by score; stable, so equal scores keep the prior order (negation is exact)
        order = np.argsort(-cand_scores, kind="stable")
        if self.pre_nms_topk is not None:
            order = order[:self.pre_nms_topk]
        candidates, cand_scores = candidates[order], cand_scores[order]

        height, width = int(input_size[0]), int(input_size[1])
        sel_priors = _host_array(priors)[candidates]
        coder = self.box_coder
        box_scale = np.array([width, height, width, height], dtype=np.float32)
        boxes = coder.decode_boxes(_host_array(loc)[candidates], sel_priors) * box_scale
        points = coder.decode_landmarks(_host_array(landms)[candidates], sel_priors) * np.tile(box_scale[:2], 5)
        boxes, points = to_original_pixels(boxes, points, scale)

        detections = np.concatenate([boxes, cand_scores[:, None], points], axis=1)
        keep = nms_keep(detections[:, DET_BOX], cand_scores, self.nms_threshold, plus_one=self.plus_one_nms)
        if self.post_nms_topk is not None:
            keep = keep[:self.post_nms_topk]
        return torch.from_numpy(detections[keep])

    def candidates_only(self, loc: torch.Tensor, conf: torch.Tensor, landms: torch.Tensor, priors: torch.Tensor
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows of the priors scoring above the threshold, in prior order, where the tensors
        are (a GPU before the copy to the host); post-processing them gives the same detections."""
        rows = torch.nonzero(conf[:, 1] > self.conf_threshold).squeeze(1)
        return tuple(t.index_select(0, rows) for t in (loc, conf, landms, priors))

    def merge(self, detections: torch.Tensor) -> torch.Tensor:
        """One NMS (and the post-NMS cap) over pooled ``(N, 15)`` detections of several views."""
        if len(detections) == 0:
            return detections
        order = torch.argsort(detections[:, DET_SCORE], descending=True, stable=True)
        detections = detections[order]
        keep = nms_keep(detections[:, DET_BOX], detections[:, DET_SCORE], self.nms_threshold,
                        plus_one=self.plus_one_nms)
        if self.post_nms_topk is not None:
            keep = keep[:self.post_nms_topk]
        return detections[keep]


class DecodedRetinaFace(nn.Module):
    """``model`` followed by prior generation and decoding: boxes, scores, landmarks in input pixels.

    Outputs ``boxes (B, P, 4)``, ``scores (B, P)``, ``landmarks (B, P, 10)`` for an input
    ``(B, 3, H, W)``; no threshold and no NMS (those stay outside an exported graph). Decoding in
    pixel units is the normalized decoding of :class:`BoxCoder` scaled by the input size (the coding
    is linear in the prior's units), without dividing by H and W and multiplying back.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.box_coder = BoxCoder(model.config.variances)
        self.steps = tuple(model.config.steps)
        for i, level in enumerate(model.config.min_sizes):
            self.register_buffer(f"anchor_sizes{i}", torch.tensor(level, dtype=torch.float32),
                                 persistent=False)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loc, conf, landms = self.model(images)
        sizes = [getattr(self, f"anchor_sizes{i}") for i in range(len(self.steps))]
        priors = pixel_priors(images, sizes, self.steps)
        boxes = self.box_coder.decode_boxes(loc, priors)
        landmarks = self.box_coder.decode_landmarks(landms, priors)
        return boxes, conf[..., 1], landmarks


__all__ = ["DecodedRetinaFace", "PostProcessor", "nms_keep"]
