"""The embedding networks' input transform and the training augmentation of aligned crops.

Crops are BGR uint8 like everything OpenCV reads; :func:`preprocess` is the single place where they
become network input (RGB, ``(x - EMBED_MEAN) / EMBED_STD``), so training, verification, export and
the analyzer can never disagree about it.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence, Union

import numpy as np

from ..conventions import ALIGNED_FACE_SIZE, EMBED_MEAN, EMBED_STD


def preprocess(crops: Union[np.ndarray, Sequence[np.ndarray]]):
    """Float tensor ``(N, 3, H, W)`` RGB, ``(pixel - EMBED_MEAN) / EMBED_STD``, of BGR uint8 crops
    ``(N, H, W, 3)`` (a single ``(H, W, 3)`` crop gives ``N = 1``; a list of equal-size crops works)."""
    import torch

    array = np.asarray(crops) if not isinstance(crops, np.ndarray) else crops
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"crops must have shape (N, H, W, 3), got {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"crops must be uint8 BGR images, got {array.dtype}")
    tensor = torch.from_numpy(np.ascontiguousarray(array[..., ::-1]))  # BGR -> RGB
    tensor = tensor.permute(0, 3, 1, 2).float()
    return tensor.sub_(EMBED_MEAN).div_(EMBED_STD).contiguous()


class FaceTrainTransform:
    """Random rotation, scale, shift and horizontal flip of an aligned crop, in one warp.

    The channel-prioritised ConvNets report's augmentation: rotation uniform in
    ``[-rotation, rotation]`` degrees, scale in ``1 +- scale``, shift in ``+- shift`` of the crop
    size in x and y, a mirror with probability ``flip``. Returns a uint8 ``(size, size, 3)`` crop
    (the input is resized to ``size`` first when it differs); pixels from outside the input are black.

    ``transform(crop, rng)`` draws from ``rng``; without one, each process uses its own generator
    seeded from ``seed`` and torch's seed (the per-worker seed in DataLoader workers, so workers
    differ and a run seeded with ``torch.manual_seed`` repeats).
    """

    def __init__(self, rotation: float = 45.0, scale: float = 0.15, shift: float = 0.15, flip: float = 0.5,
                 size: int = ALIGNED_FACE_SIZE, seed: int = 0) -> None:
        if rotation < 0 or not 0 <= scale < 1 or shift < 0 or not 0 <= flip <= 1 or size < 8:
            raise ValueError("FaceTrainTransform needs rotation >= 0, 0 <= scale < 1, shift >= 0, "
                             f"0 <= flip <= 1, size >= 8; got {rotation}, {scale}, {shift}, {flip}, {size}")
        self.rotation, self.scale, self.shift, self.flip, self.size = rotation, scale, shift, flip, int(size)
        self.seed = int(seed)
        self._rng: Optional[np.random.Generator] = None
        self._pid: Optional[int] = None

    def _own_rng(self) -> np.random.Generator:
        # one generator per process: a DataLoader worker seeds it from its torch worker seed, the
        # main process from torch's seed, so runs seeded with torch.manual_seed repeat exactly
        if self._rng is None or self._pid != os.getpid():
            try:
                import torch
                import torch.utils.data

                info = torch.utils.data.get_worker_info()
                stream = int(torch.initial_seed()) if info is None else int(info.seed)
            except ImportError:  # torch-free use
                stream = 0
            self._rng = np.random.default_rng([self.seed, stream])
            self._pid = os.getpid()
        return self._rng

    def matrix(self, rng: np.random.Generator) -> np.ndarray:
        """One random ``(2, 3)`` affine transform of a ``size`` crop (also used by the tests)."""
        s = self.size
        angle = math.radians(rng.uniform(-self.rotation, self.rotation))
        factor = 1.0 + rng.uniform(-self.scale, self.scale)
        dx, dy = rng.uniform(-self.shift, self.shift, 2) * s
        mirror = rng.random() < self.flip
        # warpAffine maps pixel indices: the centre of a size-s crop is (s - 1) / 2, so a pure flip
        # is exactly crop[:, ::-1]
        centre = (s - 1) / 2.0
        cos, sin = factor * math.cos(angle), factor * math.sin(angle)
        linear = np.array([[cos, -sin], [sin, cos]])
        if mirror:
            linear = linear @ np.array([[-1.0, 0.0], [0.0, 1.0]])
        offset = np.array([centre + dx, centre + dy]) - linear @ np.array([centre, centre])
        return np.concatenate([linear, offset[:, None]], axis=1)

    def __call__(self, crop: np.ndarray, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        import cv2

        if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
            raise ValueError(f"expected a uint8 (H, W, 3) crop, got {crop.dtype} {crop.shape}")
        if crop.shape[:2] != (self.size, self.size):
            crop = cv2.resize(crop, (self.size, self.size), interpolation=cv2.INTER_AREA)
        matrix = self.matrix(self._own_rng() if rng is None else rng)
        return cv2.warpAffine(crop, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))

    def __repr__(self) -> str:
        return (f"FaceTrainTransform(rotation={self.rotation}, scale={self.scale}, shift={self.shift}, "
                f"flip={self.flip}, size={self.size})")
