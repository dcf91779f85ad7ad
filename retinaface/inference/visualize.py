"""Drawing detections: boxes, scores and the five landmarks on a BGR image (OpenCV), and dense landmarks."""
from __future__ import annotations

import cv2
import numpy as np

from ..conventions import DET_BOX, DET_LANDMARKS, DET_SCORE, VIS_THRESHOLD

# left eye, right eye, nose, left mouth corner, right mouth corner
LANDMARK_COLOURS = ((0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 0, 0))


def draw_detections(image: np.ndarray, detections: np.ndarray, vis_threshold: float = VIS_THRESHOLD,
                    box_colour=(0, 0, 255)) -> np.ndarray:
    """A copy of ``image`` with every detection scoring at least ``vis_threshold`` drawn on it."""
    canvas = image.copy()
    thickness = max(1, round(min(image.shape[:2]) / 300))
    for det in detections[detections[:, DET_SCORE] >= vis_threshold]:
        x1, y1, x2, y2 = (int(round(v)) for v in det[DET_BOX])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), box_colour, thickness)
        cv2.putText(canvas, f"{det[DET_SCORE]:.2f}", (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_DUPLEX,
                    0.4 * thickness, (255, 255, 255), 1, cv2.LINE_AA)
        points = det[DET_LANDMARKS]
        for k, colour in enumerate(LANDMARK_COLOURS):
            cx, cy = int(round(points[2 * k])), int(round(points[2 * k + 1]))
            cv2.circle(canvas, (cx, cy), thickness + 1, colour, -1)
    return canvas


DENSE_COLOUR = (255, 255, 0)  # cyan: apart from the five points' colours and the red box


def draw_dense_landmarks(image: np.ndarray, points: np.ndarray, colour=DENSE_COLOUR) -> np.ndarray:
    """A copy of ``image`` with the dense points ``(N, K, 2)`` (or ``(K, 2)``) drawn as small dots."""
    canvas = image.copy()
    radius = max(1, round(min(image.shape[:2]) / 400))
    for x, y in np.asarray(points, dtype=np.float64).reshape(-1, 2):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(canvas, (int(round(x)), int(round(y))), radius, colour, -1, cv2.LINE_AA)
    return canvas
