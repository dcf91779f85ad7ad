"""After-training artefacts for people: an annotated val image showing what the model finds, and
the precision-recall curves of the best epoch."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import cv2

from ..conventions import VIS_THRESHOLD
from ..data.dataset import WiderFaceValDataset
from ..inference.detector import Detector
from ..evaluation.plot import plot_pr_curves
from ..fileio import atomic_write
from ..inference.visualize import draw_detections

PathLike = Union[str, Path]


def write_sample_detection(model, data_root: PathLike, path: PathLike, vis_threshold: float = VIS_THRESHOLD
                           ) -> Optional[Path]:
    """Detect faces on the first val image under ``data_root`` and write it annotated to ``path``.
    Returns the path, or None when the data root has no val split."""
    try:
        dataset = WiderFaceValDataset(data_root)
    except FileNotFoundError:
        return None
    if len(dataset) == 0:
        return None
    image, _ = dataset[0]
    detections = Detector(model.eval()).detect(image)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix or ".jpg", draw_detections(image, detections, vis_threshold))
    if not ok:
        raise ValueError(f"{path}: cannot encode an image with this suffix")

    with atomic_write(path, "wb") as handle:
        handle.write(encoded.tobytes())
    return path


BEST_CURVES = "pr_best.png"


def write_best_curves(result, path: PathLike, epoch: int) -> Path:
    """Draw ``result``'s (a :class:`~retinaface.evaluation.WiderEvalResult`) easy / medium / hard
    precision-recall curves to ``path`` (atomically), titled with the epoch they belong to."""
    path = Path(path)
    plot_pr_curves(result, path, title=f"best epoch {epoch}")
    return path
