"""retinaface: RetinaFace face detection with pluggable backbones.

The main entry points: :func:`create_model` builds a network by backbone name, :func:`load_model`
loads this toolkit's or Pytorch_Retinaface checkpoints, :class:`Detector` turns images into boxes,
scores and five landmarks.
"""
from .box_coder import BoxCoder
from .checkpoint import CheckpointError, load_model, save_model
from .config import ModelConfig
from .detector import Detector
from .models import BackboneError, RetinaFace, create_model, list_backbones, register_backbone
from .priors import PriorGenerator, generate_priors

__version__ = "0.1.0"

__all__ = ["BackboneError", "BoxCoder", "CheckpointError", "Detector", "ModelConfig", "PriorGenerator",
           "RetinaFace", "create_model", "generate_priors", "list_backbones", "load_model",
           "register_backbone", "save_model", "__version__"]
