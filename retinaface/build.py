"""Building a RetinaFace network: :func:`create_model`, one of the toolkit's three doors to a model.

The doors: :func:`create_model` builds a network from a backbone name or a :class:`ModelConfig`
(applying pruned channel counts, ``config.channels``, and then width switching,
``config.adaptive``); :func:`retinaface.checkpoint.load_model` loads a checkpoint of this toolkit or
of Pytorch_Retinaface (through this function); :func:`retinaface.deploy.runtime.load_runtime` and
:meth:`retinaface.Detector.from_checkpoint` open exported files and checkpoints for inference.
Everything else that makes a model (the adaptive helpers, the trainers) goes through them.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Optional, Union

from torch import nn

from .adaptive.prune import apply_channels
from .adaptive.slim import AdaptiveRetinaFace
from .config import ModelConfig
from .models import RetinaFace, _create_body


def create_model(name_or_config: Union[str, ModelConfig] = "mobilenet0.25", pretrained: bool = False,
                 backbone_weights: Optional[str] = None, width: Optional[float] = None,
                 **overrides: Any) -> nn.Module:
    """The network a backbone name (``"mobilenet0.25"``, ``"resnet50"``, ``"timm:resnet18"``, see
    :func:`retinaface.list_backbones`) or a :class:`ModelConfig` describes.

    ``overrides`` are :class:`ModelConfig` fields (``fpn_width``, ``min_sizes``, ``steps``,
    ``variances``, ``backbone_kwargs``) applied on top. ``width`` (in (0, 1]) selects the
    utilisation level of an adaptive config (default 1.0); a plain config accepts only ``None`` or
    1.0. ``pretrained`` asks timm for ImageNet backbone weights, ``backbone_weights=PATH`` loads
    them from a local file.
    """
    if "config" in overrides:  # the keyword of the earlier signature, create_model(config=...)
        warnings.warn("create_model(config=...) is deprecated; pass the config first: create_model(config, ...)",
                      DeprecationWarning, stacklevel=2)
        given = overrides.pop("config")
        name_or_config = name_or_config if given is None else given
    if isinstance(name_or_config, ModelConfig):
        config = dataclasses.replace(name_or_config, **overrides) if overrides else name_or_config
    elif isinstance(name_or_config, str):
        # a "backbone" override (the earlier create_model(backbone=...)) wins over the positional name
        config = ModelConfig(**{"backbone": name_or_config, **overrides})
    else:
        raise TypeError(f"create_model takes a backbone name or a ModelConfig, not {type(name_or_config).__name__}")
    body, config = _create_body(config, pretrained=pretrained, backbone_weights=backbone_weights)
    if config.adaptive:
        return AdaptiveRetinaFace(body, config).set_width(1.0 if width is None else width)
    if width is not None and float(width) != 1.0:
        raise ValueError(f"width {width} needs an adaptive (channel-prioritised) model; "
                         f"{config.backbone} runs at width 1.0 only")
    model = RetinaFace(body, config)
    if config.channels:
        apply_channels(model, config.channels)
    return model


def build_model(config: ModelConfig, width: Optional[float] = None, pretrained: bool = False,
                backbone_weights: Optional[str] = None) -> nn.Module:
    """Deprecated alias of :func:`create_model` (``create_model(config, width=...)``), kept for one
    release."""
    warnings.warn("retinaface.build_model is deprecated; use retinaface.create_model(config, width=...)",
                  DeprecationWarning, stacklevel=2)
    return create_model(config, pretrained=pretrained, backbone_weights=backbone_weights, width=width)
