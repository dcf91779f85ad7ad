"""OpenVINO as a third runtime inside :class:`retinaface.Detector`, beside PyTorch and ONNX Runtime.

Owns :class:`OpenVinoModel`: it reads an ``.onnx`` file written by this toolkit's exporter (float,
or INT8 from :mod:`retinaface.deploy.quantize`; raw outputs only), rebuilds the :class:`ModelConfig` from
the file's metadata, and is called like the torch model and like
:class:`retinaface.deploy.runtime.OnnxRuntimeModel`: a ``(B, 3, H, W)`` float tensor in, ``(loc, conf,
landms)`` tensors out. Pre- and post-processing stay the Detector's, so all runtimes share one
pipeline and give the same detections up to float rounding.

When the Detector resizes nothing it hands over the uint8 image itself
(:meth:`OpenVinoModel.forward_uint8`): the conversion to float and the mean subtraction are then
compiled into the model (OpenVINO's pre-processing) instead of building a float batch.

A dynamic-shape file is compiled once per input shape met (reshaped to it first: OpenVINO's CPU
plugin is faster on static shapes); the last few compiled shapes are cached, so a video or a
benchmark at one size compiles once.
"""
from __future__ import annotations

import collections
import json
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..config import ModelConfig
from ..conventions import first_line
from .export.metadata import DETECTION_TASK, EXPORT_FORMAT, RAW_OUTPUTS, ExportedModel, export_task

PathLike = Union[str, Path]
COMPILED_SHAPES_KEPT = 4


class OpenVinoError(RuntimeError):
    """The file cannot run on OpenVINO; the message is one line naming the file."""


