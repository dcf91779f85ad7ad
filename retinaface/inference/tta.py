"""Test-time augmentation: horizontal flip and several test scales merged into one detection set.

Owns :class:`TestTimeAugmentation`, a wrapper with the :class:`~retinaface.Detector` interface
(``detect`` / ``detect_batch``). Each view (scale x flip) gets its own transform and a
post-processor without post-NMS cap, built once at construction and run through
:meth:`Detector.run`, so the wrapped detector is never modified and one wrapper may serve several
threads. The views' detections are mapped back to the original image, pooled, and reduced by one
more NMS with the detector's own post-processor.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..conventions import (DET_BOX, DET_LANDMARKS, MIRROR_ORDER, MULTISCALE_SIZES, NUM_LANDMARKS,
                          WIDER_TEST_MAX_SIZE, mirror_x)
from .detector import Detector
from .postprocess import PostProcessor
from .transform import InferenceTransform

__all__ = ["MULTISCALE_SIZES", "TestTimeAugmentation", "unflip_detections"]


def unflip_detections(dets: np.ndarray, image_width: int) -> np.ndarray:
    """Map ``(N, 15)`` detections of a horizontally mirrored image back to the original image.

    Coordinates go through :func:`retinaface.conventions.mirror_x` (the training augmentation's
    mirror, so both agree on where a mirrored pixel lands); the two box corners swap, and left and
    right landmarks swap names (``MIRROR_ORDER``).
    """
    out = dets.copy()
    out[:, DET_BOX.start] = mirror_x(dets[:, DET_BOX.start + 2], image_width)
    out[:, DET_BOX.start + 2] = mirror_x(dets[:, DET_BOX.start], image_width)
    points = dets[:, DET_LANDMARKS].reshape(-1, NUM_LANDMARKS, 2)[:, list(MIRROR_ORDER)]
    points[..., 0] = mirror_x(points[..., 0], image_width)
    out[:, DET_LANDMARKS] = points.reshape(-1, 2 * NUM_LANDMARKS)
    return out


class TestTimeAugmentation:
    """Detections merged over test sizes and an optional horizontal flip.

    ``sizes``: short-side sizes (each capped so the long side stays <= ``max_size``); ``None``
    keeps the wrapped detector's own resize policy as the only scale. ``flip`` adds the mirrored
    image at every scale.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, detector: Detector, sizes: Optional[Sequence[int]] = None, flip: bool = True,
                 max_size: Optional[int] = WIDER_TEST_MAX_SIZE) -> None:
        if sizes is not None and (len(sizes) == 0 or any(int(s) < 1 for s in sizes)):
            raise ValueError(f"sizes must be positive short-side sizes, got {sizes}")
        self.detector = detector
        self.sizes = None if sizes is None else [int(s) for s in sizes]
        self.flip = flip
        self.max_size = max_size
        # built once: every view's own transform, and no post-NMS cap before the merge
        transforms: List[InferenceTransform] = (
            [detector.transform] if self.sizes is None
            else [detector.transform.replace(target_size=size, max_size=max_size) for size in self.sizes])
        self._views: Tuple[Tuple[InferenceTransform, bool], ...] = tuple(
            (transform, flipped) for transform in transforms
            for flipped in ((False, True) if flip else (False,)))
        self._view_postprocess: PostProcessor = detector.postprocess.replace(post_nms_topk=None)

    def _run_view(self, images: Sequence[np.ndarray], transform: InferenceTransform, flipped: bool,
                  batch_size: int) -> List[np.ndarray]:
        views = [np.ascontiguousarray(img[:, ::-1]) if flipped else img for img in images]
        results = self.detector.run(views, batch_size=batch_size, transform=transform,
                                    postprocess=self._view_postprocess)
        if flipped:
            results = [unflip_detections(d, img.shape[1]) for d, img in zip(results, images)]
        return results

    def _merge(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        dets = np.concatenate(parts, axis=0)
        return self.detector.postprocess.merge(torch.from_numpy(dets)).numpy()

    def detect_batch(self, images: Sequence[np.ndarray], batch_size: int = 16) -> List[np.ndarray]:
        """Merged detections for each image, ``(N, 15)`` float32, sorted by score."""
        per_view = [self._run_view(images, transform, flipped, batch_size) for transform, flipped in self._views]
        return [self._merge([view[i] for view in per_view]) for i in range(len(images))]

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Merged detections of one BGR uint8 image, ``(N, 15)`` float32."""
        return self.detect_batch([image])[0]
