"""What ``retinaface benchmark --task landmarks`` measures: per dense-landmark network its params,
FLOPs (thop's count x 2, the seed report's convention), CPU latency per crop and, for a trained
checkpoint on annotated faces, NME, the seed's mean pixel distance and its ranking score
``params (M) x FLOPs (G) x e^(pixel distance)``. The command parses the flags and prints the rows.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from .evaluate import evaluate_landmarks
from .metrics import mean_pixel_distance, ranking_score
from .models import create_landmark_model, model_complexity
from .task import face_crops, load_landmark_model, load_samples, predict_crops

# (name, points, input size): the seed report's network first, then PFLD at WFLW's and 300W's counts,
# then the PIPNet heatmap models at the paper's 256 px (8 x 8 cells)
LANDMARK_MODELS = (("mobilenetv3_small", 21, 224), ("pfld", 98, 112), ("pfld", 68, 112),
                   ("mobilenetv3_small", 98, 224), ("pipnet_mobilenetv3", 98, 256), ("pipnet_resnet18", 98, 256))


def measure_landmark_models(weights: Optional[str] = None, data: Optional[str] = None,
                            repeats: int = 20) -> List[Dict[str, Any]]:
    """One row per network: the built-in ones untrained, or the checkpoint ``weights`` (with
    ``data``, a WFLW list or .pts folder, also its accuracy). Latency is the median of ``repeats``
    batch-1 forwards after two warm-up passes, at torch's current thread count."""
    if weights:
        jobs = [(Path(weights).stem, load_landmark_model(weights, "cpu"))]
    else:
        jobs = [(f"{name} {k}pt@{size}", create_landmark_model(name, k, size)) for name, k, size in LANDMARK_MODELS]
    rows = []
    for label, model in jobs:
        size = int(model.config.input_size)
        stats = model_complexity(model, size)
        model.eval()
        x = torch.zeros(1, 3, size, size)
        times = []
        with torch.no_grad():
            for i in range(repeats + 2):
                start = time.perf_counter()
                model(x)
                if i >= 2:  # the first passes allocate
                    times.append(1000 * (time.perf_counter() - start))
        row = {"model": label, "network": model.config.name, "points": model.num_points, "input_size": size,
               "params": stats["params"], "gflops": round(stats["gflops"], 9),
               "latency_ms": round(statistics.median(times), 3), "threads": torch.get_num_threads()}
        if data:
            row.update(landmark_accuracy(model, data, stats))
        rows.append(row)
    return rows


def landmark_accuracy(model: nn.Module, data: str, stats: Dict[str, Any]) -> Dict[str, float]:
    """NME, the seed's mean pixel distance (at the network's input size) and its ranking score."""
    samples = load_samples(data)
    if any(s.num_points != model.num_points for s in samples):
        raise ValueError(f"--data {data}: its faces do not have the {model.num_points} points the model predicts")
    size = int(model.config.input_size)
    crops, transforms = face_crops(samples, size, getattr(model, "crop_margin", 0.1))
    normalised = predict_crops(model, crops)
    images = np.stack([t.normalised_to_image(p) for t, p in zip(transforms, normalised)])
    result = evaluate_landmarks(images, samples)
    gt_crop = np.stack([t.to_crop(s.points) for t, s in zip(transforms, samples)])
    pixels = mean_pixel_distance(np.stack([t.denormalise(p) for t, p in zip(transforms, normalised)]), gt_crop)
    return {"nme": round(result.nme, 6), "pixel_distance": round(pixels, 4),
            "ranking_score": round(ranking_score(stats["params_millions"], stats["gflops"], pixels), 4)}
