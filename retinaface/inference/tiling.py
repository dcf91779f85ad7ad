"""Tiled detection for large images with small faces (``--tile SIZE --overlap PX``).

Downscaling a 4000x3000 photo to the network's size shrinks a 10-pixel face to 2 pixels, below the
smallest anchor (16 px); running the network on the full image costs memory and time in one piece.
:func:`detect_tiled` cuts the image into ``size x size`` tiles that overlap by ``overlap`` pixels,
runs them through the detector in batches (every tile has the same shape, so they stack into one
forward without padding, except edge tiles that are padded to the tile size), shifts each tile's
detections back to image coordinates and merges them with one NMS over all tiles (the
post-processor's settings: threshold, IoU, +1 pixel convention, post-NMS cap).

A face no larger than ``overlap`` is whole in some tile: a face cut by a tile border is found
(complete) in the neighbouring tile that holds it, and the cut tile's partial box is dropped. Larger
faces can be cut by every tile; the pyramid (the image again at half, quarter, ... resolution, down
to the whole image in one tile, every level's detections in the one NMS) finds each at the level
where it is 0.5-1x ``overlap`` pixels. Without it, ``--tile 640`` on a WIDER photo upscaled 3x kept
1 face of the 8 the whole photo gives.
"""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import numpy as np

from ..conventions import BGR_MEAN, DET_BOX, DET_LANDMARKS, DETECTION_COLUMNS, NUM_LANDMARKS, TILE_OVERLAP


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
    out[:, DET_LANDMARKS] += np.tile(np.array([dx, dy], dtype=out.dtype), NUM_LANDMARKS)
    return out


def merge_detections(detections: np.ndarray, nms_threshold: float, plus_one: bool = True,
                     post_nms_topk: Any = None) -> np.ndarray:
    """One greedy NMS over pooled ``(N, 15)`` detections (:meth:`PostProcessor.merge`), sorted by score."""
    # lazy: the tile geometry needs neither torch nor torchvision
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


def pyramid_levels(height: int, width: int, size: int) -> List[Tuple[int, int]]:
    """``(height, width)`` of each level of the tiling pyramid: the image, then halved again and
    again until it fits one ``size x size`` tile (that last level is the downscaled whole image)."""
    levels = [(height, width)]
    while max(levels[-1]) > size:
        h, w = levels[-1]
        levels.append((max(1, int(round(h / 2))), max(1, int(round(w / 2)))))
    return levels


def detect_tiled(detector: Any, image: np.ndarray, size: int = 640, overlap: int = TILE_OVERLAP,
                 batch_size: int = 4, pyramid: bool = True) -> np.ndarray:
    """Detections ``(N, 15)`` of a BGR uint8 ``image`` found tile by tile and merged.

    ``detector`` is a :class:`retinaface.Detector` (any runtime; a fixed-shape export must have
    been exported at ``size x size``). Edge tiles smaller than ``size`` are padded bottom-right
    with the mean colour, so all tiles share one shape and batch together. An image no larger
    than one tile is detected directly.

    With ``pyramid`` (the default) the image is also tiled at half, quarter, ... resolution, down
    to the whole image in one tile, and every level's detections go into the one NMS. A face larger
    than ``overlap`` can be cut by every full-resolution tile (its cut boxes are dropped); at the
    level where it is between ``overlap / 2`` and ``overlap`` pixels it is whole in some tile and
    large enough for the network (with the default 64: 32-64 px, above the 16 and 32 px anchors),
    so tiling finds the faces a whole-image pass finds. The levels add a third to the tiles' pixels.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) BGR image, got shape {getattr(image, 'shape', None)}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        return np.zeros((0, DETECTION_COLUMNS), dtype=np.float32)
    if len(tile_grid(height, width, size, overlap)) == 1:
        return detector.detect(image)
    import cv2  # only tiled images are resized: the tile geometry above needs no OpenCV

    # edge tiles are padded to the tile size with the mean colour (zero after mean subtraction),
    # as the detector's own batching pads
    mean = np.array(BGR_MEAN, dtype=np.float32).round().astype(np.uint8)
    levels = pyramid_levels(height, width, size) if pyramid else [(height, width)]
    pooled = []
    for level_height, level_width in levels:
        level = image if (level_height, level_width) == (height, width) else \
            cv2.resize(image, (level_width, level_height), interpolation=cv2.INTER_AREA)
        grid = tile_grid(level_height, level_width, size, overlap)
        kept, cut = _detect_windows(detector, level, grid, size, mean, batch_size)
        if pyramid and cut:
            # a face cut by every tile holding part of it: detect again in a tile centred on it
            kept += _detect_windows(detector, level, _recentred_windows(cut, level_height, level_width, size),
                                    size, mean, batch_size)[0]
        sx, sy = width / level_width, height / level_height
        pooled += [_scale_detections(dets, sx, sy) for dets in kept if len(dets)]
    if not pooled:
        return np.zeros((0, DETECTION_COLUMNS), dtype=np.float32)
    nms_iou, plus_one, topk = _settings(detector)
    return merge_detections(np.concatenate(pooled), nms_iou, plus_one, topk).astype(np.float32)


def _detect_windows(detector: Any, image: np.ndarray, grid: Sequence[Tuple[int, int, int, int]], size: int,
                    mean: np.ndarray, batch_size: int) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Detections of the ``(y0, x0, y1, x1)`` windows of ``image`` (each padded to ``size x size``
    with the mean colour), in ``image`` pixels: ``(kept, cut)``, the boxes whole in their window
    and those cut by a window border inside the image."""
    height, width = image.shape[:2]
    tiles = []
    for y0, x0, y1, x1 in grid:
        tile = image[y0:y1, x0:x1]
        if tile.shape[:2] != (size, size):
            canvas = np.empty((size, size, 3), dtype=np.uint8)
            canvas[:] = mean
            canvas[:tile.shape[0], :tile.shape[1]] = tile
            tile = canvas
        tiles.append(tile)
    kept: List[np.ndarray] = []
    cut: List[np.ndarray] = []
    for (y0, x0, y1, x1), dets in zip(grid, detector.detect_batch(tiles, batch_size=batch_size)):
        if not len(dets):
            continue
        whole = _whole_in_tile(dets, y0, x0, y1, x1, height, width)
        inside = _centred_inside(dets, y0, x0, y1, x1)
        kept.append(shift_detections(dets[whole], x0, y0))
        cut.append(shift_detections(dets[inside & ~whole], x0, y0))
    return kept, [c for c in cut if len(c)]


