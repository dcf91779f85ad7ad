"""The one door to a RetinaFace model: :func:`build_model` turns a :class:`ModelConfig` into a
network, applying pruned channel counts (``config.channels``) and then width switching
(``config.adaptive``). :func:`create_model` is the by-name convenience; checkpoints
(:func:`retinaface.checkpoint.load_model`), the adaptive helpers and the trainers all end here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from torch import nn

from .adaptive.prune import apply_channels
from .adaptive.slim import AdaptiveRetinaFace
from .config import ModelConfig
from .models import RetinaFace, create_body


def build_model(config: ModelConfig, width: Optional[float] = None, pretrained: bool = False,
                backbone_weights: Optional[str] = None) -> nn.Module:
    """The network ``config`` describes.

    ``width`` (in (0, 1]) selects the utilisation level of an adaptive config (default 1.0); a
    plain config accepts only ``None`` or 1.0. ``pretrained`` asks timm for ImageNet backbone
    weights, ``backbone_weights=PATH`` loads them from a local file.
    """
    body, config = create_body(config, pretrained=pretrained, backbone_weights=backbone_weights)
    if config.adaptive:
        return AdaptiveRetinaFace(body, config).set_width(1.0 if width is None else width)
    if width is not None and float(width) != 1.0:
        raise ValueError(f"width {width} needs an adaptive (channel-prioritised) model; "
                         f"{config.backbone} runs at width 1.0 only")
    model = RetinaFace(body, config)
    if config.channels:
        apply_channels(model, config.channels)
    return model


def create_model(backbone: str = "mobilenet0.25", pretrained: bool = False,
                 backbone_weights: Optional[str] = None, width: Optional[float] = None,
                 config: Optional[ModelConfig] = None, **overrides: Any) -> nn.Module:
    """Build a RetinaFace variant by backbone name (or from ``config``, with ``overrides`` applied).

    ``overrides`` are :class:`~retinaface.config.ModelConfig` fields (``fpn_width``, ``min_sizes``,
    ``steps``, ``variances``, ``backbone_kwargs``).
    """
    if config is None:
        config = ModelConfig(backbone=backbone, **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    return build_model(config, width=width, pretrained=pretrained, backbone_weights=backbone_weights)
