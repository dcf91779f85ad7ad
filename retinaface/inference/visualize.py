"""Drawing detections: boxes, scores and the five landmarks on a BGR image (OpenCV)."""
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
