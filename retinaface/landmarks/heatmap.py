"""The score-map + offset encoding of dense landmarks (PIPNet: Jin, Liao and Shao, "Pixel-in-Pixel
Net: Towards Efficient Facial Landmark Detection in the Wild", IJCV 2021) and its exact inverse.

A network's last feature map (stride 32: a 256 px crop gives 8 x 8 cells) predicts per point ``k``

* a **score map** ``(H, W)``: which cell holds the point;
* **offsets** ``x, y`` inside that cell, in cell units (0 to 1 within the cell);
* **neighbour offsets**: the positions of the point's ``N`` nearest neighbours on the mean face
  (:func:`nearest_neighbours`), relative to the same cell, in cell units.

Coordinates are the landmark networks' normalised crop coordinates (0 and 1 are the crop's edges,
:mod:`~retinaface.landmarks.crop`), so cell ``(col, row)`` spans ``[col / W, (col + 1) / W) x
[row / H, (row + 1) / H)`` and a point ``p`` lies in cell ``floor(p * (W, H))`` at offset
``p * (W, H) - (col, row)``. A point outside the crop (augmentation moves some there) takes the
nearest border cell and an offset outside ``[0, 1)``, so decoding stays exact for it too.

Decoding (:func:`decode_points`) takes each score map's highest cell, adds its offsets, and
averages the point's own estimate with the votes of every point that has it as a neighbour (each
point has ``N`` neighbours but is a neighbour of a varying number of points; every vote counts
once). :func:`encode_points` builds the output a perfect network would give, so
``decode_points(encode_points(p)) == p`` up to float rounding: no cell quantisation is left.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F


class HeatmapOutput(NamedTuple):
    """A heatmap network's raw maps: ``scores``, ``offset_x``, ``offset_y`` ``(B, K, H, W)``;
    ``neighbour_x``, ``neighbour_y`` ``(B, K, N, H, W)`` (point ``k``'s ``n``-th neighbour)."""

    scores: torch.Tensor
    offset_x: torch.Tensor
    offset_y: torch.Tensor
    neighbour_x: torch.Tensor
    neighbour_y: torch.Tensor


def split_head(maps: torch.Tensor, num_points: int, num_neighbours: int) -> HeatmapOutput:
    """A head's ``(B, K * (3 + 2N), H, W)`` output, channels in the order scores, x, y, neighbour
    x, neighbour y, as a :class:`HeatmapOutput`."""
    b, channels, h, w = maps.shape
    k, n = num_points, num_neighbours
    if channels != k * (3 + 2 * n):
        raise RuntimeError(f"heatmap head gave {channels} channels, expected {k} x (3 + 2 x {n})")
    scores, x, y, nx, ny = torch.split(maps, [k, k, k, k * n, k * n], dim=1)
    return HeatmapOutput(scores, x, y, nx.reshape(b, k, n, h, w), ny.reshape(b, k, n, h, w))


def nearest_neighbours(mean_shape: np.ndarray, count: int) -> np.ndarray:
    """``(K, count)`` indices: each point's ``count`` nearest other points of ``mean_shape``
    ``(K, 2)`` by Euclidean distance, nearest first (ties: the lower index first)."""
    shape = np.asarray(mean_shape, dtype=np.float64)
    k = shape.shape[0]
    if shape.ndim != 2 or shape.shape[1] != 2 or not np.all(np.isfinite(shape)):
        raise ValueError(f"mean shape must be finite (K, 2), got {shape.shape}")
    if not 0 <= count < k:
        raise ValueError(f"{count} neighbours asked of {k} points (at most {k - 1})")
    distances = np.linalg.norm(shape[:, None] - shape[None], axis=-1)
    np.fill_diagonal(distances, np.inf)  # a point is not its own neighbour
    return np.argsort(distances, axis=1, kind="stable")[:, :count].astype(np.int64)


def _map_scale(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([float(width), float(height)], dtype=like.dtype, device=like.device)


class CellTargets(NamedTuple):
    """What a perfect network predicts at each point's own cell: the flat ``cell`` index
    ``row * W + col`` ``(B, K)``, the point's ``offset`` in it ``(B, K, 2)`` and its neighbours'
    offsets from it, ``neighbour`` ``(B, K, N, 2)`` (cell units, x then y)."""

    cell: torch.Tensor
    offset: torch.Tensor
    neighbour: torch.Tensor


def cell_targets(points: torch.Tensor, neighbour_index: torch.Tensor, height: int, width: int) -> CellTargets:
    """The :class:`CellTargets` of normalised ``points`` ``(B, K, 2)`` on an ``H x W`` map, with the
    neighbours of ``neighbour_index`` ``(K, N)`` (border cells for points outside the crop)."""
    scaled = points * _map_scale(height, width, points)
    upper = torch.tensor([width - 1, height - 1], device=points.device)
    corner = torch.minimum(torch.floor(scaled).long().clamp_min(0), upper)
    origin = corner.to(points.dtype)
    return CellTargets(corner[..., 1] * width + corner[..., 0], scaled - origin,
                       scaled[:, neighbour_index] - origin[:, :, None])


def score_targets(cell: torch.Tensor, height: int, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(B, K, H, W)`` score maps: 1 at each point's ``cell`` ``(B, K)``, 0 elsewhere."""
    return F.one_hot(cell, height * width).to(dtype).view(*cell.shape, height, width)


def encode_points(points: torch.Tensor, neighbour_index: torch.Tensor, height: int, width: int) -> HeatmapOutput:
    """The maps a perfect network would give for normalised ``points`` ``(B, K, 2)``: score 1 at each
    point's cell and 0 elsewhere, the offsets (own and neighbours', by ``neighbour_index`` ``(K, N)``)
    at that cell and 0 elsewhere."""
    target = cell_targets(points, neighbour_index, height, width)
    scores = score_targets(target.cell, height, width, points.dtype)
    own = scores[..., None] * target.offset[:, :, None, None, :]                     # (B, K, H, W, 2)
    votes = scores[:, :, None, ..., None] * target.neighbour[:, :, :, None, None, :]  # (B, K, N, H, W, 2)
    return HeatmapOutput(scores, own[..., 0], own[..., 1], votes[..., 0], votes[..., 1])


def gather_cells(maps: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """The values of ``maps`` ``(B, K, ..., H, W)`` at each point's ``cell`` ``(B, K)``:
    ``(B, K, ...)``."""
    flat = maps.flatten(-2)
    index = cell.view(*cell.shape, *([1] * (flat.dim() - 2))).expand(*flat.shape[:-1], 1)
    return flat.gather(-1, index).squeeze(-1)


def decode_points(outputs: HeatmapOutput, neighbour_index: torch.Tensor) -> torch.Tensor:
    """Normalised points ``(B, K, 2)``: each score map's highest cell plus its offsets, averaged with
    the neighbour votes for the point (module docstring). Traceable: no host reads."""
    b, k, h, w = outputs.scores.shape
    dtype = outputs.offset_x.dtype
    cell = outputs.scores.flatten(2).argmax(dim=2)
    origin = torch.stack([cell % w, torch.div(cell, w, rounding_mode="floor")], dim=-1).to(dtype)
    scale = _map_scale(h, w, origin)
    own = origin + torch.stack([gather_cells(outputs.offset_x, cell), gather_cells(outputs.offset_y, cell)], -1)
    votes = origin[:, :, None] + torch.stack([gather_cells(outputs.neighbour_x, cell),
                                              gather_cells(outputs.neighbour_y, cell)], -1)  # (B, K, N, 2)
    # (K * N, K): row i * N + n is 1 at the point that vote (i, n) is for
    voted_for = F.one_hot(neighbour_index.reshape(-1), k).to(dtype)
    total = own + torch.einsum("bvc,vk->bkc", votes.reshape(b, -1, 2), voted_for)
    count = 1.0 + voted_for.sum(dim=0)
    return total / count[None, :, None] / scale
