"""retinaface: RetinaFace face detection with pluggable backbones.

A model has three doors: :func:`create_model` builds a network from a backbone name or a
:class:`ModelConfig`, :func:`load_model` loads this toolkit's or Pytorch_Retinaface checkpoints (a
file or a zoo name), and :func:`load_runtime` (or :meth:`Detector.from_checkpoint`, which wraps it
in a detector) opens any file for inference: a checkpoint, or an ONNX (ONNX Runtime, OpenVINO) or
TorchScript export. :class:`Detector` turns images into boxes, scores and five landmarks.

Names are resolved lazily (PEP 562): ``import retinaface`` loads no heavy dependency, and torch,
timm or OpenCV are imported only when a name that needs them is first used. So
``retinaface.evaluation`` and ``retinaface eval --preds`` start in a blink.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict, List

from . import _moved
from .version import __version__

_moved.install()  # old import paths (retinaface.detector, ...) keep working for one release, with a warning

# public name -> module that defines it
_LAZY: Dict[str, str] = {
    "BoxCoder": "retinaface.box_coder",
    "CheckpointError": "retinaface.checkpoint",
    "load_model": "retinaface.checkpoint",
    "save_model": "retinaface.checkpoint",
    "ModelConfig": "retinaface.config",
    "Detector": "retinaface.inference.detector",
    "FaceAnalyzer": "retinaface.recognition.analyzer",
    "create_model": "retinaface.build",
    "load_runtime": "retinaface.deploy.runtime",
    "BackboneError": "retinaface.models",
    "RetinaFace": "retinaface.models",
    "list_backbones": "retinaface.models",
    "register_backbone": "retinaface.models",
    "PriorGenerator": "retinaface.priors",
    "generate_priors": "retinaface.priors",
}

# earlier public names, importable for one release: calling one warns (DeprecationWarning)
_DEPRECATED: Dict[str, str] = {
    "build_model": "retinaface.build",  # create_model(config, width=...)
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name) or _DEPRECATED.get(name)
    if module is None:
        raise AttributeError(f"module 'retinaface' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from .box_coder import BoxCoder
    from .build import create_model
    from .checkpoint import CheckpointError, load_model, save_model
    from .config import ModelConfig
    from .inference.detector import Detector
    from .recognition.analyzer import FaceAnalyzer
    from .models import BackboneError, RetinaFace, list_backbones, register_backbone
    from .priors import PriorGenerator, generate_priors
    from .deploy.runtime import load_runtime
