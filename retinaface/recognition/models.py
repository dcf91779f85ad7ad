"""Embedding networks: aligned face crop ``(B, 3, 112, 112)`` -> embedding ``(B, D)`` (not normalized).

One registry, like the detection backbones: ``create_embedder(name, embedding_size, width, **kw)``,
``list_embedders()``, ``register_embedder(name)``; ``timm:<model>`` wraps any timm classifier.

* ``mobiface`` -- MobiFace (Duong et al., 2018, table 1): 3x3 conv (stride 2), 3x3 depthwise-separable
  conv, then per stage a bottleneck with expansion (stride 2, no shortcut) and residual bottlenecks
  (64 x 2, 128 x 3, 256 x 6, expansion 2), a 1x1 conv to 512 and a fully connected embedding. Fast
  down-sampling: the maps are 56 x 56 after the first layer and 7 x 7 at the end. ``head="flatten"``
  (the paper's fully connected layer on the 7 x 7 x 512 map, insightface's BN-dropout-FC-BN "E"
  output) or ``head="pool"`` (global average pooling first: 12.6 M fewer parameters).
* ``mobilefacenet`` -- MobileFaceNet (Chen et al., 2018, table 1): MobileNetV2 bottlenecks with PReLU
  and a *global depthwise convolution* (7 x 7, linear) instead of global pooling, then a linear 1x1
  conv to the embedding (128-d in the paper; ``EMBEDDING_SIZE`` = 512 by default here) and a BN.
* ``timm:<model>`` -- a timm network's pooled features -> BN -> dropout -> FC -> BN.

``width`` scales every internal channel count (multiples of 8; the embedding size stays), which is
what channel prioritisation trades. Every convolution is followed by a batch norm. Each model
carries ``.config``, an :class:`EmbedderConfig` of plain types (a checkpoint holding
``config.to_dict()`` loads with ``torch.load(weights_only=True)``; ``create_embedder(config)`` rebuilds).
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..conventions import ALIGNED_FACE_SIZE, EMBEDDING_SIZE
from ..models.mobiface import MOBIFACE_EXPANSION, MOBIFACE_STAGES, MOBIFACE_STEM, make_divisible


@dataclasses.dataclass
class EmbedderConfig:
    """What rebuilds an embedding network: registry ``name``, ``embedding_size``, ``width``,
    ``input_size`` ``(height, width)`` of the crops, and the builder's extra ``kwargs`` (plain types)."""

    name: str
    embedding_size: int = EMBEDDING_SIZE
    width: float = 1.0
    input_size: Tuple[int, int] = (ALIGNED_FACE_SIZE, ALIGNED_FACE_SIZE)
    kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "embedding_size": int(self.embedding_size), "width": float(self.width),
                "input_size": [int(v) for v in self.input_size], "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "EmbedderConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown embedder config field(s) {unknown}; known: {sorted(known)}")
        if "name" not in data:
            raise ValueError("embedder config has no 'name'")
        values = dict(data)
        if "input_size" in values:
            values["input_size"] = tuple(int(v) for v in values["input_size"])
        values["kwargs"] = dict(values.get("kwargs") or {})
        return cls(**values)


@dataclasses.dataclass
class EmbedderSpec:
    name: str
    builder: Callable[..., nn.Module]
    description: str


_REGISTRY: Dict[str, EmbedderSpec] = {}


