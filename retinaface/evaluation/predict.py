"""Running a detector over the WIDER FACE val split: images in, per-image detections out.

``predict_widerface`` feeds a :class:`~retinaface.data.WiderFaceValDataset` through a
:class:`~retinaface.Detector` with a DataLoader (images decoded in workers) and returns
``{(event, image name): (N, 15) detections}``, writing each prediction file as its image
finishes when asked to; :func:`widerface_detector` configures a detector for the WIDER test
protocol (with optional flip / multi-scale augmentation) and :func:`evaluate_model` adds the AP
computation. This is the part of the evaluation that needs torch; ``retinaface.evaluation``
itself does not import it.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..conventions import (DEFAULT_EVAL_PROTOCOL, VAL_GROUND_TRUTH, WIDER_TEST_CONF_THRESHOLD, WIDER_TEST_MAX_SIZE,
                           WIDER_TEST_NMS_THRESHOLD)
from ..data.dataset import WiderFaceValDataset, worker_init_fn
from ..data.labels import check_images
from ..inference.detector import Detector
from ..formats.ground_truth import WiderGroundTruth, open_ground_truth
from ..formats.predictions import check_protocol, prediction_path, to_wider_rows, write_prediction_file
from ..inference.tta import TestTimeAugmentation
from .widerface import WiderEvalResult, evaluate

PathLike = Union[str, Path]
Predictions = Dict[Tuple[str, str], np.ndarray]


class ImageReadWarning(UserWarning):
    """A val image could not be decoded; it counts as an image without detections."""


class _Guarded(Dataset):
    """The val items, with a decoding failure returned as ``(None, key, message)`` instead of
    raised, so one bad image does not end the whole run (in a DataLoader worker it would)."""

    def __init__(self, dataset: WiderFaceValDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            image, key = self.dataset[index]
            return image, key, None
        except Exception as exc:  # any decoder failure: reported by the caller, with the file
            item = self.dataset.items[index]
            return None, (item.event, item.name), f"{item.path}: {exc}"


def _collate_images(batch):
    return [item[0] for item in batch], [item[1] for item in batch], [item[2] for item in batch]


def predict_widerface(detector: Union[Detector, TestTimeAugmentation], dataset: WiderFaceValDataset,
                      batch_size: int = 1, workers: int = 2, progress: bool = True,
                      output: Optional[PathLike] = None, strict: bool = False) -> Predictions:
    """Detections ``(N, 15)`` for every val image. Batches hold images of one size only, so batched
    results equal one-by-one results (WIDER images come in many sizes; equal sizes are common).

    ``output``: write each image's prediction file (atomically) as soon as it is detected, so an
    interrupted or failing run keeps every file it finished. An image that cannot be decoded is
    named in an :class:`ImageReadWarning` and counts as no detections (no file is written for it);
    with ``strict`` it stops the run with ``OSError`` instead (files already written stay).
    """
    loader = DataLoader(_Guarded(dataset), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_collate_images, worker_init_fn=worker_init_fn)
    predictions: Predictions = {}
    failed: List[str] = []
    with tqdm(total=len(dataset), desc="detect", unit="img", disable=not progress, leave=False) as bar:
        for images, keys, errors in loader:
            groups: Dict[Tuple[int, int], List[int]] = {}
            for i, (img, error) in enumerate(zip(images, errors)):
                if error is not None:
                    if strict:
                        raise OSError(f"cannot decode val image {error} (stopped: --strict)")
                    failed.append(error)
                    warnings.warn(f"cannot decode val image {error}; it counts as an image without "
                                  f"detections", ImageReadWarning, stacklevel=2)
                    predictions[keys[i]] = np.zeros((0, 15), dtype=np.float32)
                    continue
                groups.setdefault(img.shape[:2], []).append(i)
            for indices in groups.values():
                dets = detector.detect_batch([images[i] for i in indices], batch_size=len(indices))
                for i, d in zip(indices, dets):
                    predictions[keys[i]] = d
                    if output is not None:
                        event, name = keys[i]
                        write_prediction_file(prediction_path(output, event, name), name, d)
            bar.update(len(images))
    if failed and 2 * len(failed) > len(dataset):
        raise OSError(f"{len(failed)} of {len(dataset)} val images could not be decoded (e.g. {failed[0]}); "
                      f"is the data root right?")
    if failed:
        warnings.warn(f"{len(failed)} val image(s) could not be decoded and count as images without "
                      f"detections: {', '.join(failed[:3])}" + (" ..." if len(failed) > 3 else ""),
                      ImageReadWarning, stacklevel=2)
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
        settings = dict(conf_threshold=WIDER_TEST_CONF_THRESHOLD, nms_threshold=WIDER_TEST_NMS_THRESHOLD,
                        pre_nms_topk=None, post_nms_topk=None)
        settings.update(detector_kwargs)
        detector = Detector(model, device=device, target_size=target_size, max_size=max_size, **settings)
    if flip or multiscale:
        cap = max_size if max_size is not None else WIDER_TEST_MAX_SIZE
        return TestTimeAugmentation(detector, sizes=multiscale or None, flip=flip, max_size=cap)
    return detector


def check_val_split(data_root: PathLike, gt: WiderGroundTruth) -> WiderFaceValDataset:
    """The val split of ``data_root``, checked before any model runs: every listed image exists and
    is not empty (``FileNotFoundError`` naming the first few and the count), is listed once, and is
    an image of the ground truth ``gt`` (``ValueError`` naming the list file and the first few) --
    found after a whole val pass, such a mistake would cost that pass."""
    dataset = WiderFaceValDataset(data_root, check=False)
    try:
        check_images(dataset.items, check_header=False)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{dataset.source}: {exc}".replace(" (--skip-bad skips them)", "")) from None
    seen: Dict[Tuple[str, str], int] = {}
    repeated = []
    for index, item in enumerate(dataset.items):
        key = (item.event, item.name)
        if key in seen:
            repeated.append(item.path)
        seen[key] = index
    if repeated:
        raise ValueError(f"{dataset.source}: {len(repeated)} image(s) listed more than once, e.g. {repeated[0]}")
    known = set(gt.image_keys())
    unknown = [item.path for item in dataset.items if (item.event, item.name) not in known]
    if unknown:
        raise ValueError(f"{dataset.source}: {len(unknown)} of {len(dataset.items)} listed image(s) are not in the "
                         f"ground truth, e.g. {', '.join(unknown[:3])}; do the list and the ground truth belong "
                         f"together?")
    return dataset


def evaluate_model(model, data_root: PathLike, gt: Union[WiderGroundTruth, PathLike, None] = None,
                   output: Optional[PathLike] = None, batch_size: int = 1, workers: int = 2,
                   progress: bool = True, protocol: str = DEFAULT_EVAL_PROTOCOL, strict: bool = False,
                   **detector_settings) -> WiderEvalResult:
    """WIDER easy/medium/hard AP of ``model`` on ``data_root``'s val split, computed under
    ``protocol`` (``"official"`` by default, or ``"python-port"``).

    ``gt`` (loaded, or a path for :func:`open_ground_truth`) defaults to
    ``data_root/val/ground_truth`` (where the synthetic set keeps it).
    ``detector_settings`` go to :func:`widerface_detector` (test size, flip, multi-scale,
    thresholds). ``output`` also writes the prediction files in the official layout, each as its
    image finishes; ``strict`` stops at an undecodable image instead of counting it as no
    detections (see :func:`predict_widerface`).
    """
    check_protocol(protocol)
    data_root = Path(data_root)
    if not isinstance(gt, WiderGroundTruth):
        # read (and checked) before minutes of inference, not after
        gt = open_ground_truth(gt if gt is not None else data_root / VAL_GROUND_TRUTH)
    dataset = check_val_split(data_root, gt)
    detector = widerface_detector(model, **detector_settings)
    # Images are not decoded up front: one that does not decode is named and skipped (or stops a
    # strict run) when its turn comes, after the files of the images before it are written.
    predictions = predict_widerface(detector, dataset, batch_size, workers, progress, output=output, strict=strict)
    # the rows the prediction files would hold, so in-memory and on-disk evaluation agree exactly
    return evaluate({key: to_wider_rows(dets) for key, dets in predictions.items()}, gt, protocol=protocol)
