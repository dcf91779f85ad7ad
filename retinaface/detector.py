"""``Detector``: images in, face boxes with scores and five landmarks out.

Owns the inference pipeline around a RetinaFace network: the optional test-time resize policy,
mean subtraction, batching of images (equal sizes stacked, different sizes padded bottom-right into
one forward), cached priors, and the call into :mod:`retinaface.postprocess`.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch import nn

from .box_coder import BoxCoder
from .postprocess import DETECTION_COLUMNS, postprocess_image
from .priors import PriorGenerator

BGR_MEAN = (104.0, 117.0, 123.0)


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


class Detector:
    """Runs a RetinaFace model on BGR uint8 images and returns ``(N, 15)`` float32 detections.

    Each row is ``[x1, y1, x2, y2, score, l0x, l0y, ..., l4x, l4y]`` in the input image's pixels,
    sorted by decreasing score. Defaults are the reference demo's (threshold 0.02, top 5000 before
    NMS 0.4 with the +1 pixel convention, top 750 after); ``None`` for a top-k means no cap.
    ``channels_last`` feeds the network NHWC batches (default: on for PyTorch models on CPU, where
    it is faster); outputs are unchanged up to float rounding and the model is not modified.
    """

    def __init__(self, model: nn.Module, conf_threshold: float = 0.02, nms_threshold: float = 0.4,
                 pre_nms_topk: Optional[int] = 5000, post_nms_topk: Optional[int] = 750,
                 device: Union[str, torch.device, None] = None, target_size: Optional[int] = None,
                 max_size: Optional[int] = None, plus_one_nms: bool = True,
                 channels_last: Optional[bool] = None) -> None:
        if not 0.0 <= conf_threshold < 1.0:
            raise ValueError(f"conf_threshold must be in [0, 1), got {conf_threshold}")
        if not 0.0 < nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold must be in (0, 1], got {nms_threshold}")
        if device is None:
            # an ONNX Runtime model (retinaface.runtime) has no parameters; it states its device
            device = getattr(model, "device", None) or next(model.parameters()).device
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        if channels_last is None:
            # On CPU an NHWC input makes oneDNN pick NHWC convolutions: 20-40 % faster for
            # mobilenet0.25 and ResNet-50 (benchmarks/bench_detect.py prints both layouts). The
            # weights need not be converted, so the caller's model is left as it is.
            channels_last = self.device.type == "cpu" and isinstance(model, nn.Module) and \
                any(True for _ in model.parameters())
        self.channels_last = channels_last
        config = model.config
        self.priors = PriorGenerator(config.min_sizes, config.steps)
        self.box_coder = BoxCoder(config.variances)
        self.conf_threshold = conf_threshold
        self.nms_threshold = nms_threshold
        self.pre_nms_topk = pre_nms_topk
        self.post_nms_topk = post_nms_topk
        self.target_size = target_size
        self.max_size = max_size
        self.plus_one_nms = plus_one_nms
        self._mean = torch.tensor(BGR_MEAN, device=self.device)

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], backbone: Optional[str] = None,
                        device: Union[str, torch.device] = "cpu", backend: Optional[str] = None,
                        providers: Optional[Sequence[str]] = None, width: Optional[float] = None,
                        **kwargs) -> "Detector":
        """A detector over :func:`retinaface.load_model` of ``path`` (at ``width`` for an adaptive
        checkpoint), or over ONNX Runtime (:class:`retinaface.runtime.OnnxRuntimeModel`, with
        ``providers``) when ``backend`` is ``"onnxruntime"`` or, by default, when ``path`` ends in
        ``.onnx`` (an exported file has its width fixed at export time)."""
        if backend is None:
            backend = "onnxruntime" if Path(path).suffix.lower() == ".onnx" else "torch"
        if backend == "onnxruntime":
            if width is not None:
                raise ValueError(f"{path}: width={width} needs the PyTorch checkpoint; an ONNX file runs at "
                                 f"the width it was exported with (tools/export.py --width)")
            from .runtime import load_onnx_model

            return cls(load_onnx_model(path, backbone=backbone, providers=providers), device=device, **kwargs)
        if backend != "torch" or providers is not None:
            raise ValueError(f"backend={backend!r} with providers={providers!r}: use backend 'torch' "
                             f"(no providers) or 'onnxruntime'")
        from .checkpoint import load_model

        return cls(load_model(path, backbone=backbone, device=device, width=width), device=device, **kwargs)

    # -- pre-processing ---------------------------------------------------------------------
    def _check_image(self, image: np.ndarray, index: int = 0) -> None:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", None)
            raise ValueError(f"image {index}: expected an (H, W, 3) BGR array, got "
                             f"{type(image).__name__} with shape {shape}")

    def prepare(self, image: np.ndarray) -> Tuple[np.ndarray, Union[float, Tuple[float, float]]]:
        """Apply the resize policy; returns the image to feed (uint8, or float32 if resized) and its
        scale (one factor, or ``(sx, sy)`` when a side had to be kept at one pixel)."""
        height, width = image.shape[:2]
        scale = resize_scale(height, width, self.target_size, self.max_size)
        if scale != 1.0:
            # the reference resizes the float image, which avoids rounding to uint8
            new_w, new_h = int(np.round(width * scale)), int(np.round(height * scale))
            if new_w >= 1 and new_h >= 1:
                image = cv2.resize(image.astype(np.float32), None, None, fx=scale, fy=scale,
                                   interpolation=cv2.INTER_LINEAR)
            else:
                # a thin strip whose short side would round to 0 pixels: keep it at 1 pixel, so
                # each axis has its own factor
                new_w, new_h = max(new_w, 1), max(new_h, 1)
                image = cv2.resize(image.astype(np.float32), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
                return image, (new_w / width, new_h / height)
        return image, scale

    def to_batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Mean-subtracted ``(B, 3, H, W)`` float tensor; smaller images padded bottom-right with
        zeros (the mean colour) up to the largest height and width."""
        height = max(img.shape[0] for img in images)
        width = max(img.shape[1] for img in images)
        padded = any(img.shape[:2] != (height, width) for img in images)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        batch = torch.empty((len(images), 3, height, width), dtype=torch.float32, device=self.device,
                            memory_format=memory_format)
        if padded:
            batch.zero_()  # zero = the mean colour, as the network saw it in training padding
        mean = self._mean.view(3, 1, 1)
        for i, img in enumerate(images):
            pixels = torch.from_numpy(np.ascontiguousarray(img)).to(self.device).permute(2, 0, 1)
            # one pass: HWC uint8 -> CHW float minus mean, written straight into the batch
            torch.sub(pixels, mean, out=batch[i, :, :img.shape[0], :img.shape[1]])
        return batch

    # -- inference --------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The bare network on a prepared batch (eval mode: softmaxed scores)."""
        return self.model(batch)

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> np.ndarray:
        """Detections of one BGR uint8 image, ``(N, 15)`` float32 in its pixels."""
        return self.detect_batch([image])[0]

    @torch.inference_mode()
    def detect_batch(self, images: Sequence[np.ndarray], batch_size: int = 16) -> List[np.ndarray]:
        """Detections of several images (any sizes), ``batch_size`` per forward pass.

        Images of one size give exactly what :meth:`detect` gives; padded images of different sizes
        agree up to the network's border effects at the padded edge.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        results: List[np.ndarray] = []
        for start in range(0, len(images), batch_size):
            chunk = list(images[start:start + batch_size])
            for i, img in enumerate(chunk):
                self._check_image(img, start + i)
            chunk_results = [empty_detections() for _ in chunk]
            # an empty (0-pixel) image has no faces and cannot go through the convolutions
            live = [i for i, img in enumerate(chunk) if img.shape[0] > 0 and img.shape[1] > 0]
            if live:
                prepared = [self.prepare(chunk[i]) for i in live]
                batch = self.to_batch([img for img, _ in prepared])
                loc, conf, landms = self.model(batch)
                input_size = batch.shape[-2:]
                priors = self.priors(input_size[0], input_size[1], self.device, loc.dtype)
                for row, (index, (_, scale)) in enumerate(zip(live, prepared)):
                    dets = postprocess_image(
                        loc[row], conf[row], landms[row], priors, self.box_coder, input_size, scale,
                        conf_threshold=self.conf_threshold, nms_threshold=self.nms_threshold,
                        pre_nms_topk=self.pre_nms_topk, post_nms_topk=self.post_nms_topk,
                        plus_one_nms=self.plus_one_nms)
                    chunk_results[index] = dets.float().cpu().numpy()
            results.extend(chunk_results)
        return results


def empty_detections() -> np.ndarray:
    return np.zeros((0, DETECTION_COLUMNS), dtype=np.float32)
