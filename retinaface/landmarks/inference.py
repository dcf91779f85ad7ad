"""Dense landmarks on detected faces: the detector's boxes, the landmark network's crop policy
(:mod:`retinaface.landmarks.crop`, the margin the checkpoint was trained with), the exact inverse map
back to image pixels, and each face's head pose (:mod:`retinaface.landmarks.pose`). Any detector
with ``detect(image) -> (N, 5 + ...)`` rows works, so this module needs nothing from the detection
side.

The crop-predict-map path itself is :meth:`LandmarkRegressor.landmarks_in_boxes
<retinaface.landmarks.models.LandmarkRegressor.landmarks_in_boxes>`: it lives on the network so that
:meth:`retinaface.inference.detector.Detector.detect_and_landmark`, a layer below this package, runs
the same code; :func:`landmarks_in_boxes` here is its function form.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..adaptive.slim import set_width
from ..conventions import DET_SCORE, DISPLAY_THRESHOLD
from ..runtime_interface import LandmarkModel
from .pose import has_pose_points, head_poses, image_size_of


class DenseFaces(NamedTuple):
    """Dense landmarks of the faces of one image: ``points`` ``(N, K, 2)`` in its pixels and
    ``poses`` ``(N, 3)`` yaw, pitch, roll in degrees (:mod:`~retinaface.landmarks.pose`), ``None``
    when the model's scheme lacks the points a head pose needs."""

    points: np.ndarray
    poses: Optional[np.ndarray]


def landmarks_in_boxes(model: LandmarkModel, image: np.ndarray, boxes: Sequence[Sequence[float]],
                       batch_size: int = 64, width: Optional[float] = None) -> np.ndarray:
    """``(N, K, 2)`` points in ``image``'s pixel coordinates for the faces in ``boxes`` (``(N, >= 4)``
    rows ``x1 y1 x2 y2 ...``), ``image`` BGR uint8 ``H x W x 3`` as OpenCV reads it. Each face is
    cropped by the policy at ``model.crop_margin`` (a loaded checkpoint's; else the default),
    predicted in batches and mapped back with the crop's exact inverse. ``width`` runs a
    channel-prioritised network at that level for this call (``None``: its current width; a plain
    network accepts only 1)."""
    if width is None:
        return model.landmarks_in_boxes(image, boxes, batch_size)
    was = float(getattr(model, "width", 1.0))
    set_width(model, width)
    try:
        return model.landmarks_in_boxes(image, boxes, batch_size)
    finally:
        set_width(model, was)


def detect_and_landmark(detector: Any, model: LandmarkModel, image: np.ndarray,
                        min_score: float = DISPLAY_THRESHOLD, width: Optional[float] = None
                        ) -> Tuple[np.ndarray, np.ndarray]:
    """``(faces, points)``: ``detector.detect(image)``'s rows scoring at least ``min_score`` (the
    display threshold, as :meth:`~retinaface.inference.detector.Detector.detect_and_align`) and the
    dense points of each face, ``(N, K, 2)`` in image pixels, in the same order (``width``: as
    :func:`landmarks_in_boxes`)."""
    faces = np.asarray(detector.detect(image))
    faces = faces[faces[:, DET_SCORE] >= min_score]
    return faces, landmarks_in_boxes(model, image, faces[:, :4], width=width)


def dense_faces(model: LandmarkModel, image: np.ndarray, boxes: Sequence[Sequence[float]],
                batch_size: int = 64) -> DenseFaces:
    """The points of the faces in ``boxes`` (:func:`landmarks_in_boxes`) and their head poses
    (``None`` for a scheme without the pose points). ``retinaface detect --landmarks`` and
    :class:`~retinaface.recognition.analyzer.FaceAnalyzer` describe faces with it."""
    points = landmarks_in_boxes(model, image, boxes, batch_size)
    scheme = getattr(model, "scheme", None)
    poses = head_poses(points, scheme, image_size_of(image)) if scheme and has_pose_points(scheme) else None
    return DenseFaces(points, poses)
