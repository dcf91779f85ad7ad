"""Dense landmarks on detected faces: the detector's boxes, the landmark network's crop policy
(:mod:`retinaface.landmarks.crop`, the margin the checkpoint was trained with) and the exact inverse
map back to image pixels. Any detector with ``detect(image) -> (N, 5 + ...)`` rows works, so this
module needs nothing from the detection side."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..adaptive.slim import set_width
from .crop import DEFAULT_MARGIN, crop_transform
from .task import predict_crops


def landmarks_in_boxes(model: nn.Module, image: np.ndarray, boxes: Sequence[Sequence[float]],
                       batch_size: int = 64, width: Optional[float] = None) -> np.ndarray:
    """``(N, K, 2)`` points in ``image``'s pixel coordinates for the faces in ``boxes`` (``(N, >= 4)``
    rows ``x1 y1 x2 y2 ...``), ``image`` BGR uint8 ``H x W x 3`` as OpenCV reads it. Each face is
    cropped by the policy at ``model.crop_margin`` (a loaded checkpoint's; else the default),
    predicted in batches and mapped back with the crop's exact inverse. ``width`` runs a
    channel-prioritised network at that level for this call (``None``: its current width)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxWx3 BGR image, got {image.dtype} {image.shape}")
    size = int(model.config.input_size)
    boxes = np.asarray(boxes, dtype=np.float64)
    was = float(getattr(model, "width", 1.0))
    if width is not None:
        set_width(model, width)  # refuses a width below 1 for a plain network
    try:
        if boxes.size == 0:
            return np.zeros((0, int(model.num_points), 2))
        margin = float(getattr(model, "crop_margin", DEFAULT_MARGIN))
        transforms = [crop_transform(box[:4], size, margin) for box in boxes]
        crops = torch.from_numpy(np.stack([t.warp(image) for t in transforms]))
        normalised = predict_crops(model, crops, batch_size)
        return np.stack([t.normalised_to_image(p) for t, p in zip(transforms, normalised)])
    finally:
        if width is not None:
            set_width(model, was)


def detect_and_landmark(detector: Any, model: nn.Module, image: np.ndarray,
                        width: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(faces, points)``: ``detector.detect(image)``'s rows and the dense points of each face,
    ``(N, K, 2)`` in image pixels, in the same order (``width``: as :func:`landmarks_in_boxes`)."""
    faces = np.asarray(detector.detect(image))
    return faces, landmarks_in_boxes(model, image, faces[:, :4], width=width)
