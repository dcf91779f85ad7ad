"""What this install runs on: versions of the libraries the toolkit uses and which of its optional
parts are active (``retinaface env``, in the spirit of ``python -m torch.utils.collect_env``).

Every probe reports, never raises: a missing optional library is a row that says so. The
compiled part is reported from the modules that use it, so the report says what the detect path
will actually do in this process, not only what files exist.
"""
from __future__ import annotations

import importlib
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import cv2
import torch

from .inference import postprocess, transform
from .version import __version__


@dataclass(frozen=True)
class Component:
    """One row of the report: ``state`` is a version, ``"active"``, or why it is not there."""

    name: str
    state: str
    detail: str = ""
    available: bool = True

    def as_dict(self) -> dict:
        return {"name": self.name, "state": self.state, "detail": self.detail, "available": self.available}


def _module_version(module_name: str, attribute: str = "__version__") -> Optional[str]:
    try:
        module = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - any failure to import means "not usable here"
        return None
    return str(getattr(module, attribute, "unknown version"))


def _library(name: str, module_name: str, purpose: str) -> Component:
    version = _module_version(module_name)
    if version is None:
        return Component(name, "not installed", purpose, available=False)
    return Component(name, version, purpose)


def _torch_rows() -> List[Component]:
    rows = [Component("torch", torch.__version__, f"{torch.get_num_threads()} CPU threads")]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        cudnn = torch.backends.cudnn.version()
        rows.append(Component("CUDA", str(torch.version.cuda), f"{names}; cuDNN {cudnn}"))
    else:
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
        rows.append(Component("CUDA", "no GPU visible", built, available=False))
    return rows


def _kernels_row() -> Component:
    # the same module object both detect-path users hold: built, imported and in use, or not
    kernels = postprocess._kernels
    if kernels is None or transform._kernels is None:
        return Component("detect kernels (C)", "not built",
                         "detect path on OpenCV / NumPy / torchvision.ops.nms (same results, slower)",
                         available=False)
    return Component("detect kernels (C)", "active", f"{kernels.__file__}: input fill, candidates, decoding, NMS")


def _onnxruntime_row() -> Component:
    try:
        import onnxruntime
    except Exception:  # noqa: BLE001
        return Component("onnxruntime", "not installed", "pip install retinaface-toolkit[export]", available=False)
    return Component("onnxruntime", onnxruntime.__version__, "providers: " + ", ".join(onnxruntime.get_available_providers()))


def _openvino_row() -> Component:
    try:
        import openvino
    except Exception:  # noqa: BLE001
        return Component("OpenVINO", "not installed", "pip install retinaface-toolkit[openvino]", available=False)
    try:
        devices = ", ".join(openvino.Core().available_devices)
    except Exception as exc:  # noqa: BLE001 - a broken plugin still leaves the version worth reporting
        devices = f"devices unavailable ({exc})"
    return Component("OpenVINO", openvino.__version__, f"devices: {devices}")


def collect_environment() -> List[Component]:
    """The report's rows, in a fixed order (the toolkit, Python, then each library and part)."""
    rows = [
        Component("retinaface-toolkit", __version__, str(Path(__file__).resolve().parent)),
        Component("Python", platform.python_version(), f"{sys.executable} on {platform.platform()}"),
    ]
    rows += _torch_rows()
    rows += [
        _library("torchvision", "torchvision", "NMS, image decoding"),
        Component("OpenCV", cv2.__version__, "image I/O, resizing, alignment"),
        _library("numpy", "numpy", ""),
        _library("timm", "timm", "backbones (timm:<name>)"),
        _kernels_row(),
        _onnxruntime_row(),
        _openvino_row(),
        _library("onnx", "onnx", "ONNX export"),
        _library("pytorch-metric-learning", "pytorch_metric_learning", "recognition losses"),
    ]
    return rows


def format_environment(rows: List[Component]) -> str:
    width = max(len(row.name) for row in rows)
    state_width = max(len(row.state) for row in rows)
    return "\n".join(f"{row.name:<{width}}  {row.state:<{state_width}}  {row.detail}".rstrip() for row in rows)


__all__ = ["Component", "collect_environment", "format_environment"]
