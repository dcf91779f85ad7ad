"""Drawing detections: boxes, scores and the five landmarks on a BGR image (OpenCV)."""
from __future__ import annotations

import cv2
import numpy as np

# left eye, right eye, nose, left mouth corner, right mouth corner
LANDMARK_COLOURS = ((0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 0, 0))


def draw_detections(image: np.ndarray, detections: np.ndarray, vis_threshold: float = 0.6,
                    box_colour=(0, 0, 255)) -> np.ndarray:
    """A copy of ``image`` with every detection scoring at least ``vis_threshold`` drawn on it."""
    canvas = image.copy()
    thickness = max(1, round(min(image.shape[:2]) / 300))
    for det in detections[detections[:, 4] >= vis_threshold]:
        x1, y1, x2, y2 = (int(round(v)) for v in det[:4])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), box_colour, thickness)
        cv2.putText(canvas, f"{det[4]:.2f}", (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_DUPLEX,
                    0.4 * thickness, (255, 255, 255), 1, cv2.LINE_AA)
        for k, colour in enumerate(LANDMARK_COLOURS):
            cx, cy = int(round(det[5 + 2 * k])), int(round(det[6 + 2 * k]))
            cv2.circle(canvas, (cx, cy), thickness + 1, colour, -1)
    return canvas
