"""Box and landmark coding against priors: ``encode`` and ``decode`` are exact inverses.

Priors are ``(cx, cy, w, h)``; boxes are corner form ``(x1, y1, x2, y2)``; landmarks are ``(..., 2k)``
flat ``x, y`` pairs; all in the same (normalized) units. With variances ``(v0, v1)``:
centre offset / (v0 * prior size), log(size / prior size) / v1; landmark offset / (v0 * prior size).
Every function works on any leading batch shape that broadcasts against the priors. Decoding also
takes NumPy arrays (the Detector's host-side post-processing) with the same arithmetic, in the
same order.
"""
from __future__ import annotations

from typing import Sequence, Tuple, TypeVar, Union

import numpy as np
import torch

from .conventions import BOX_VARIANCES

Array = TypeVar("Array", torch.Tensor, np.ndarray)

DEFAULT_VARIANCES: Tuple[float, float] = BOX_VARIANCES  # the earlier name, kept


class BoxCoder:
    """Encodes targets into regression offsets for training and decodes predictions at inference."""

    def __init__(self, variances: Sequence[float] = BOX_VARIANCES) -> None:
        self.variances = (float(variances[0]), float(variances[1]))

    def encode_boxes(self, boxes: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
        v0, v1 = self.variances
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2
        size = boxes[..., 2:] - boxes[..., :2]
        offset = (centre - priors[..., :2]) / (v0 * priors[..., 2:])
        scale = torch.log(size / priors[..., 2:]) / v1
        return torch.cat([offset, scale], dim=-1)

    def decode_boxes(self, deltas: Array, priors: Array) -> Array:
        v0, v1 = self.variances
        centre = priors[..., :2] + deltas[..., :2] * v0 * priors[..., 2:]
        size = priors[..., 2:] * torch_exp(deltas[..., 2:] * v1)
        top_left = centre - size / 2
        return _cat([top_left, top_left + size])

    def encode_landmarks(self, landmarks: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
        v0 = self.variances[0]
        points = landmarks.reshape(*landmarks.shape[:-1], landmarks.shape[-1] // 2, 2)
        encoded = (points - priors[..., None, :2]) / (v0 * priors[..., None, 2:])
        return encoded.reshape(landmarks.shape)

    def decode_landmarks(self, deltas: Array, priors: Array) -> Array:
        v0 = self.variances[0]
        offsets = deltas.reshape(*deltas.shape[:-1], deltas.shape[-1] // 2, 2)
        points = priors[..., None, :2] + offsets * v0 * priors[..., None, 2:]
        return points.reshape(deltas.shape)


def torch_exp(values: Union[torch.Tensor, np.ndarray]):
    """``torch.exp`` of a tensor or a NumPy array (an array comes back)."""
    # torch's exp for arrays too: NumPy's float32 exp differs from it in the last bit, and torch's
    # is what the reference decodes with (its detections are reproduced bit for bit)
    if isinstance(values, np.ndarray):
        return torch.exp(torch.from_numpy(np.ascontiguousarray(values))).numpy()
    return torch.exp(values)


def _cat(parts):
    """Concatenation along the last axis, for tensors or arrays."""
    return np.concatenate(parts, axis=-1) if isinstance(parts[0], np.ndarray) else torch.cat(parts, dim=-1)
