"""The inference transform: BGR uint8 images -> one network batch, and the scale back to pixels.

Owns :class:`InferenceTransform` (the role torchvision's ``GeneralizedRCNNTransform`` plays for its
detectors): the test-time resize policy (origin size, a target short side, a cap on the long side),
the BGR mean subtraction, batching of images of any sizes into one ``(B, 3, H, W)`` float tensor
(NHWC memory on CPU when asked), and the per-image factor that maps network-input pixels back to the
original image's pixels. A transform is immutable after construction, so one instance may serve
several threads; :meth:`InferenceTransform.replace` makes a variant (test-time augmentation builds
one per view).
"""
from __future__ import annotations

import dataclasses
import threading
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from ..conventions import BGR_MEAN

try:  # compiled by setup.py where a C compiler is found; otherwise OpenCV fills the batch
    from .. import _detect_kernels as _kernels
except ImportError:  # pragma: no cover - exercised by tests that set it to None
    _kernels = None

# One resize factor, or ``(sx, sy)`` when the two axes had to be scaled differently.
Scale = Union[float, Tuple[float, float]]

_CONVERSION_HINTS = {
    "b": "bool masks are not images; use mask.astype(np.uint8) * 255",
    "f": "for float images in [0, 1] use (img * 255).round().clip(0, 255).astype(np.uint8); "
         "for float images in [0, 255] use img.round().clip(0, 255).astype(np.uint8)",
    "u": "for 16-bit images use (img >> 8).astype(np.uint8) (or cv2.imread without IMREAD_ANYDEPTH)",
    "i": "use img.clip(0, 255).astype(np.uint8) if the values are already 0..255",
}


def resize_scale(height: int, width: int, target_size: Optional[int], max_size: Optional[int]) -> float:
    """The WIDER test-protocol scale: short side to ``target_size`` unless the long side would then
    exceed ``max_size`` (then the long side goes to ``max_size``). ``None`` for both keeps 1.0."""
    if target_size is None and max_size is None:
        return 1.0
    short, long = min(height, width), max(height, width)
    if short <= 0:  # an empty image: nothing to resize
        return 1.0
    scale = float(target_size) / short if target_size is not None else 1.0
    if max_size is not None and np.round(scale * long) > max_size:
        scale = float(max_size) / long
    return scale


