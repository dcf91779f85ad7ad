"""Test-time augmentation: horizontal flip and several test scales merged into one detection set.

Owns :class:`TestTimeAugmentation`, a wrapper with the :class:`~retinaface.Detector` interface
(``detect`` / ``detect_batch``). Every view (scale x flip) runs through the wrapped detector's own
pipeline (threshold, NMS) with no post-NMS cap; the views' detections are mapped back to the
original image, pooled, and reduced by one more NMS with the detector's settings.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch

from .detector import Detector
from .postprocess import nms_keep

# Short-side test sizes of the multi-scale WIDER protocol used with RetinaFace (each still capped
# by the maximum long side).
MULTISCALE_SIZES = (500, 800, 1100, 1400, 1700)

# Landmark order: left eye, right eye, nose, left mouth corner, right mouth corner. A mirrored
# image swaps left and right.
_MIRROR_POINTS = (1, 0, 2, 4, 3)


def unflip_detections(dets: np.ndarray, image_width: int) -> np.ndarray:
    """Map ``(N, 15)`` detections of a horizontally mirrored image back to the original image.

    Pixel ``x`` of the mirror is pixel ``W - 1 - x`` of the original (inclusive-pixel convention, as
    the "+1" box widths assume); left and right landmarks swap names.
    """
    out = dets.copy()
    last = float(image_width - 1)
    out[:, 0] = last - dets[:, 2]
    out[:, 2] = last - dets[:, 0]
    points = dets[:, 5:15].reshape(-1, 5, 2)[:, _MIRROR_POINTS]
    points[..., 0] = last - points[..., 0]
    out[:, 5:15] = points.reshape(-1, 10)
    return out


class TestTimeAugmentation:
    """Detections merged over test sizes and an optional horizontal flip.

    ``sizes``: short-side sizes (each capped so the long side stays <= ``max_size``); ``None``
    keeps the wrapped detector's own resize policy as the only scale. ``flip`` adds the mirrored
    image at every scale.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, detector: Detector, sizes: Optional[Sequence[int]] = None, flip: bool = True,
                 max_size: Optional[int] = 2150) -> None:
        if sizes is not None and (len(sizes) == 0 or any(int(s) < 1 for s in sizes)):
            raise ValueError(f"sizes must be positive short-side sizes, got {sizes}")
        self.detector = detector
        self.sizes = None if sizes is None else [int(s) for s in sizes]
        self.flip = flip
        self.max_size = max_size

    def _views(self) -> List[tuple]:
        policies = ([(self.detector.target_size, self.detector.max_size)] if self.sizes is None
                    else [(size, self.max_size) for size in self.sizes])
        return [(policy, flipped) for policy in policies for flipped in ((False, True) if self.flip else (False,))]

    def _run_view(self, images: Sequence[np.ndarray], policy: tuple, flipped: bool,
                  batch_size: int) -> List[np.ndarray]:
        det = self.detector
        saved = det.target_size, det.max_size, det.post_nms_topk
        det.target_size, det.max_size = policy
        det.post_nms_topk = None
        try:
            views = [np.ascontiguousarray(img[:, ::-1]) if flipped else img for img in images]
            results = det.detect_batch(views, batch_size=batch_size)
        finally:
            det.target_size, det.max_size, det.post_nms_topk = saved
        if flipped:
            results = [unflip_detections(d, img.shape[1]) for d, img in zip(results, images)]
        return results

    def _merge(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        dets = np.concatenate(parts, axis=0)
        if len(dets) == 0:
            return dets
        order = np.argsort(-dets[:, 4], kind="stable")
        dets = dets[order]
        boxes = torch.from_numpy(dets[:, :4].astype(np.float32))
        scores = torch.from_numpy(dets[:, 4].astype(np.float32))
        keep = nms_keep(boxes, scores, self.detector.nms_threshold, plus_one=self.detector.plus_one_nms).numpy()
        if self.detector.post_nms_topk is not None:
            keep = keep[:self.detector.post_nms_topk]
        return dets[keep]

    def detect_batch(self, images: Sequence[np.ndarray], batch_size: int = 16) -> List[np.ndarray]:
        """Merged detections for each image, ``(N, 15)`` float32, sorted by score."""
        per_view = [self._run_view(images, policy, flipped, batch_size) for policy, flipped in self._views()]
        return [self._merge([view[i] for view in per_view]) for i in range(len(images))]

    def detect(self, image: np.ndarray) -> np.ndarray:
        return self.detect_batch([image])[0]
