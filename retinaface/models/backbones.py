"""The backbone registry: every backbone the toolkit can build, by name, in one place.

A backbone is an ``nn.Module`` whose ``forward`` returns the stride 8, 16 and 32 feature maps as a
list and which carries ``out_channels`` (one count per returned map) and ``strides``.
Built-in names are registered with :func:`register_backbone` by the module that defines each
(``mobilenet.py``, ``mobiface.py``, the timm aliases below); ``retinaface.models`` imports them all; any timm model with stride 8/16/32
features is available as ``"timm:<model name>"`` through ``features_only``, using the channel counts
timm reports in its ``feature_info``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..conventions import FEATURE_STRIDES, first_line
from ..zoo import ZooError, resolve_weights



class BackboneError(RuntimeError):
    """A backbone could not be built or its weights could not be loaded (a one-line reason)."""


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    name: str
    builder: Callable[..., nn.Module]
    fpn_width: int
    description: str


_REGISTRY: Dict[str, BackboneSpec] = {}


def register_backbone(name: str, fpn_width: int = 256, description: str = ""):
    """Decorator registering ``builder(pretrained: bool, **kwargs) -> backbone`` under ``name``."""
    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is registered twice")
        _REGISTRY[name] = BackboneSpec(name, builder, fpn_width, description)
        return builder
    return decorate


def list_backbones() -> List[str]:
    """Names of the built-in backbones (``timm:<name>`` works as well)."""
    return sorted(_REGISTRY)


def backbone_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name``; ``timm:<model>`` gets a generic entry."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith("timm:"):
        model_name = name[len("timm:"):]
        return BackboneSpec(name, lambda pretrained=False, **kw: timm_backbone(model_name, pretrained, **kw),
                            256, f"timm model {model_name}")
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())} "
                     f"or 'timm:<any timm model name>'")


def create_backbone(name: str, pretrained: bool = False, weights_path: Optional[str] = None,
                    **kwargs) -> nn.Module:
    """Build backbone ``name``; ``pretrained`` asks for ImageNet weights, ``weights_path`` loads a file."""
    body = backbone_spec(name).builder(pretrained=pretrained, **kwargs)
    if weights_path is not None:
        load_backbone_weights(body, weights_path)
    return body


def load_backbone_weights(body: nn.Module, path: str) -> None:
    """Load ImageNet (or other) weights from a local file, or a zoo name, into ``body``.

    Accepts a plain state dict or one nested under ``state_dict``/``model``, with or without a
    ``module.`` prefix; keys the backbone does not have (a classifier, say) are dropped. Every
    backbone key must be present.
    """
    try:
        path = str(resolve_weights(path))  # a zoo name ("mobilenet0.25-imagenet") is fetched and verified
    except ZooError as exc:
        raise BackboneError(str(exc)) from None
    if not Path(path).is_file():
        raise BackboneError(f"{path}: backbone weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file or one holding code rather than tensors
        raise BackboneError(f"{path}: not a readable weights file ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise BackboneError(f"{path}: expected a state dict, found {type(state).__name__}")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    own = body.state_dict()
    used = {k: v for k, v in state.items() if k in own}
    missing = sorted(set(own) - set(used))
    if missing:
        raise BackboneError(f"{path}: {len(missing)} backbone keys missing, e.g. {missing[:5]}")
    wrong = [k for k, v in used.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise BackboneError(f"{path}: shape mismatch for {wrong[:5]}")
    body.load_state_dict(used)


def timm_backbone(model_name: str, pretrained: bool = False, strides: Sequence[int] = FEATURE_STRIDES,
                  **kwargs) -> nn.Module:
    """A timm model with ``features_only=True`` returning its stride 8/16/32 features.

    The feature indices are chosen from the reductions timm states in ``feature_info``, so no
    per-model table is needed. The returned module is timm's own feature wrapper, whose parameter
    names are the classifier model's (``conv1``, ``layer1``, ... for ResNets), so ImageNet and
    Pytorch_Retinaface ResNet-50 weights load without renaming.
    """
    import timm

    try:
        with torch.device("meta"):  # building on the meta device reads feature_info for free
            probe = timm.create_model(model_name, pretrained=False, features_only=True, **kwargs)
    except RuntimeError as exc:
        raise BackboneError(f"timm cannot build {model_name!r} with features_only: {first_line(exc)}") from None
    reductions = list(probe.feature_info.reduction())
    missing = [s for s in strides if s not in reductions]
    if missing:
        raise BackboneError(f"timm model {model_name!r} has no features at stride(s) {missing} "
                            f"(its reductions are {reductions})")
    # the last index timm reports for a stride is the deepest block at that resolution
    out_indices = tuple(max(i for i, r in enumerate(reductions) if r == s) for s in strides)
    try:
        body = timm.create_model(model_name, pretrained=pretrained, features_only=True,
                                 out_indices=out_indices, **kwargs)
    except Exception as exc:
        if pretrained:
            raise BackboneError(f"could not get ImageNet weights for timm model {model_name!r} "
                                f"({type(exc).__name__}: {first_line(exc)[:100]}); without network access "
                                f"download them elsewhere and pass backbone_weights=PATH") from None
        raise
    body.out_channels = list(body.feature_info.channels())
    body.strides = list(body.feature_info.reduction())
    return body


def _register_timm_alias(name: str, timm_name: str, description: str) -> None:
    @register_backbone(name, fpn_width=256, description=description)
    def _build(pretrained: bool = False, **kwargs) -> nn.Module:
        return timm_backbone(timm_name, pretrained, **kwargs)


_register_timm_alias("resnet50", "resnet50", "ResNet-50 (torchvision/Pytorch_Retinaface key layout)")
_register_timm_alias("res2net101", "res2net101_26w_4s", "Res2Net-101 26w x 4s")
_register_timm_alias("mobilenetv3_small", "mobilenetv3_small_100", "MobileNetV3-small 1.0")
for _b in range(6):
    _register_timm_alias(f"efficientnet_b{_b}", f"efficientnet_b{_b}", f"EfficientNet-B{_b}")
