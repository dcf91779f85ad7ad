"""Plain RetinaFace networks and the one backbone registry.

Importing this package registers every built-in backbone: each is registered by the module that
defines it (``mobilenet``, ``mobiface``, the timm aliases in ``backbones``), and all of them are
imported here. Models are built one layer up, by :func:`retinaface.build.create_model` (which also
applies pruned shapes and width switching); the two builders here are its private parts.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from torch import nn

from ..config import ModelConfig
from .backbones import (FEATURE_STRIDES, BackboneError, backbone_spec, create_backbone, list_backbones,
                        register_backbone, timm_backbone)
from .mobiface import MobiFace
from .mobilenet import MobileNetV1
from .retinaface import FPN, SSH, RetinaFace


def resolve_config(config: ModelConfig) -> ModelConfig:
    """``config`` with the backbone's defaults filled in (``fpn_width``) and checked against the
    backbone: one FPN level per backbone feature map, and steps equal to the backbone's strides."""
    spec = backbone_spec(config.backbone)
    if config.fpn_width is None:
        config = dataclasses.replace(config, fpn_width=spec.fpn_width)
    return config


def _create_body(config: ModelConfig, pretrained: bool = False,
                backbone_weights: Optional[str] = None) -> Tuple[nn.Module, ModelConfig]:
    """The backbone ``config`` names, and the resolved config (see :func:`resolve_config`).

    Raises ``ValueError`` naming both sides when the config's levels or steps do not fit the
    backbone's feature maps (a mismatch would otherwise surface deep inside the loss).
    """
    config = resolve_config(config)
    body = create_backbone(config.backbone, pretrained=pretrained, weights_path=backbone_weights,
                           **config.backbone_kwargs)
    strides = tuple(int(s) for s in getattr(body, "strides", FEATURE_STRIDES))
    if len(config.steps) != len(strides) or tuple(config.steps) != strides:
        raise ValueError(f"config steps {tuple(config.steps)} ({len(config.steps)} levels) do not match "
                         f"backbone {config.backbone}'s feature strides {strides} ({len(strides)} maps)")
    return body, config


def _build_retinaface(config: ModelConfig, pretrained: bool = False,
                     backbone_weights: Optional[str] = None) -> RetinaFace:
    """The full-size plain RetinaFace architecture of ``config``.

    ``config.channels`` (pruned shapes) and ``config.adaptive`` (width switching) are recorded in
    the model's config but not applied here: :func:`retinaface.build.create_model` applies them.
    """
    body, config = _create_body(config, pretrained, backbone_weights)
    return RetinaFace(body, config)


__all__ = ["BackboneError", "FEATURE_STRIDES", "FPN", "MobiFace", "MobileNetV1", "ModelConfig", "RetinaFace",
           "SSH", "backbone_spec", "create_backbone", "list_backbones",
           "register_backbone", "resolve_config", "timm_backbone"]