def check_image(image: object, index: int = 0) -> np.ndarray:
    """``image`` if it is an ``(H, W, 3)`` BGR uint8 array; else ``ValueError`` saying how to fix it.

    uint8 is the contract: a float image in [0, 1] would silently find nothing and a 16-bit one
    would saturate every score, so other dtypes are refused with the conversion to use.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"image {index}: expected an (H, W, 3) BGR array, got "
                         f"{type(image).__name__} with shape {shape}")
    if image.dtype != np.uint8:
        hint = _CONVERSION_HINTS.get(image.dtype.kind, "convert it to uint8 0..255 BGR")
        raise ValueError(f"image {index}: expected dtype uint8 (BGR 0..255), got {image.dtype}; {hint}")
    return image


def _check_size(name: str, value: Optional[int]) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 32:
        # below one stride-32 cell the network sees a single location: no useful detection
        raise ValueError(f"{name} must be an integer >= 32 or None, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class InferenceTransform:
    """Resize policy, mean subtraction and batching of BGR uint8 images.

    ``target_size``: short side to resize to (``None``: keep); ``max_size``: cap on the long side
    (``None``: none); both ``None`` runs at the original size (the reference protocol). ``mean``:
    subtracted per BGR channel. ``channels_last``: build NHWC-strided batches (faster convolutions
    on CPU; values unchanged). ``device``: where batches are built. ``fixed_size``: ``(H, W)`` of a
    network that accepts only that input (an ONNX file exported without ``--dynamic``): images are
    letterboxed into it, i.e. downscaled (keeping the aspect ratio) when larger and padded
    bottom-right with the mean colour, and detections are mapped back by the same scale.
    """

    target_size: Optional[int] = None
    max_size: Optional[int] = None
    mean: Tuple[float, float, float] = BGR_MEAN
    channels_last: bool = False
    device: torch.device = torch.device("cpu")
    fixed_size: Optional[Tuple[int, int]] = None

    def __post_init__(self) -> None:
        if self.fixed_size is not None:
            fixed = tuple(int(v) for v in self.fixed_size)
            if len(fixed) != 2 or min(fixed) < 1:
                raise ValueError(f"fixed_size must be (height, width) of positive integers, got {self.fixed_size!r}")
            object.__setattr__(self, "fixed_size", fixed)
        object.__setattr__(self, "target_size", _check_size("target_size", self.target_size))
        object.__setattr__(self, "max_size", _check_size("max_size", self.max_size))
        if len(self.mean) != 3:
            raise ValueError(f"mean must have 3 (B, G, R) values, got {self.mean!r}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "device", torch.device(self.device))

    def replace(self, **changes) -> "InferenceTransform":
        """A copy with some fields changed (this one is left as it is)."""
        return dataclasses.replace(self, **changes)

    def scale_for(self, height: int, width: int) -> float:
        """The resize factor this policy applies to an ``height x width`` image."""
        scale = resize_scale(height, width, self.target_size, self.max_size)
        if self.fixed_size is not None and min(height, width) > 0:
            fixed_h, fixed_w = self.fixed_size
            if np.round(height * scale) > fixed_h or np.round(width * scale) > fixed_w:
                scale = min(fixed_h / height, fixed_w / width)  # letterbox: fit inside
        return scale

    def resize(self, image: np.ndarray) -> Tuple[np.ndarray, Scale]:
        """Apply the resize policy; returns the image to feed (uint8, or float32 if resized) and its
        scale (one factor, or ``(sx, sy)`` when a side had to be kept at one pixel)."""
        height, width = image.shape[:2]
        scale = self.scale_for(height, width)
        if scale == 1.0:
            return image, scale
        # the reference resizes the float image, which avoids rounding to uint8
        new_w, new_h = int(np.round(width * scale)), int(np.round(height * scale))
        if new_w >= 1 and new_h >= 1:
            return cv2.resize(image.astype(np.float32), None, None, fx=scale, fy=scale,
                              interpolation=cv2.INTER_LINEAR), scale
        # a thin strip whose short side would round to 0 pixels: keep it at 1 pixel, so each axis
        # has its own factor
        new_w, new_h = max(new_w, 1), max(new_h, 1)
        resized = cv2.resize(image.astype(np.float32), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        return resized, (new_w / width, new_h / height)

    def batch(self, images: Sequence[np.ndarray], out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean-subtracted ``(B, 3, H, W)`` float32 tensor of already resized images; smaller images
        are padded bottom-right with zeros (the mean colour) up to the largest height and width.

        ``out``: a batch of an earlier call, written over when its shape, device and layout fit
        (the :class:`~retinaface.Detector` keeps one per thread: a fresh multi-megabyte tensor per
        image is fresh memory, whose page faults cost about as much as the conversion itself).
        """
        height, width = self._batch_size(images)
        if self.fixed_size is not None:
            images = [img[:height, :width] for img in images]  # rounding never exceeds it; be sure
        padded = any(img.shape[:2] != (height, width) for img in images)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        shape = (len(images), 3, height, width)
        if out is not None and tuple(out.shape) == shape and out.dtype == torch.float32 and \
                out.device == self.device and out.is_contiguous(memory_format=memory_format):
            batch = out
        else:
            batch = torch.empty(shape, dtype=torch.float32, device=self.device, memory_format=memory_format)
        if padded:
            batch.zero_()  # zero = the mean colour, as the network saw it in training padding
        if self.device.type == "cpu":
            self._fill_cpu(batch, images)
            return batch
        mean = torch.tensor(self.mean, device=self.device).view(3, 1, 1)
        for i, img in enumerate(images):
            # uint8 goes to the device (a quarter of the bytes), the conversion runs there
            pixels = torch.from_numpy(np.ascontiguousarray(img)).to(self.device).permute(2, 0, 1)
            torch.sub(pixels, mean, out=batch[i, :, :img.shape[0], :img.shape[1]])
        return batch

    def _batch_size(self, images: Sequence[np.ndarray]) -> Tuple[int, int]:
        """``(height, width)`` of a batch of these (resized) images: the fixed size of a fixed-size
        network, else the largest height and width (smaller images are padded bottom-right)."""
        if self.fixed_size is not None:
            return self.fixed_size
        return max(img.shape[0] for img in images), max(img.shape[1] for img in images)

    def uint8_batch(self, images: Sequence[np.ndarray]) -> Optional[np.ndarray]:
        """``(B, H, W, 3)`` uint8 BGR batch for a model that converts and subtracts the mean itself
        (:meth:`retinaface.deploy.openvino_backend.OpenVinoModel.forward_uint8`): images padded
        bottom-right with the mean colour, which that subtraction turns into the zeros
        :meth:`batch` pads with. ``None`` when the policy would resize an image (resizing works on
        float pixels) or the mean is not whole numbers in 0..255 (uint8 padding cannot carry it):
        the float path applies then."""
        if any(m != round(m) or not 0 <= m <= 255 for m in self.mean):
            return None
        if any(self.scale_for(img.shape[0], img.shape[1]) != 1.0 for img in images):
            return None
        height, width = self._batch_size(images)
        if len(images) == 1 and images[0].shape[:2] == (height, width):
            return np.ascontiguousarray(images[0])[None]  # a view: nothing to copy
        batch = np.empty((len(images), height, width, 3), dtype=np.uint8)
        if any(img.shape[:2] != (height, width) for img in images):
            batch[:] = np.array([round(m) for m in self.mean], dtype=np.uint8)
        for i, img in enumerate(images):
            batch[i, :img.shape[0], :img.shape[1]] = img
        return batch

    def _fill_cpu(self, batch: torch.Tensor, images: Sequence[np.ndarray]) -> None:
        """``batch[i] = images[i] - mean`` on CPU, written straight into the batch's memory (an HWC
        view of an NHWC batch, the planes of an NCHW one): in one pass by the compiled kernels where
        they are built and the image is contiguous uint8, else with OpenCV's vectorised subtraction
        (one per plane for NCHW; both about twice as fast as the strided torch copy). Exact: pixels
        minus the mean in float32, as torch computes it."""
        pixels = batch.numpy()
        height, width = pixels.shape[2:]
        if self.channels_last:
            views = pixels.transpose(0, 2, 3, 1)  # (B, H, W, 3), contiguous in this layout
            mean = (*self.mean, 0.0)
            for i, img in enumerate(images):
                h, w = img.shape[:2]
                if self._kernel_fits(img):  # one pass: 0.05 ms against OpenCV's 0.12 at 640x480
                    _kernels.fill_batch(img, h, w, 3 * w, *self.mean, views[i], 3 * width, 0)
                    continue
                _subtract_into(img, mean, views[i, :h, :w])
            return
        for i, img in enumerate(images):
            h, w = img.shape[:2]
            if self._kernel_fits(img):  # one pass into the planes: 0.08 ms against split + subtract's 0.15
                _kernels.fill_batch(img, h, w, 3 * w, *self.mean, pixels[i], width, height * width)
                continue
            for channel, plane in enumerate(_split_planes(img)):
                _subtract_into(plane, self.mean[channel], pixels[i, channel, :h, :w])

    @staticmethod
    def _kernel_fits(image: np.ndarray) -> bool:
        """Whether the compiled fill takes ``image`` (built, contiguous uint8); else OpenCV does."""
        return _kernels is not None and image.dtype == np.uint8 and image.flags.c_contiguous

    def __call__(self, images: Sequence[np.ndarray], out: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, List[Scale]]:
        """Resize and batch non-empty images: ``(batch (B, 3, H, W), scale of each image)``;
        ``out`` as in :meth:`batch`."""
        prepared = [self.resize(img) for img in images]
        return self.batch([img for img, _ in prepared], out=out), [scale for _, scale in prepared]


