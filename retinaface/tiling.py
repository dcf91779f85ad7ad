"""Tiled detection for large images with small faces (``--tile SIZE --overlap PX``).

Downscaling a 4000x3000 photo to the network's size shrinks a 10-pixel face to 2 pixels, below the
smallest anchor (16 px); running the network on the full image costs memory and time in one piece.
:func:`detect_tiled` cuts the image into ``size x size`` tiles that overlap by ``overlap`` pixels,
runs them through the detector in batches (every tile has the same shape, so they stack into one
forward without padding, except edge tiles that are padded to the tile size), shifts each tile's
detections back to image coordinates and merges them with one NMS over all tiles (the
post-processor's settings: threshold, IoU, +1 pixel convention, post-NMS cap).

``overlap`` should be at least the largest face one wants whole in some tile: a face cut by a tile
border is found (complete) in the neighbouring tile that holds it, and the partial detection from
the cut tile is suppressed by NMS or has a lower score.
"""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import numpy as np

from .conventions import DET_BOX, DET_LANDMARKS, DETECTION_COLUMNS


def tile_origins(length: int, size: int, overlap: int) -> List[int]:
    """Start offsets of tiles of ``size`` covering ``[0, length)`` with at least ``overlap`` shared
    pixels between neighbours; the last tile ends at ``length`` (one tile if ``length <= size``)."""
    if size < 32:
        raise ValueError(f"tile size must be >= 32 pixels, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, tile size {size}), got {overlap}")
    if length <= size:
        return [0]
    stride = size - overlap
    count = int(np.ceil((length - size) / stride)) + 1
    # spread the tiles evenly so every overlap is >= the asked one, the last flush with the edge
    return [int(round(i * (length - size) / (count - 1))) for i in range(count)]


def tile_grid(height: int, width: int, size: int, overlap: int) -> List[Tuple[int, int, int, int]]:
    """``(y0, x0, y1, x1)`` of every tile, row by row."""
    ys, xs = tile_origins(height, size, overlap), tile_origins(width, size, overlap)
    return [(y, x, min(y + size, height), min(x + size, width)) for y in ys for x in xs]


def shift_detections(dets: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``(N, 15)`` detections of a tile whose top-left corner is at ``(dx, dy)``, in image pixels."""
    out = dets.copy()
    out[:, DET_BOX] += np.array([dx, dy, dx, dy], dtype=out.dtype)
    out[:, DET_LANDMARKS] += np.tile(np.array([dx, dy], dtype=out.dtype), 5)
    return out


def merge_detections(detections: np.ndarray, nms_threshold: float, plus_one: bool = True,
                     post_nms_topk: Any = None) -> np.ndarray:
    """One greedy NMS over pooled ``(N, 15)`` detections (:meth:`PostProcessor.merge`), sorted by score."""
    import torch

    from .postprocess import PostProcessor

    if not len(detections):
        return detections
    merger = PostProcessor(nms_threshold=nms_threshold, plus_one_nms=plus_one, post_nms_topk=post_nms_topk)
    return merger.merge(torch.from_numpy(np.ascontiguousarray(detections))).numpy()


def _settings(detector: Any) -> Tuple[float, bool, Any]:
    """NMS IoU, +1 convention and post-NMS cap of ``detector`` (its post-processor's, if it has one)."""
    post = getattr(detector, "postprocessor", None) or detector
    return (float(getattr(post, "nms_threshold")), bool(getattr(post, "plus_one_nms", True)),
            getattr(post, "post_nms_topk", None))


def detect_tiled(detector: Any, image: np.ndarray, size: int = 640, overlap: int = 64,
                 batch_size: int = 4) -> np.ndarray:
    """Detections ``(N, 15)`` of a BGR uint8 ``image`` found tile by tile and merged.

    ``detector`` is a :class:`retinaface.Detector` (any runtime; a fixed-shape export must have
    been exported at ``size x size``). Edge tiles smaller than ``size`` are padded bottom-right
    with the mean colour, so all tiles share one shape and batch together. An image no larger
    than one tile is detected directly.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) BGR image, got shape {getattr(image, 'shape', None)}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        return np.zeros((0, DETECTION_COLUMNS), dtype=np.float32)
    grid = tile_grid(height, width, size, overlap)
    if len(grid) == 1:
        return detector.detect(image)
    # edge tiles are padded to the tile size with the mean colour (zero after mean subtraction),
    # as the detector's own batching pads
    from .conventions import BGR_MEAN

    mean = np.array(BGR_MEAN, dtype=np.float32).round().astype(np.uint8)
    tiles = []
    for y0, x0, y1, x1 in grid:
        tile = image[y0:y1, x0:x1]
        if tile.shape[:2] != (size, size):
            canvas = np.empty((size, size, 3), dtype=np.uint8)
            canvas[:] = mean
            canvas[:tile.shape[0], :tile.shape[1]] = tile
            tile = canvas
        tiles.append(tile)
    pooled = []
    results = detector.detect_batch(tiles, batch_size=batch_size)
    for (y0, x0, y1, x1), dets in zip(grid, results):
        if len(dets):
            pooled.append(shift_detections(dets[_whole_in_tile(dets, y0, x0, y1, x1, height, width)], x0, y0))
    if not pooled:
        return np.zeros((0, DETECTION_COLUMNS), dtype=np.float32)
    nms_iou, plus_one, topk = _settings(detector)
    return merge_detections(np.concatenate(pooled), nms_iou, plus_one, topk).astype(np.float32)


# a box this close (px) to a tile border inside the image was cut by it
CUT_MARGIN = 2.0


def _whole_in_tile(dets: np.ndarray, y0: int, x0: int, y1: int, x1: int, height: int, width: int
                   ) -> np.ndarray:
    """Mask of a tile's detections (tile pixels) to keep: not centred in the padding, and not cut
    by a tile border that lies inside the image (the neighbouring tile, overlapping it, holds that
    face whole when it is smaller than the overlap; a cut face's box is truncated)."""
    bx1, by1, bx2, by2 = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3]
    cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
    keep = (cx < x1 - x0) & (cy < y1 - y0)
    if x0 > 0:
        keep &= bx1 > CUT_MARGIN
    if y0 > 0:
        keep &= by1 > CUT_MARGIN
    if x1 < width:
        keep &= bx2 < (x1 - x0) - CUT_MARGIN
    if y1 < height:
        keep &= by2 < (y1 - y0) - CUT_MARGIN
    return keep


def detect_tiled_batch(detector: Any, images: Sequence[np.ndarray], size: int = 640, overlap: int = 64,
                       batch_size: int = 4) -> List[np.ndarray]:
    """:func:`detect_tiled` of each image."""
    return [detect_tiled(detector, img, size, overlap, batch_size) for img in images]


__all__ = ["detect_tiled", "detect_tiled_batch", "merge_detections", "shift_detections", "tile_grid",
           "tile_origins"]
