"""``Detector``: images in, face boxes with scores and five landmarks out.

A detector is three parts handed to its constructor, as torchvision's detection models are: the
network, an :class:`~retinaface.inference.transform.InferenceTransform` (resize policy, mean, batching) and a
:class:`~retinaface.inference.postprocess.PostProcessor` (threshold, top-k, decoding, NMS). The detector adds
the cached priors and the loop over batches. None of the parts changes while detecting, so one
detector may be shared by threads; :meth:`Detector.run` detects with other parts (test-time
augmentation builds one transform per view) without touching the detector.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .align import align_faces
from ..checkpoint import load_model
from ..conventions import ALIGNED_FACE_SIZE, DET_SCORE, DETECTION_COLUMNS, DISPLAY_THRESHOLD
from .postprocess import PostProcessor
from ..priors import PriorGenerator
from ..deploy.runtime import RUNTIMES, load_runtime
from ..runtime_interface import LandmarkModel, runtime_traits
from .transform import InferenceTransform, check_image
from ..zoo import announce_default_detector

_UNSET: Any = object()  # "not given", as None is a meaningful value for sizes and top-k

__all__ = ["Detector", "empty_detections"]


class Detector:
    """Runs a RetinaFace model on BGR uint8 images and returns ``(N, 15)`` float32 detections.

    Each row is ``[x1, y1, x2, y2, score, l0x, l0y, ..., l4x, l4y]`` in the input image's pixels,
    sorted by decreasing score. ``model`` defaults to the zoo's default detector
    (:data:`retinaface.zoo.DEFAULT_DETECTOR`, Pytorch_Retinaface's mobilenet0.25; the first use
    downloads it, see :mod:`retinaface.zoo`). ``transform`` defaults to the original size with the
    BGR mean, ``postprocess`` to the reference demo's settings with the model config's variances.

    The keyword arguments are a convenience that override those parts' fields:
    ``conf_threshold`` (0.02), ``nms_threshold`` (0.4), ``pre_nms_topk`` (5000),
    ``post_nms_topk`` (750; ``None``: no cap), ``plus_one_nms`` (True), ``target_size`` /
    ``max_size`` (``None``: origin size), ``channels_last`` (default: on for PyTorch models on CPU,
    where NHWC batches are faster; outputs unchanged up to float rounding, the model is not
    modified). ``device`` defaults to the model's. Invalid values raise ``ValueError`` naming the
    parameter.
    """

    def __init__(self, model: Optional[nn.Module] = None, transform: Optional[InferenceTransform] = None,
                 postprocess: Optional[PostProcessor] = None, *,
                 conf_threshold: float = _UNSET, nms_threshold: float = _UNSET,
                 pre_nms_topk: Optional[int] = _UNSET, post_nms_topk: Optional[int] = _UNSET,
                 device: Union[str, torch.device, None] = None, target_size: Optional[int] = _UNSET,
                 max_size: Optional[int] = _UNSET, plus_one_nms: bool = _UNSET,
                 channels_last: Optional[bool] = None) -> None:
        if model is None:
            # no network given: the zoo's default real detector (fetched, verified and cached on
            # first use), named once per process
            model = load_model(announce_default_detector(), device=device or "cpu")
        if device is None:
            # an ONNX Runtime model (retinaface.deploy.runtime) has no parameters; it states its device
            device = getattr(model, "device", None) or next(model.parameters()).device
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        config = model.config

        post_changes = {k: v for k, v in dict(conf_threshold=conf_threshold, nms_threshold=nms_threshold,
                                              pre_nms_topk=pre_nms_topk, post_nms_topk=post_nms_topk,
                                              plus_one_nms=plus_one_nms).items() if v is not _UNSET}
        base_post = postprocess if postprocess is not None else PostProcessor.for_model(model)
        self.postprocess: PostProcessor = base_post.replace(**post_changes) if post_changes else base_post

        transform_changes = {k: v for k, v in dict(target_size=target_size, max_size=max_size).items()
                             if v is not _UNSET}
        if channels_last is None and transform is None:
            # On CPU an NHWC input makes oneDNN pick NHWC convolutions: 20-40 % faster for
            # mobilenet0.25 and ResNet-50 (benchmarks/bench_detect.py prints both layouts). The
            # weights need not be converted, so the caller's model is left as it is.
            channels_last = self.device.type == "cpu" and isinstance(model, nn.Module) and \
                any(True for _ in model.parameters())
        if channels_last is not None:
            transform_changes["channels_last"] = bool(channels_last)
        base = transform if transform is not None else InferenceTransform()
        # a network of one fixed input size (an ONNX file exported without --dynamic): letterbox
        traits = runtime_traits(model)
        fixed = traits.fixed_input
        self._max_batch: Optional[int] = None
        if fixed is not None:
            self._max_batch = int(fixed[0])
            transform_changes["fixed_size"] = (int(fixed[1]), int(fixed[2]))
        # batches are built where the model runs
        self.transform: InferenceTransform = base.replace(device=self.device, **transform_changes)
        self.priors = PriorGenerator(config.min_sizes, config.steps)
        # each thread's last input batch, written over by its next batch of the same shape
        self._batches = threading.local()
        self._takes_uint8 = traits.takes_uint8 and self.device.type == "cpu"

    # read-only views of the parts' settings (the parts are immutable; build a new detector, or
    # pass other parts to run(), to detect differently)
    conf_threshold = property(lambda self: self.postprocess.conf_threshold)
    nms_threshold = property(lambda self: self.postprocess.nms_threshold)
    pre_nms_topk = property(lambda self: self.postprocess.pre_nms_topk)
    post_nms_topk = property(lambda self: self.postprocess.post_nms_topk)
    plus_one_nms = property(lambda self: self.postprocess.plus_one_nms)
    target_size = property(lambda self: self.transform.target_size)
    max_size = property(lambda self: self.transform.max_size)
    channels_last = property(lambda self: self.transform.channels_last)

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path, None] = None, backbone: Optional[str] = None,
                        device: Union[str, torch.device] = "cpu", backend: Optional[str] = None,
                        providers: Optional[Sequence[str]] = None, width: Optional[float] = None,
                        threads: Optional[int] = None, **kwargs: Any) -> "Detector":
        """A detector over checkpoint or exported file ``path`` (``.pth``, ``.onnx``, TorchScript),
        or a zoo name (``"retinaface_mnet025"``); ``None`` is the zoo's default detector, named once.
        The model is :func:`retinaface.deploy.runtime.load_runtime`'s.

        ``backend`` is one of :data:`retinaface.deploy.runtime.RUNTIMES` (``"torch"`` is accepted for
        ``"pytorch"``); the default ``auto`` runs an ``.onnx`` file on ONNX Runtime and a ``.pth`` or
        TorchScript file on PyTorch. A ``.pth`` asked to run on ``onnxruntime`` or ``openvino`` is exported once, to a
        cache beside it (:func:`retinaface.deploy.runtime.cached_onnx_export`). ``width`` selects an
        adaptive checkpoint's width; ``providers`` are ONNX Runtime's, ``threads`` caps an external
        runtime's threads. ``kwargs`` go to the constructor.
        """
        runtime = "pytorch" if backend == "torch" else (backend or "auto")
        if runtime not in RUNTIMES:
            raise ValueError(f"backend={backend!r}: choose one of {', '.join(RUNTIMES)}")
        if providers is not None and runtime not in ("auto", "onnxruntime"):
            raise ValueError(f"providers={providers!r} are ONNX Runtime's; backend {backend!r} takes none")
        if path is None:
            path = announce_default_detector()
        model = load_runtime(path, runtime=runtime, backbone=backbone, width=width, device=str(device),
                             threads=threads, providers=providers)
        return cls(model, device=device, **kwargs)

    # -- inference --------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The bare network on a batch from ``self.transform`` (eval mode: softmaxed scores)."""
        return self.model(batch)

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Detections of one BGR uint8 ``(H, W, 3)`` image, ``(N, 15)`` float32 in its pixels."""
        return self.detect_batch([image])[0]

    def detect_and_align(self, image: np.ndarray, size: int = ALIGNED_FACE_SIZE,
                         min_score: float = DISPLAY_THRESHOLD) -> Tuple[np.ndarray, np.ndarray]:
        """Faces of one BGR uint8 image scoring at least ``min_score`` and their aligned crops.

        Returns ``(detections (N, 15), crops uint8 (N, size, size, 3))``: each crop is the face
        warped by a similarity transform onto the five-point ArcFace template
        (:func:`retinaface.inference.align.align_faces`), ready for an embedding network.
        """
        dets = self.detect(image)
        dets = dets[dets[:, DET_SCORE] >= min_score]
        if len(dets) == 0:
            return dets, np.zeros((0, size, size, 3), dtype=np.uint8)
        return dets, align_faces(image, dets, size)

    def detect_and_landmark(self, image: np.ndarray, landmark_model: LandmarkModel,
                            min_score: float = DISPLAY_THRESHOLD) -> Tuple[np.ndarray, np.ndarray]:
        """Faces of one BGR uint8 image scoring at least ``min_score`` and their dense landmarks.

        Returns ``(detections (N, 15), points (N, K, 2))`` in the image's pixels, in the same order:
        ``landmark_model`` (a network of :func:`retinaface.landmarks.load_landmark_model`, or any
        :class:`~retinaface.runtime_interface.LandmarkModel`) crops every face by its box with the
        crop policy it was trained with and predicts them in batches. The same as
        :func:`retinaface.landmarks.inference.detect_and_landmark` with this detector.
        """
        dets = self.detect(image)
        dets = dets[dets[:, DET_SCORE] >= min_score]
        return dets, landmark_model.landmarks_in_boxes(image, dets[:, :4])

    def detect_batch(self, images: Sequence[np.ndarray], batch_size: int = 16) -> List[np.ndarray]:
        """Detections of several images (any sizes), ``batch_size`` per forward pass.

        Images of one size give exactly what :meth:`detect` gives; padded images of different sizes
        agree up to the network's border effects at the padded edge.
        """
        return self.run(images, batch_size=batch_size)

    @torch.inference_mode()
    def run(self, images: Sequence[np.ndarray], batch_size: int = 16,
            transform: Optional[InferenceTransform] = None,
            postprocess: Optional[PostProcessor] = None) -> List[np.ndarray]:
        """:meth:`detect_batch` with another transform and/or post-processor for this call only.

        The detector itself is not changed, so calls with different parts may run concurrently.
        It holds the one inference-mode context of ``detect`` and ``detect_batch`` (each context
        entered costs microseconds, which count at small inputs).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        transform = self.transform if transform is None else transform
        if self._max_batch is not None:
            batch_size = min(batch_size, self._max_batch)
            if transform.fixed_size != self.transform.fixed_size:
                transform = transform.replace(fixed_size=self.transform.fixed_size)
        postprocess = self.postprocess if postprocess is None else postprocess
        for index, image in enumerate(images):  # all checked before any work is done
            check_image(image, index)
        results: List[np.ndarray] = []
        for start in range(0, len(images), batch_size):
            chunk = list(images[start:start + batch_size])
            chunk_results = [empty_detections() for _ in chunk]
            # an empty (0-pixel) image has no faces and cannot go through the convolutions
            live = [i for i, img in enumerate(chunk) if img.shape[0] > 0 and img.shape[1] > 0]
            if live:
                live_images = [chunk[i] for i in live]
                # a model that takes uint8 images (OpenVINO) converts them itself: no float batch
                pixels = transform.uint8_batch(live_images) if self._takes_uint8 else None
                if pixels is not None:
                    loc, conf, landms = self.model.forward_uint8(pixels, transform.mean)
                    input_size, scales = pixels.shape[1:3], [1.0] * len(live)
                else:
                    batch, scales = transform(live_images, out=getattr(self._batches, "last", None))
                    self._batches.last = batch
                    loc, conf, landms = self.model(batch)
                    input_size = batch.shape[-2:]
                priors = self.priors(input_size[0], input_size[1], self.device, loc.dtype)
                for row, (index, scale) in enumerate(zip(live, scales)):
                    dets = postprocess(loc[row], conf[row], landms[row], priors, input_size, scale)
                    chunk_results[index] = dets.float().cpu().numpy()
            results.extend(chunk_results)
        return results

    def __repr__(self) -> str:
        return (f"Detector(model={type(self.model).__name__}({self.model.config.backbone!r}), "
                f"transform={self.transform}, postprocess={self.postprocess})")


def empty_detections() -> np.ndarray:
    """A ``(0, 15)`` float32 detection array (no faces)."""
    return np.zeros((0, DETECTION_COLUMNS), dtype=np.float32)
