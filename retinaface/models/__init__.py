"""RetinaFace networks and the backbone registry."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from ..config import ModelConfig
from .backbones import (BackboneError, backbone_spec, create_backbone, list_backbones,
                        register_backbone)
from .retinaface import FPN, SSH, RetinaFace
from . import mobiface  # noqa: F401  (registers the "mobiface" backbone)


def create_model(backbone: str = "mobilenet0.25", pretrained: bool = False,
                 backbone_weights: Optional[str] = None, width: Optional[float] = None,
                 **overrides: Any) -> RetinaFace:
    """Build a RetinaFace variant by backbone name.

    ``overrides`` are :class:`~retinaface.config.ModelConfig` fields (``fpn_width``, ``min_sizes``,
    ``steps``, ``variances``, ``backbone_kwargs``). ``pretrained=True`` asks timm for ImageNet
    weights; ``backbone_weights=PATH`` loads them from a local file instead.
    A config with ``channels`` gets those pruned layer shapes; one with ``adaptive`` gives a
    width-switchable :class:`~retinaface.adaptive.AdaptiveRetinaFace` set to ``width`` (default 1.0).
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
    if config.adaptive:
        from ..adaptive.slim import AdaptiveRetinaFace

        return AdaptiveRetinaFace(body, config).set_width(1.0 if width is None else width)
    if width is not None and float(width) != 1.0:
        raise ValueError(f"width {width} needs an adaptive (channel-prioritised) model; "
                         f"{config.backbone} runs at width 1.0 only")
    model = RetinaFace(body, config)
    if config.channels:
        from ..adaptive.prune import apply_channels

        apply_channels(model, config.channels)
    return model


__all__ = ["BackboneError", "FPN", "ModelConfig", "RetinaFace", "SSH", "backbone_spec",
           "create_backbone", "create_model", "list_backbones", "register_backbone"]
