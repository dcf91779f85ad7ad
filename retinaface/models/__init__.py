"""RetinaFace networks and the backbone registry."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from ..config import ModelConfig
from .backbones import (BackboneError, backbone_spec, create_backbone, list_backbones,
                        register_backbone)
from .retinaface import FPN, SSH, RetinaFace


def create_model(backbone: str = "mobilenet0.25", pretrained: bool = False,
                 backbone_weights: Optional[str] = None, **overrides: Any) -> RetinaFace:
    """Build a RetinaFace variant by backbone name.

    ``overrides`` are :class:`~retinaface.config.ModelConfig` fields (``fpn_width``, ``min_sizes``,
    ``steps``, ``variances``, ``backbone_kwargs``). ``pretrained=True`` asks timm for ImageNet
    weights; ``backbone_weights=PATH`` loads them from a local file instead.
    """
    config = overrides.pop("config", None)
    if config is None:
        config = ModelConfig(backbone=backbone, **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    spec = backbone_spec(config.backbone)
    if config.fpn_width is None:
        config = dataclasses.replace(config, fpn_width=spec.fpn_width)
    body = create_backbone(config.backbone, pretrained=pretrained, weights_path=backbone_weights,
                           **config.backbone_kwargs)
    return RetinaFace(body, config)


__all__ = ["BackboneError", "FPN", "ModelConfig", "RetinaFace", "SSH", "backbone_spec",
           "create_backbone", "create_model", "list_backbones", "register_backbone"]
