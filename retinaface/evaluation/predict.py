"""Running a detector over the WIDER FACE val split: images in, per-image detections out.

``predict_widerface`` feeds a :class:`~retinaface.data.WiderFaceValDataset` through a
:class:`~retinaface.Detector` with a DataLoader (images decoded in workers) and returns
``{(event, image name): (N, 15) detections}``; :func:`widerface_detector` configures a detector
for the WIDER test protocol (with optional flip / multi-scale augmentation) and
:func:`evaluate_model` adds the AP computation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from torch.utils.data import DataLoader

from ..data.dataset import WiderFaceValDataset, worker_init_fn
from ..detector import Detector
from ..tta import TestTimeAugmentation
from .ground_truth import WiderGroundTruth, open_ground_truth
from .widerface import WiderEvalResult, evaluate, to_wider_rows, write_predictions

PathLike = Union[str, Path]
Predictions = Dict[Tuple[str, str], np.ndarray]


def _collate_images(batch):
    return [item[0] for item in batch], [item[1] for item in batch]


def predict_widerface(detector: Union[Detector, TestTimeAugmentation], dataset: WiderFaceValDataset,
                      batch_size: int = 1, workers: int = 2, progress: bool = True) -> Predictions:
    """Detections for every val image. Batches hold images of one size only, so batched results
    equal one-by-one results (WIDER images come in many sizes; equal sizes are common)."""
    from tqdm import tqdm

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_collate_images, worker_init_fn=worker_init_fn)
    predictions: Predictions = {}
    with tqdm(total=len(dataset), desc="detect", unit="img", disable=not progress, leave=False) as bar:
        for images, keys in loader:
            groups: Dict[Tuple[int, int], List[int]] = {}
            for i, img in enumerate(images):
                groups.setdefault(img.shape[:2], []).append(i)
            for indices in groups.values():
                dets = detector.detect_batch([images[i] for i in indices], batch_size=len(indices))
                for i, d in zip(indices, dets):
                    predictions[keys[i]] = d
            bar.update(len(images))
    return predictions


def widerface_detector(model, target_size: Optional[int] = None, max_size: Optional[int] = None,
                       flip: bool = False, multiscale: Optional[Sequence[int]] = None,
                       device=None, **detector_kwargs) -> Union[Detector, TestTimeAugmentation]:
    """A detector configured for the WIDER test protocol: threshold 0.02, NMS 0.4, no top-k caps,
    the original image size unless ``target_size``/``max_size`` are given; ``flip`` and
    ``multiscale`` (short-side sizes, capped by ``max_size`` or 2150) add test-time augmentation.
    ``model`` may already be a :class:`Detector`."""
    if isinstance(model, Detector):
        detector = model
    else:
        settings = dict(conf_threshold=0.02, nms_threshold=0.4, pre_nms_topk=None, post_nms_topk=None)
        settings.update(detector_kwargs)
        detector = Detector(model, device=device, target_size=target_size, max_size=max_size, **settings)
    if flip or multiscale:
        cap = max_size if max_size is not None else 2150
        return TestTimeAugmentation(detector, sizes=multiscale or None, flip=flip, max_size=cap)
    return detector


def evaluate_model(model, data_root: PathLike, gt: Union[WiderGroundTruth, PathLike, None] = None,
                   output: Optional[PathLike] = None, batch_size: int = 1, workers: int = 2,
                   progress: bool = True, **protocol) -> WiderEvalResult:
    """WIDER easy/medium/hard AP of ``model`` on ``data_root``'s val split.

    ``gt`` (loaded, or a path for :func:`open_ground_truth`) defaults to
    ``data_root/val/ground_truth`` (where the synthetic set keeps it).
    ``protocol`` goes to :func:`widerface_detector` (test size, flip, multi-scale, thresholds).
    ``output`` also writes the prediction files in the official layout.
    """
    data_root = Path(data_root)
    if not isinstance(gt, WiderGroundTruth):
        # read (and checked) before minutes of inference, not after
        gt = open_ground_truth(gt if gt is not None else data_root / "val" / "ground_truth")
    detector = widerface_detector(model, **protocol)
    predictions = predict_widerface(detector, WiderFaceValDataset(data_root), batch_size, workers, progress)
    if output is not None:
        write_predictions(output, predictions)
    # the rows the prediction files would hold, so in-memory and on-disk evaluation agree exactly
    return evaluate({key: to_wider_rows(dets) for key, dets in predictions.items()}, gt)
