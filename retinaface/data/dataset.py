"""PyTorch data sets over WIDER FACE-style data, and the batch collate function.

Owns :class:`WiderFaceTrainDataset` (annotated images through a transform, reproducible per
``(seed, epoch, index)`` whatever the number of DataLoader workers), :class:`WiderFaceValDataset`
(the val images as uint8 BGR plus their ``(event, name)``, for the evaluation CLI),
:func:`detection_collate`, :func:`worker_init_fn`, and :class:`MeanSubtractingLoader` (uint8
batches made float on the training device).
"""
from __future__ import annotations

import operator
import os
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import TrainTransform
from .fast_decode import read_full
from .labels import ImageAnnotation, ValImage, check_images, read_val_list, read_wider_bbx_labels

PathLike = Union[str, "os.PathLike[str]"]

Transform = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.random.Generator],
                     Tuple[np.ndarray, np.ndarray]]


def read_image(path: PathLike) -> np.ndarray:
    """``cv2.imread`` as uint8 BGR HxWx3 (the same pixels, from one read of the file:
    :func:`retinaface.data.fast_decode.read_full`); raises ``OSError`` naming the file when it cannot."""
    return read_full(path)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one sample: a function of (seed, epoch, index) only, so the
    augmentation does not depend on which worker draws it or in what order. Negative values (a
    negative ``--seed`` is accepted elsewhere) are taken modulo 2**64, which ``SeedSequence``
    needs; non-negative ones are used as they are."""
    return np.random.default_rng(np.random.SeedSequence([int(v) % 2**64 for v in (seed, epoch, index)]))


class WiderFaceTrainDataset(Dataset):
    """Annotated images through a transform (default: :class:`TrainTransform` at 640).

    Item ``i``: ``(image (3, S, S) float32 tensor, targets (K, 15) float32 tensor)`` (the image is
    uint8, mean not subtracted, with ``TrainTransform(normalize=False)``). A transform
    with a ``load(path, boxes, landmarks, labels, rng)`` method (:class:`TrainTransform`) is handed
    the file's path (it reads the file once, and can plan the sample before decoding it); any other
    callable gets the decoded uint8 BGR image. Call :meth:`set_epoch` before iterating each epoch:
    the epoch lives in shared memory, so DataLoader workers (persistent ones too) see it.
    """

    def __init__(self, annotations: Sequence[ImageAnnotation], transform: Optional[Transform] = None,
                 seed: int = 0) -> None:
        self.annotations = list(annotations)
        self.transform = transform if transform is not None else TrainTransform()
        self.seed = int(seed)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        index = operator.index(index)
        if index < 0:                       # ds[-1] is ds[len - 1], augmentation included
            index += len(self)
        ann = self.annotations[index]
        rng = sample_rng(self.seed, self.epoch, index)
        load = getattr(self.transform, "load", None)
        if load is not None:
            # TrainTransform.load: the same sample as transform(read_image(path), ...) for the same
            # generator, bit for bit (and, with reduced_decode=True, the cheaper reduced decode)
            chw, targets = load(ann.path, ann.boxes, ann.landmarks, ann.labels, rng)
        else:
            chw, targets = self.transform(read_image(ann.path), ann.boxes, ann.landmarks, ann.labels, rng)
        return torch.from_numpy(chw), torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, transform={self.transform!r}, seed={self.seed})"


def detection_collate(batch: Sequence[Tuple[torch.Tensor, torch.Tensor]]
                      ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """``[(image, targets), ...]`` -> ``(images (B, 3, S, S), [targets (K_i, 15), ...])``; the
    per-image face counts differ, so targets stay a list."""
    images = torch.stack([item[0] for item in batch], dim=0)
    targets = [item[1].reshape(-1, 15) for item in batch]
    return images, targets


def subtract_mean(images: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` uint8 -> float32 minus ``mean`` (a ``(3,)`` float32 tensor on the same
    device): the values :func:`retinaface.data.augment.normalize_chw` gives in the workers (a
    uint8 value and a float32 mean subtract exactly in float32 on any device)."""
    return images.float().sub_(mean.view(1, -1, 1, 1))


class LoaderWrapper:
    """Base of the loaders that change each batch of a DataLoader on its way to the trainer
    (:class:`MeanSubtractingLoader`; ``benchmarks/gpu_decode.py``'s ``DecodingLoader``): ``len`` and every other
    attribute (sampler, dataset, ...) are the wrapped DataLoader's."""

    def __init__(self, loader: torch.utils.data.DataLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        if name == "loader":   # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)


class MeanSubtractingLoader(LoaderWrapper):
    """A DataLoader of uint8 batches (``TrainTransform(normalize=False)``) whose batches come out on
    ``device`` as float32 minus ``mean``, the batches a ``normalize=True`` loader gives, bit for bit.

    The workers skip the float conversion (~0.2 ms per 640 px image on one core here:
    ``benchmarks/bench_data.py``) and every batch moves a quarter of the bytes through shared
    memory, pinned memory and the host-to-device copy (``non_blocking`` from pinned memory, so it
    overlaps the work queued before it); the conversion then runs on the device, where it is
    negligible on a GPU. ``len`` and the other attributes are the DataLoader's."""

    def __init__(self, loader: torch.utils.data.DataLoader, mean: Sequence[float], device: torch.device) -> None:
        super().__init__(loader)
        self.device = torch.device(device)
        self.mean = torch.tensor([float(np.float32(m)) for m in mean], dtype=torch.float32, device=self.device)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, List[torch.Tensor]]]:
        for images, targets in self.loader:
            if images.dtype != torch.uint8:
                raise TypeError(f"MeanSubtractingLoader expects uint8 batches, got {images.dtype} "
                                f"(build the data set with TrainTransform(normalize=False))")
            yield subtract_mean(images.to(self.device, non_blocking=True), self.mean), targets


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker set-up. The augmentation does not need it (every sample seeds its own
    generator); it gives numpy's global generator a per-worker seed so any other code that uses
    it does not repeat the same numbers in every worker.

    It deliberately leaves OpenCV's threading alone: ``cv2.setNumThreads`` in a forked worker
    deadlocks once the parent process has used OpenCV's thread pool.
    """
    np.random.seed(torch.initial_seed() % 2**32)


class WiderFaceValDataset(Dataset):
    """The val images, for evaluation: item ``i`` is ``(uint8 BGR HxWx3 image, (event, name))``.

    ``root`` holds ``val/wider_val.txt`` + ``val/images/`` (Pytorch_Retinaface layout), or the
    official ``wider_face_split/wider_face_val_bbx_gt.txt`` + ``WIDER_val/images/``; ``root`` may
    also be the ``val`` folder itself.
    """

    def __init__(self, root: PathLike, check: bool = True) -> None:
        root = Path(root)
        candidates = [root / "val" / "wider_val.txt", root / "wider_val.txt"]
        official = root / "wider_face_split" / "wider_face_val_bbx_gt.txt"
        listing = next((c for c in candidates if c.is_file()), None)
        if listing is not None:
            self.items: List[ValImage] = read_val_list(listing)
            self.source = listing
        elif official.is_file():
            annotations, _ = read_wider_bbx_labels(official, root / "WIDER_val" / "images")
            self.items = [ValImage(a.path, a.event, a.name) for a in annotations]
            self.source = official
        else:
            raise FileNotFoundError(f"no WIDER FACE val list under {root}; looked for "
                                    + ", ".join(str(c) for c in candidates) + f" and {official}")
        if check:
            self.items, _ = check_images(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, Tuple[str, str]]:
        item = self.items[index]
        return read_image(item.path), (item.event, item.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images from {self.source})"