def _recentred_windows(cut: Sequence[np.ndarray], height: int, width: int, size: int
                       ) -> List[Tuple[int, int, int, int]]:
    """``size x size`` windows centred on faces that tile borders cut, one per face: a cut box's
    full extent is estimated from its uncut side (faces are about as wide as high), and a face
    already inside an earlier window (by score) gets none."""
    boxes = np.concatenate(cut)
    boxes = boxes[np.argsort(-boxes[:, 4], kind="stable")]
    windows: List[Tuple[int, int, int, int]] = []
    for x1, y1, x2, y2 in boxes[:, :4].astype(np.float64):
        side = max(x2 - x1, y2 - y1)
        # grow the cut side to the face's estimated size, away from the box's far edge
        full = (min(x1, x2 - side), min(y1, y2 - side), max(x2, x1 + side), max(y2, y1 + side))
        if any(wx0 <= full[0] and wy0 <= full[1] and full[2] <= wx1 and full[3] <= wy1
               for wy0, wx0, wy1, wx1 in windows):
            continue
        cx, cy = (full[0] + full[2]) / 2, (full[1] + full[3]) / 2
        x0 = int(round(min(max(cx - size / 2, 0), max(width - size, 0))))
        y0 = int(round(min(max(cy - size / 2, 0), max(height - size, 0))))
        windows.append((y0, x0, min(y0 + size, height), min(x0 + size, width)))
    return windows


def _centred_inside(dets: np.ndarray, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """Mask of a tile's detections centred in the image part of the tile (not in its padding)."""
    cx, cy = (dets[:, 0] + dets[:, 2]) / 2, (dets[:, 1] + dets[:, 3]) / 2
    return (cx < x1 - x0) & (cy < y1 - y0)


def _scale_detections(dets: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Detections of a level scaled back to the image's pixels (``x * sx``, ``y * sy``)."""
    if sx == 1.0 and sy == 1.0:
        return dets
    out = dets.copy()
    out[:, DET_BOX] *= np.array([sx, sy, sx, sy], dtype=out.dtype)
    out[:, DET_LANDMARKS] *= np.tile(np.array([sx, sy], dtype=out.dtype), 5)
    return out


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


def detect_tiled_batch(detector: Any, images: Sequence[np.ndarray], size: int = 640, overlap: int = TILE_OVERLAP,
                       batch_size: int = 4, pyramid: bool = True) -> List[np.ndarray]:
    """:func:`detect_tiled` of each image."""
    return [detect_tiled(detector, img, size, overlap, batch_size, pyramid) for img in images]


__all__ = ["detect_tiled", "detect_tiled_batch", "merge_detections", "pyramid_levels", "shift_detections",
           "tile_grid", "tile_origins"]
