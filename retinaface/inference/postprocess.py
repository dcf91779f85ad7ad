"""Post-processing: raw head outputs -> per-image detections (threshold, top-k, decode, NMS).

Owns :class:`PostProcessor` (the Detector's eager path) and :class:`DecodedRetinaFace` (the same
decoding as a traceable graph, for export with ``--with-postprocess``; NMS stays outside there).

Only the candidates above the score threshold are decoded, so the cost depends on how many faces
the model believes in, not on the prior count. NMS is greedy with ``torchvision.ops.nms``'s
arithmetic; the reference's "+1 pixel" convention (areas and intersections use x2 - x1 + 1) is
obtained by giving NMS boxes whose x2 and y2 are shifted by +1, which yields the same IoU.
Selection, decoding and NMS run in the compiled kernels (``_detect_kernels.c``) where they are
built, in NumPy and ``torchvision.ops.nms`` otherwise, with the same results bit for bit.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torchvision.ops import nms

from ..box_coder import BoxCoder, torch_exp
from ..conventions import (BOX_VARIANCES, CONF_THRESHOLD, DET_BOX, DET_SCORE, DETECTION_COLUMNS, NMS_THRESHOLD,
                          POST_NMS_TOPK, PRE_NMS_TOPK)
from ..priors import pixel_priors
from .transform import Scale, scale_factors, to_original_pixels


try:  # compiled by setup.py where a C compiler is found; otherwise the NumPy / torchvision paths below
    from .. import _detect_kernels as _kernels
except ImportError:  # pragma: no cover - exercised by tests that set it to None
    _kernels = None


def top_candidates(conf: np.ndarray, threshold: float, limit: Optional[int] = None) -> np.ndarray:
    """Indices of the priors whose face score ``conf[:, 1]`` is above ``threshold`` (compared in
    float32), by decreasing score, equal scores lower index first (a stable sort), at most
    ``limit`` of them (``None``: all). ``conf`` is ``(P, 2)`` float32 on the host."""
    conf = np.ascontiguousarray(conf, dtype=np.float32)
    if _kernels is not None and conf.ndim == 2:
        out = np.empty(len(conf), dtype=np.int64)
        found = _kernels.top_candidates(conf, 1, conf.shape[1], len(conf), float(threshold),
                                        -1 if limit is None else int(limit), out)
        return out[:found]
    scores = conf[:, 1]
    candidates = np.flatnonzero(scores > np.float32(threshold))
    order = np.argsort(-scores[candidates], kind="stable")  # negation is exact
    return candidates[order[:limit]]


# torchvision's NMS sorts by score itself; distinct ranks make it visit the rows in their order
_MAX_RANKED_ROWS = 1 << 24  # float32 counts exactly up to here


def nms_in_order(rows: np.ndarray, iou_threshold: float, plus_one: bool = True) -> np.ndarray:
    """Indices (increasing) of the rows greedy NMS keeps, visiting ``rows`` in their order (the
    highest score first). Columns 0-3 of ``rows (N, C)`` are the boxes ``x1 y1 x2 y2``; the
    arithmetic is ``torchvision.ops.nms``'s in float32 (an IoU above ``iou_threshold`` suppresses),
    with x2 and y2 shifted by +1 first for the reference's +1 pixel convention (``plus_one``)."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    count = len(rows)
    if _kernels is not None:
        keep = np.empty(count, dtype=np.int64)
        kept = _kernels.nms(rows, rows.shape[1], count, 1.0 if plus_one else 0.0, float(iou_threshold), keep)
        return keep[:kept]
    if count > _MAX_RANKED_ROWS:
        raise ValueError(f"NMS of {count} boxes: at most {_MAX_RANKED_ROWS} without the compiled kernels")
    boxes = rows[:, :4].copy()
    if plus_one:
        boxes[:, 2:] += 1
    # ranks, not scores: the visit order is then the rows' order whatever a sort does with equal scores
    ranks = np.arange(count, 0, -1, dtype=np.float32)
    return nms(torch.from_numpy(boxes), torch.from_numpy(ranks), iou_threshold).numpy()


