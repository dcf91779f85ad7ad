"""Anchor priors: the one place that knows where RetinaFace's anchors sit.

For every feature stride ``s`` with its list of square anchor sizes, an ``H x W`` input has a
``ceil(H/s) x ceil(W/s)`` grid; priors run level by level, rows top to bottom, columns left to right,
then anchor size, each ``(cx, cy, w, h)`` normalized by the input width and height (no clipping).
This is the order of the reference implementation and of the model's head outputs.

Two builders of the same layout: :func:`generate_priors` (normalized, cached by
:class:`PriorGenerator`, used by training and the Detector) and :func:`pixel_priors` (pixel units,
built only from ops that tracing records with the input's size as a variable, used by the exported
decoding graph).
"""
from __future__ import annotations

import math
import threading
from typing import Dict, Sequence, Tuple, Union

import torch

from .conventions import FEATURE_STRIDES, PRIOR_MIN_SIZES

# the earlier names of the conventions' anchor sizes and strides, kept
DEFAULT_MIN_SIZES: Tuple[Tuple[int, ...], ...] = PRIOR_MIN_SIZES
DEFAULT_STEPS: Tuple[int, ...] = FEATURE_STRIDES


def feature_map_sizes(height: int, width: int, steps: Sequence[int]) -> list:
    """``(ceil(H/s), ceil(W/s))`` for each stride."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in steps]


def num_priors(height: int, width: int, min_sizes: Sequence[Sequence[int]] = PRIOR_MIN_SIZES,
               steps: Sequence[int] = FEATURE_STRIDES) -> int:
    """How many priors an ``height x width`` input has."""
    return sum(fh * fw * len(sizes)
               for (fh, fw), sizes in zip(feature_map_sizes(height, width, steps), min_sizes))


def generate_priors(height: int, width: int,
                    min_sizes: Sequence[Sequence[int]] = PRIOR_MIN_SIZES,
                    steps: Sequence[int] = FEATURE_STRIDES,
                    device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Priors of an ``height x width`` input as a ``(P, 4)`` tensor of ``(cx, cy, w, h)`` in [0, 1]."""
    if len(min_sizes) != len(steps):
        raise ValueError(f"min_sizes has {len(min_sizes)} levels but steps has {len(steps)}")
    levels = []
    for (fh, fw), sizes, step in zip(feature_map_sizes(height, width, steps), min_sizes, steps):
        # computed in float64 then cast, so the values equal the reference's Python floats
        cy = (torch.arange(fh, dtype=torch.float64) + 0.5) * step / height
        cx = (torch.arange(fw, dtype=torch.float64) + 0.5) * step / width
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")
        k = len(sizes)
        sizes_t = torch.tensor(sizes, dtype=torch.float64)
        level = torch.stack([
            cx[..., None].expand(fh, fw, k),
            cy[..., None].expand(fh, fw, k),
            (sizes_t / width).expand(fh, fw, k),
            (sizes_t / height).expand(fh, fw, k),
        ], dim=-1)
        levels.append(level.reshape(-1, 4))
    return torch.cat(levels).to(device=device, dtype=dtype)


def pixel_priors(images: torch.Tensor, min_sizes: Sequence[Union[Sequence[int], torch.Tensor]],
                 steps: Sequence[int]) -> torch.Tensor:
    """Priors ``(P, 4)`` as ``(cx, cy, w, h)`` in pixels of ``images``' height and width.

    ``images`` is ``(B, C, H, W)``; the result equals :func:`generate_priors` times
    ``(W, H, W, H)`` (same order and ``ceil(H/s) x ceil(W/s)`` grids), but is built only from ops
    that tracing and ``torch.export`` record with the input's size and device as variables, so an
    exported graph follows the input size. ``min_sizes`` may hold tensors (buffers, which follow
    the module's device), else they become constants.
    """
    # 0..H-1 and 0..W-1 derived from the input itself: a trace records arange's device (and
    # tensor.to's) as a constant, which would pin a TorchScript file to the export device
    rows = torch.ones_like(images[0, 0, :, 0]).cumsum(0) - 1
    cols = torch.ones_like(images[0, 0, 0, :]).cumsum(0) - 1
    levels = []
    for sizes, step in zip(min_sizes, steps):
        # every step-th index: ceil(H/s) cells, at (i + 0.5) * s
        cy = rows[::step] + step / 2
        cx = cols[::step] + step / 2
        anchor = sizes if isinstance(sizes, torch.Tensor) else torch.tensor(
            [float(s) for s in sizes], dtype=images.dtype, device=images.device)
        # (rows, cols, anchors) grids: row-major, then anchor size, as the heads emit them
        gx, gy, gs = torch.broadcast_tensors(cx.view(1, -1, 1), cy.view(-1, 1, 1), anchor.view(1, 1, -1))
        levels.append(torch.stack([gx, gy, gs, gs], dim=-1).reshape(-1, 4))
    return torch.cat(levels)


class PriorGenerator:
    """Generates priors and caches them per ``(height, width, device, dtype)``.

    Inference sees the same input sizes again and again; the cache makes the prior cost zero after
    the first image of a size. The cache is bounded (least recently added entries are dropped) and
    safe to share between threads.
    """

    def __init__(self, min_sizes: Sequence[Sequence[int]] = PRIOR_MIN_SIZES,
                 steps: Sequence[int] = FEATURE_STRIDES, max_cache: int = 64) -> None:
        self.min_sizes = tuple(tuple(int(v) for v in level) for level in min_sizes)
        self.steps = tuple(int(s) for s in steps)
        self.max_cache = max_cache
        self._cache: Dict[tuple, torch.Tensor] = {}
        self._lock = threading.Lock()

    def __call__(self, height: int, width: int, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        key = (int(height), int(width), str(torch.device(device or "cpu")), dtype)
        priors = self._cache.get(key)
        if priors is None:
            priors = generate_priors(height, width, self.min_sizes, self.steps, device, dtype)
            with self._lock:  # eviction iterates the dict: no other thread may change it meanwhile
                if key not in self._cache and len(self._cache) >= self.max_cache:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = priors
        return priors

    def count(self, height: int, width: int) -> int:
        """How many priors an ``height x width`` input has."""
        return num_priors(height, width, self.min_sizes, self.steps)