def openvino_available() -> bool:
    """Whether the optional ``openvino`` package can be imported."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class OpenVinoModel(ExportedModel):
    """An exported RetinaFace run by OpenVINO, usable wherever the Detector expects the model.

    ``device`` is OpenVINO's device name (``"CPU"`` by default); ``threads`` caps its inference
    threads (``None``: OpenVINO's choice). ``hint`` is OpenVINO's performance hint (``LATENCY``:
    one request at a time, what the Detector does). ``precision`` is the inference precision of
    float layers: ``f32`` (default; detections equal the other runtimes' to float rounding) or
    ``bf16`` / ``f16`` (faster where the CPU has them; OpenVINO's own default on such CPUs). Outputs are CPU float32 tensors; ``eval()``,
    ``to()`` and ``train(False)`` are accepted and do nothing; there are no parameters.
    """

    runtime_name = "OpenVINO"

    def __init__(self, path: PathLike, device: str = "CPU", threads: Optional[int] = None,
                 hint: str = "LATENCY", precision: str = "f32") -> None:
        try:
            import openvino as ov
        except ImportError:
            raise OpenVinoError("OpenVINO is not installed: pip install 'retinaface[openvino]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise OpenVinoError(f"{self.path}: ONNX file not found")
        self.metadata = _onnx_metadata(self.path)
        if self.metadata.get("format") != EXPORT_FORMAT:
            raise OpenVinoError(f"{self.path}: no retinaface metadata (export it with 'retinaface export')")
        if export_task(self.metadata) != DETECTION_TASK:
            raise OpenVinoError(f"{self.path}: a {export_task(self.metadata)} network, not a face detector")
        if json.loads(self.metadata.get("with_postprocess", "false")):
            raise OpenVinoError(f"{self.path}: exported with --with-postprocess; the Detector needs the raw "
                                f"outputs, export without it")
        try:
            self.config = ModelConfig.from_dict(json.loads(self.metadata["config"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise OpenVinoError(f"{self.path}: unusable config metadata ({exc})") from None
        self.core = ov.Core()
        try:
            self._model = self.core.read_model(str(self.path))
        except Exception as exc:
            raise OpenVinoError(f"{self.path}: OpenVINO cannot read it ({first_line(exc)})") from None
        names = [out.get_any_name() for out in self._model.outputs]
        if tuple(names) != RAW_OUTPUTS:
            raise OpenVinoError(f"{self.path}: outputs are {names}, expected {list(RAW_OUTPUTS)}")
        self.input_name = self._model.inputs[0].get_any_name()
        partial = self._model.inputs[0].get_partial_shape()
        # static dims are ints, dynamic ones None (as OnnxRuntimeModel's names play that role)
        self._set_input_shape([int(d.get_length()) if d.is_static else None for d in partial])
        self.ov_device = device
        # unpinned threads: pinned ones fight the post-processing thread on a small CPU
        self.config_options: Dict[str, Any] = {"PERFORMANCE_HINT": hint, "ENABLE_CPU_PINNING": False}
        if precision not in ("f32", "bf16", "f16"):
            raise OpenVinoError(f"precision {precision!r}: choose f32, bf16 or f16")
        # OpenVINO's CPU plugin computes float layers in bf16 on CPUs that have it (this one does)
        # unless told otherwise; f32 keeps the detections equal to the other runtimes'
        self.precision_hint = precision
        self.config_options["INFERENCE_PRECISION_HINT"] = precision
        if threads is not None:
            self.config_options["INFERENCE_NUM_THREADS"] = int(threads)
        self.device = torch.device("cpu")
        self._compiled: "collections.OrderedDict[Tuple[Any, ...], Any]" = collections.OrderedDict()

    @property
    def backbone(self) -> str:
        return self.config.backbone

    @property
    def precision(self) -> str:
        """``"int8"`` for a quantised file, else ``"float32"``."""
        return self.metadata.get("precision", "float32")

    def _request(self, shape: Tuple[int, ...], mean: Optional[Tuple[float, float, float]] = None):
        """The infer request of NCHW input ``shape``; with ``mean``, of the variant that takes
        ``(B, H, W, 3)`` uint8 BGR and converts and subtracts ``mean`` inside the compiled model."""
        static = not any(d is None for d in self.input_shape)
        key = (shape if not static else tuple(self.input_shape), mean)
        request = self._compiled.get(key)
        if request is not None:
            self._compiled.move_to_end(key)
            return request
        model = self._model
        if not static or mean is not None:
            model = model.clone()
        if not static:
            model.reshape({self.input_name: list(shape)})
        if mean is not None:
            import openvino as ov
            import openvino.opset13 as opset
            from openvino.preprocess import PrePostProcessor

            steps = PrePostProcessor(model)
            steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
            steps.input().model().set_layout(ov.Layout("NCHW"))
            # x + (-mean), not the mean() step: the same values (negation is exact). The CPU plugin
            # runs this Add on the NHWC input in one pass with the u8 -> f32 conversion; mean()
            # put a separate transpose before its subtraction (the compiled runtime graphs) and
            # was 0.15-0.5 ms slower (mobilenet0.25 640x480, 2 threads, float and INT8 files; a
            # scratch timing)
            negated = opset.constant(-np.asarray(mean, dtype=np.float32).reshape(1, 1, 1, 3))
            steps.input().preprocess().convert_element_type(ov.Type.f32).custom(
                lambda pixels: opset.add(pixels, negated).output(0))
            model = steps.build()
        try:
            compiled = self.core.compile_model(model, self.ov_device, self.config_options)
        except Exception as exc:
            raise OpenVinoError(f"{self.path}: OpenVINO cannot compile it for {shape} "
                                f"({first_line(exc)})") from None
        request = compiled.create_infer_request()
        self._compiled[key] = request
        while len(self._compiled) > COMPILED_SHAPES_KEPT:
            self._compiled.popitem(last=False)
        return request

    def __call__(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shape = tuple(int(d) for d in images.shape)
        self._check_shape(shape)
        feed = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return self._infer(self._request(shape), feed, images.device)

    # the Detector hands uint8 images straight to a model that has this (no float batch to build)
    takes_uint8 = True

    def forward_uint8(self, images: np.ndarray, mean: Sequence[float]
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The network on ``(B, H, W, 3)`` uint8 BGR images: the float conversion, the subtraction
        of ``mean`` and the NHWC -> NCHW step run inside the compiled model (OpenVINO's
        pre-processing, one pass over the uint8 input), which saves the Detector's float batch:
        ~0.3 ms per 640x480 image here (benchmarks/bench_detect.py --runtimes openvino), the
        same detections."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"expected a (B, H, W, 3) uint8 array, got {images.dtype} {images.shape}")
        batch, height, width = images.shape[:3]
        shape = (int(batch), 3, int(height), int(width))
        self._check_shape(shape)
        request = self._request(shape, tuple(float(v) for v in mean))
        return self._infer(request, np.ascontiguousarray(images), torch.device("cpu"))

    @staticmethod
    def _infer(request: Any, feed: np.ndarray, device: torch.device
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # the input is read in place (infer is synchronous); outputs come back as copies, since the
        # request's own buffers are reused by the next call
        results = request.infer({0: feed}, share_inputs=True, share_outputs=False)
        outs = [torch.from_numpy(results[request.model_outputs[i]]) for i in range(3)]
        return tuple(out.to(device) for out in outs)

    def __repr__(self) -> str:
        return (f"OpenVinoModel({str(self.path)!r}, backbone={self.config.backbone!r}, "
                f"file={self.precision!r}, compute={self.precision_hint!r}, device={self.ov_device!r})")


def load_openvino_model(path: PathLike, backbone: Optional[str] = None, device: str = "CPU",
                        threads: Optional[int] = None, precision: str = "f32") -> OpenVinoModel:
    """Deprecated: ``retinaface.load_runtime(path, "openvino", backbone=..., threads=...)`` (or
    :class:`OpenVinoModel` for another ``device`` / ``precision``), kept for one release."""
    warnings.warn("retinaface.deploy.openvino_backend.load_openvino_model is deprecated; use "
                  "retinaface.load_runtime(path, 'openvino')", DeprecationWarning, stacklevel=2)
    model = OpenVinoModel(path, device=device, threads=threads, precision=precision)
    if backbone is not None and backbone != model.config.backbone:
        raise OpenVinoError(f"{path}: ONNX file holds backbone {model.config.backbone!r}, not {backbone!r}")
    return model


def _onnx_metadata(path: Path) -> Dict[str, str]:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise OpenVinoError(f"{path}: not a readable ONNX file ({first_line(exc)})") from None
    return {prop.key: prop.value for prop in proto.metadata_props}


__all__ = ["OpenVinoError", "OpenVinoModel", "openvino_available"]