def _subtract_into(pixels: np.ndarray, mean, dst: np.ndarray) -> None:
    """``dst[...] = pixels - mean`` in float32 (``mean``: a number for a plane, a 4-tuple for HWC
    pixels), with OpenCV's vectorised subtraction (4x NumPy's strided cast here at 640x480).

    OpenCV 5.1 reads a 1x1 array as a scalar: it then returns a new array and leaves ``dst``
    untouched, so the result is checked to be ``dst``'s memory and NumPy writes it otherwise.
    """
    result = cv2.subtract(pixels, mean, dst=dst, dtype=cv2.CV_32F)
    if not np.may_share_memory(result, dst):
        channels = np.float32(mean) if np.ndim(mean) == 0 else np.asarray(mean[:pixels.shape[-1]], np.float32)
        np.subtract(pixels, channels, out=dst, dtype=np.float32)


_SCRATCH = threading.local()


def _split_planes(image: np.ndarray) -> List[np.ndarray]:
    """``cv2.split(image)`` into planes this thread reuses while the shape and type repeat: fresh
    planes each call are fresh memory, whose page faults cost ~0.05 ms per 640x480 image here (a
    scratch timing of the fill: 0.19 ms with fresh planes, 0.15 ms with reused ones)."""
    key = (image.shape, image.dtype)
    if getattr(_SCRATCH, "key", None) != key:
        _SCRATCH.key = key
        _SCRATCH.planes = [np.empty(image.shape[:2], image.dtype) for _ in range(image.shape[2])]
    # the returned list is what OpenCV wrote (the same arrays whenever they fit)
    return cv2.split(image, _SCRATCH.planes)


def scale_factors(scale: Scale) -> Tuple[float, float]:
    """``(x, y)`` resize factors of a scale (one factor for both, or an ``(x, y)`` pair)."""
    return (float(scale), float(scale)) if isinstance(scale, (int, float)) else (float(scale[0]), float(scale[1]))


def to_original_pixels(boxes, points, scale: Scale):
    """Boxes ``(N, 4)`` and flat landmark pairs ``(N, 2k)`` (tensors or NumPy arrays) in
    network-input pixels divided by the image's resize ``scale``, i.e. in the original image's
    pixels."""
    sx, sy = scale_factors(scale)
    if (sx, sy) == (1.0, 1.0):
        return boxes, points
    if isinstance(boxes, np.ndarray):
        factors = np.array([sx, sy], dtype=boxes.dtype)
        return boxes / np.tile(factors, 2), points / np.tile(factors, points.shape[-1] // 2)
    factors = boxes.new_tensor([sx, sy])
    return boxes / factors.repeat(2), points / factors.repeat(points.shape[-1] // 2)


__all__ = ["InferenceTransform", "Scale", "check_image", "resize_scale", "scale_factors", "to_original_pixels"]