def nms_keep(boxes, scores, iou_threshold: float, plus_one: bool = True):
    """Indices kept by greedy NMS of ``boxes (N, 4)`` / ``scores (N,)``, visited by decreasing
    score, equal scores lower index first; tensors in, a tensor out (on their device), or NumPy
    arrays in, an array out. Computed in float32 on the host (:func:`nms_in_order`)."""
    as_tensor = isinstance(boxes, torch.Tensor)
    if as_tensor:
        device = boxes.device
        boxes, scores = (_host_array(t) for t in (boxes, scores))
    scores = np.asarray(scores, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")
    keep = order[nms_in_order(np.asarray(boxes, dtype=np.float32)[order], iou_threshold, plus_one)]
    return torch.from_numpy(keep).to(device) if as_tensor else keep


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
    variances: Tuple[float, float] = BOX_VARIANCES

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

        It runs on the host, in the compiled kernels where they are built (``setup.py``;
        :func:`top_candidates`, :meth:`decode`, :func:`nms_in_order`) and otherwise in NumPy and
        ``torchvision.ops.nms``, with the same results. Right after a forward pass these few
        hundred candidates cost little work but much cache and branch-predictor warm-up, which the
        kernels mostly avoid (docs/edge.md). On a GPU the threshold runs there first, so only the
        candidates are copied to the host.
        """
        if conf.device.type != "cpu":   # only the candidates cross to the host
            loc, conf, landms, priors = self.candidates_only(loc, conf, landms, priors)
        conf = _host_array(conf)
        candidates = top_candidates(conf, self.conf_threshold, self.pre_nms_topk)
        detections = self.decode(_host_array(loc), conf, _host_array(landms), _host_array(priors), candidates,
                                 input_size, scale)
        keep = nms_in_order(detections, self.nms_threshold, plus_one=self.plus_one_nms)
        if self.post_nms_topk is not None:
            keep = keep[:self.post_nms_topk]
        return torch.from_numpy(detections[keep])

    def decode(self, loc: np.ndarray, conf: np.ndarray, landms: np.ndarray, priors: np.ndarray,
               candidates: np.ndarray, input_size: Sequence[int], scale: Scale = 1.0) -> np.ndarray:
        """Detections ``(N, 15)`` of the ``candidates`` (prior indices), in their order: the boxes and
        landmarks decoded by :class:`BoxCoder` and divided by ``scale``, with their scores. Host
        float32 arrays in; the compiled kernel where it is built, the same arithmetic in NumPy
        otherwise (both take torch's ``exp``)."""
        height, width = int(input_size[0]), int(input_size[1])
        if _kernels is not None:
            # exp of the size offsets in torch (the reference's rounding); the rest in one C loop
            sizes = torch_exp(loc[candidates, 2:] * np.float32(self.variances[1]))
            detections = np.empty((len(candidates), DETECTION_COLUMNS), dtype=np.float32)
            arrays = (np.ascontiguousarray(a, dtype=np.float32) for a in (loc, conf, landms, priors))
            _kernels.decode(*arrays, np.ascontiguousarray(candidates, dtype=np.int64), sizes,
                            self.variances[0], width, height, *scale_factors(scale), detections)
            return detections
        sel_priors = priors[candidates]
        coder = self.box_coder
        box_scale = np.array([width, height, width, height], dtype=np.float32)
        boxes = coder.decode_boxes(loc[candidates], sel_priors) * box_scale
        points = coder.decode_landmarks(landms[candidates], sel_priors) * np.tile(box_scale[:2], 5)
        boxes, points = to_original_pixels(boxes, points, scale)
        return np.concatenate([boxes, conf[candidates, 1:2], points], axis=1)

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


__all__ = ["DecodedRetinaFace", "PostProcessor", "nms_in_order", "nms_keep", "top_candidates"]
