"""A landmark network exported to ONNX (:mod:`retinaface.landmarks.export`), run by ONNX Runtime
wherever the PyTorch network runs: :func:`~retinaface.landmarks.task.predict_crops`,
:func:`~retinaface.landmarks.inference.landmarks_in_boxes`, ``detect_and_landmark`` and
``retinaface eval-landmarks --weights FILE.onnx`` (through
:func:`~retinaface.landmarks.task.load_landmark_model`).

The file carries what using it needs (its metadata, :data:`LANDMARK_TASK` files): the network's
:class:`~retinaface.landmarks.models.LandmarkModelConfig` (points, input size), the scheme and the
crop margin it was trained with. Its input is the PyTorch network's: ``(B, 3, S, S)`` float32, RGB,
ImageNet mean / std (:func:`~retinaface.landmarks.task.normalise_crops`); its one output ``points`` is
``(B, K, 2)`` normalised crop coordinates. The session is opened by
:func:`retinaface.deploy.runtime.open_session`, the toolkit's one door to ONNX Runtime.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

from ..deploy.export.metadata import EXPORT_FORMAT, ExportError, export_task
from ..deploy.runtime import OnnxSessionModel
from .models import LandmarkModelConfig, landmarks_in_boxes

PathLike = Union[str, Path]

LANDMARK_TASK = "landmarks"
LANDMARK_OUTPUTS: Tuple[str, ...] = ("points",)


def landmark_export_facts(path: PathLike, metadata: Dict[str, str]) -> Tuple[LandmarkModelConfig, str, float]:
    """``(network config, scheme name, crop margin)`` a landmark export records; ``ExportError``
    naming the file when it is not one (a detector export, a foreign ONNX file, damaged metadata)."""
    if metadata.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path}: no retinaface metadata (export a landmark checkpoint with `retinaface export`)")
    task = export_task(metadata)
    if task != LANDMARK_TASK:
        raise ExportError(f"{path}: a {task} export, not a landmark network")
    try:
        config = LandmarkModelConfig.from_dict(json.loads(metadata["config"]))
        return config, str(metadata["scheme"]), float(metadata["crop_margin"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ExportError(f"{path}: unusable landmark metadata ({exc})") from None


class LandmarkOnnxModel(OnnxSessionModel):
    """An exported landmark network under ONNX Runtime, called like the PyTorch one: a
    ``(B, 3, S, S)`` float tensor in, ``(B, K, 2)`` normalised points out (on the input's device).
    Carries ``config``, ``num_points``, ``scheme`` and ``crop_margin`` as a loaded checkpoint does,
    and ``precision`` (``"int8"`` for a quantised file, else ``"float32"``). ``threads`` caps ONNX
    Runtime's intra-op threads."""

    outputs = LANDMARK_OUTPUTS

    def __init__(self, path: PathLike, threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None) -> None:
        self._open(path, providers, threads=threads)
        self.config, self.scheme, self.crop_margin = landmark_export_facts(self.path, self.metadata)
        self.precision = self.metadata.get("precision", "float32")
        self._bind_io()

    @property
    def num_points(self) -> int:
        return int(self.config.num_points)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        (points,) = self._run(images)
        return points

    def landmarks_in_boxes(self, image: Any, boxes: Sequence[Sequence[float]], batch_size: int = 64) -> Any:
        """:func:`~retinaface.landmarks.models.landmarks_in_boxes` through this file (the
        :class:`~retinaface.runtime_interface.LandmarkModel` interface the Detector runs)."""
        return landmarks_in_boxes(self, image, boxes, batch_size)

    def __repr__(self) -> str:
        return (f"LandmarkOnnxModel({str(self.path)!r}, {self.config.name}, {self.num_points} points @ "
                f"{self.config.input_size}, {self.precision})")


def is_onnx_file(path: PathLike) -> bool:
    """Whether ``path`` names an ONNX file (by its suffix, as ``retinaface`` commands choose runtimes)."""
    return Path(path).suffix.lower() == ".onnx"


def load_landmark_onnx(path: PathLike, device: Union[str, torch.device] = "cpu", threads: Optional[int] = None,
                       **kwargs: Any) -> LandmarkOnnxModel:
    """:class:`LandmarkOnnxModel` of ``path`` on ONNX Runtime's CPU provider (``device`` must be the
    CPU: the GPU build of ONNX Runtime takes ``providers=[...]`` instead)."""
    if torch.device(device).type != "cpu":
        raise ValueError(f"{path}: an ONNX landmark file runs on ONNX Runtime's CPU provider; use --device cpu")
    return LandmarkOnnxModel(path, threads=threads, **kwargs)


__all__ = ["LANDMARK_OUTPUTS", "LANDMARK_TASK", "LandmarkOnnxModel", "is_onnx_file", "landmark_export_facts",
           "load_landmark_onnx"]