def register_embedder(name: str, description: str = ""):
    """Decorator registering ``builder(embedding_size, width, input_size, **kwargs) -> nn.Module``."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"embedder {name!r} is already registered")
        _REGISTRY[name] = EmbedderSpec(name, builder, description)
        return builder

    return decorate


def list_embedders() -> List[str]:
    """Names of the built-in embedding networks (``timm:<name>`` works as well)."""
    return sorted(_REGISTRY)


def create_embedder(name: "str | EmbedderConfig | Mapping[str, Any]", embedding_size: int = EMBEDDING_SIZE,
                    width: float = 1.0, input_size: Sequence[int] = (ALIGNED_FACE_SIZE, ALIGNED_FACE_SIZE),
                    **kwargs: Any) -> nn.Module:
    """Build an embedding network: ``(B, 3, H, W)`` preprocessed crops -> ``(B, embedding_size)``.

    ``name`` is a registered name (or ``timm:<model>``) with the other arguments, or an
    :class:`EmbedderConfig` / its ``to_dict()`` (what a checkpoint holds), which carries them all.
    The one door to a new embedder; :func:`retinaface.recognition.load_embedder` loads a trained one.
    Raises ``ValueError`` for an unknown name, a non-positive size or width.
    """
    if isinstance(name, Mapping):
        name = EmbedderConfig.from_dict(dict(name))
    if isinstance(name, EmbedderConfig):
        config = name
        return create_embedder(config.name, config.embedding_size, config.width, config.input_size, **config.kwargs)
    if int(embedding_size) < 1:
        raise ValueError(f"embedding_size must be positive, got {embedding_size}")
    if not float(width) > 0:
        raise ValueError(f"width must be positive, got {width}")
    input_size = tuple(int(v) for v in input_size)
    if len(input_size) != 2 or min(input_size) < 16:
        raise ValueError(f"input_size must be (height, width) of at least 16 pixels, got {input_size}")
    if name.startswith("timm:"):
        builder: Callable[..., nn.Module] = lambda **kw: TimmEmbedder(name[len("timm:"):], **kw)  # noqa: E731
    elif name in _REGISTRY:
        builder = _REGISTRY[name].builder
    else:
        raise ValueError(f"unknown embedder {name!r}; choose one of {list_embedders()} or 'timm:<timm model name>'")
    model = builder(embedding_size=int(embedding_size), width=float(width), input_size=input_size, **kwargs)
    model.config = EmbedderConfig(name, int(embedding_size), float(width), input_size, dict(kwargs))
    model.embedding_size = int(embedding_size)
    return model


def embedder_from_config(config: "EmbedderConfig | Dict[str, Any]") -> nn.Module:
    """Deprecated: ``create_embedder(config)`` builds the network a config describes."""
    warnings.warn("embedder_from_config(config) is deprecated; use create_embedder(config)", DeprecationWarning,
                  stacklevel=2)
    return create_embedder(config)


# ---------------------------------------------------------------------------------------------
def _activation(kind: str, channels: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(channels)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"activation must be 'relu' or 'prelu', got {kind!r}")


def conv_bn_act(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                activation: Optional[str] = "relu", padding: Optional[int] = None) -> nn.Sequential:
    """Conv (no bias) -> BN -> activation (``None``: linear)."""
    padding = kernel_size // 2 if padding is None else padding
    layers: List[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups,
                                         bias=False), nn.BatchNorm2d(out_channels)]
    if activation is not None:
        layers.append(_activation(activation, out_channels))
    return nn.Sequential(*layers)


class InvertedBottleneck(nn.Module):
    """1x1 expansion (x ``expansion``) -> act -> 3x3 depthwise (``stride``) -> act -> linear 1x1
    projection, each conv with a BN; the input is added back when stride is 1 and channels match
    (MobiFace's "residual bottleneck"; the stride-2 "bottleneck" has no shortcut)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int, activation: str) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.residual = stride == 1 and in_channels == out_channels
        self.expand = conv_bn_act(in_channels, hidden, 1, activation=activation)
        self.depthwise = conv_bn_act(hidden, hidden, 3, stride, groups=hidden, activation=activation)
        self.project = conv_bn_act(hidden, out_channels, 1, activation=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


def _downsampled(size: int, times: int) -> int:
    for _ in range(times):  # 3x3 conv, stride 2, padding 1
        size = (size + 1) // 2
    return size


class EmbeddingHead(nn.Module):
    """Feature map ``(B, C, h, w)`` -> embedding ``(B, D)``: ``"flatten"``: BN2d -> dropout -> FC
    over the whole map -> BN1d (insightface's "E" output); ``"pool"``: average pool -> dropout -> FC -> BN1d."""

    def __init__(self, channels: int, spatial: Tuple[int, int], embedding_size: int, head: str,
                 dropout: float) -> None:
        super().__init__()
        if head not in ("flatten", "pool"):
            raise ValueError(f"head must be 'flatten' or 'pool', got {head!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.head = head
        self.norm = nn.BatchNorm2d(channels) if head == "flatten" else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        inputs = channels * spatial[0] * spatial[1] if head == "flatten" else channels
        self.fc = nn.Linear(inputs, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        x = x.mean(dim=(2, 3)) if self.head == "pool" else x.flatten(1)
        return self.features(self.fc(self.dropout(x)))


class MobiFaceEmbedder(nn.Module):
    """MobiFace for recognition (module doc); ``(B, 3, H, W)`` -> ``(B, embedding_size)``."""

    def __init__(self, embedding_size: int = EMBEDDING_SIZE, width: float = 1.0,
                 input_size: Tuple[int, int] = (ALIGNED_FACE_SIZE, ALIGNED_FACE_SIZE), head: str = "flatten",
                 dropout: float = 0.0, activation: str = "relu",
                 stages: Sequence[Sequence[int]] = MOBIFACE_STAGES, expansion: int = MOBIFACE_EXPANSION,
                 last_channels: int = 512) -> None:
        super().__init__()
        stem = make_divisible(MOBIFACE_STEM * width)
        layers: List[nn.Module] = [
            conv_bn_act(3, stem, 3, 2, activation=activation),                       # 112 -> 56
            conv_bn_act(stem, stem, 3, 1, groups=stem, activation=activation),       # depthwise-separable,
            conv_bn_act(stem, stem, 1, activation=activation),                       # stride 1 (table 1)
        ]
        channels = stem
        for out, repeats in stages:
            out = make_divisible(out * width)
            layers.append(InvertedBottleneck(channels, out, 2, expansion, activation))
            layers += [InvertedBottleneck(out, out, 1, expansion, activation) for _ in range(int(repeats))]
            channels = out
        last = make_divisible(last_channels * width)
        layers.append(conv_bn_act(channels, last, 1, activation=activation))
        self.body = nn.Sequential(*layers)
        spatial = (_downsampled(input_size[0], 1 + len(stages)), _downsampled(input_size[1], 1 + len(stages)))
        self.input_size = tuple(input_size)
        self.head = EmbeddingHead(last, spatial, embedding_size, head, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


# MobileFaceNet table 1: (expansion t, channels c, repeats n, stride s) of the bottleneck rows
MOBILEFACENET_SETTING: Tuple[Tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


class MobileFaceNetEmbedder(nn.Module):
    """MobileFaceNet (module doc); ``(B, 3, H, W)`` -> ``(B, embedding_size)``."""

    def __init__(self, embedding_size: int = EMBEDDING_SIZE, width: float = 1.0,
                 input_size: Tuple[int, int] = (ALIGNED_FACE_SIZE, ALIGNED_FACE_SIZE), activation: str = "prelu",
                 setting: Sequence[Sequence[int]] = MOBILEFACENET_SETTING, last_channels: int = 512) -> None:
        super().__init__()
        stem = make_divisible(64 * width)
        layers: List[nn.Module] = [conv_bn_act(3, stem, 3, 2, activation=activation),
                                   conv_bn_act(stem, stem, 3, 1, groups=stem, activation=activation)]
        channels = stem
        downsamples = 1
        for t, c, n, s in setting:
            out = make_divisible(c * width)
            for i in range(int(n)):
                layers.append(InvertedBottleneck(channels, out, int(s) if i == 0 else 1, int(t), activation))
                channels = out
            downsamples += int(s) == 2
        last = make_divisible(last_channels * width)
        layers.append(conv_bn_act(channels, last, 1, activation=activation))
        self.body = nn.Sequential(*layers)
        spatial = (_downsampled(input_size[0], downsamples), _downsampled(input_size[1], downsamples))
        self.input_size = tuple(input_size)
        # global depthwise conv: one learned weight per position and channel (linear), then a
        # linear 1x1 conv to the embedding and a BN (insightface's MobileFaceNet output)
        self.gdc = conv_bn_act(last, last, spatial, 1, groups=last, activation=None, padding=0)
        self.linear = nn.Conv2d(last, embedding_size, 1, bias=False)
        self.features = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.linear(self.gdc(self.body(x))).flatten(1))


class TimmEmbedder(nn.Module):
    """A timm model's pooled features -> BN -> dropout -> FC -> BN, ``(B, 3, H, W)`` -> ``(B, D)``.

    ``width`` must be 1.0 (timm networks have their own size variants); ``pretrained=True`` asks
    timm for ImageNet weights (downloads).
    """

    def __init__(self, model_name: str, embedding_size: int = EMBEDDING_SIZE, width: float = 1.0,
                 input_size: Tuple[int, int] = (ALIGNED_FACE_SIZE, ALIGNED_FACE_SIZE), pretrained: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        import timm

        if width != 1.0:
            raise ValueError(f"timm:{model_name} runs at width 1.0 only (pick a smaller timm variant instead)")
        if not timm.is_model(model_name):
            raise ValueError(f"unknown timm model {model_name!r} (see timm.list_models())")
        self.body = timm.create_model(model_name, pretrained=pretrained, num_classes=0)
        # the pooled width, measured: some models (MobileNetV3) add a head conv after num_features
        was_training = self.body.training
        self.body.eval()
        with torch.no_grad():
            features = int(self.body(torch.zeros(1, 3, *input_size)).shape[1])
        self.body.train(was_training)
        self.input_size = tuple(input_size)
        self.norm = nn.BatchNorm1d(features)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(features, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.fc(self.dropout(self.norm(self.body(x)))))


@register_embedder("mobiface", "MobiFace: fast down-sampling, (residual) bottlenecks with expansion, 1x1 conv, FC")
def _mobiface(**kwargs: Any) -> nn.Module:
    return MobiFaceEmbedder(**kwargs)


@register_embedder("mobilefacenet", "MobileFaceNet: PReLU bottlenecks and a global depthwise conv head")
def _mobilefacenet(**kwargs: Any) -> nn.Module:
    return MobileFaceNetEmbedder(**kwargs)


__all__ = ["EmbedderConfig", "EmbeddingHead", "InvertedBottleneck", "MobiFaceEmbedder", "MobileFaceNetEmbedder",
           "TimmEmbedder", "create_embedder", "embedder_from_config", "list_embedders", "register_embedder"]
