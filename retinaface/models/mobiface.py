"""The ``mobiface`` backbone: MobiFace (Duong et al., 2018) adapted to give stride 8/16/32 features.

MobiFace is a 3x3 convolution, a 3x3 depthwise-separable convolution, then bottleneck blocks with
expansion (stride 2, no shortcut) each followed by residual bottleneck blocks (stride 1, shortcut).
It down-samples fast in the first layers and adds channels late, where the maps are small.
For detection the classifier tail (1x1 conv to 512, global pooling, FC) is dropped and the
depthwise-separable convolution gets stride 2 instead of 1, so the three bottleneck stages end at
strides 8, 16 and 32 (64, 128 and 256 channels at ``width_mult=1``) and feed the FPN directly.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from ..conventions import FEATURE_STRIDES
from .backbones import BackboneError, register_backbone
from .layers import conv_bn, conv_dw

# (output channels, residual blocks after the stride-2 bottleneck) per stage, as in MobiFace's table 1
MOBIFACE_STAGES: Tuple[Tuple[int, int], ...] = ((64, 2), (128, 3), (256, 6))
MOBIFACE_STEM = 64
MOBIFACE_EXPANSION = 2


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (never below it, never more than
    10 % under ``value``), the usual MobileNet rule for width-multiplied channel counts."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class Bottleneck(nn.Module):
    """MobileNetV2-style bottleneck: 1x1 expansion (x ``expansion``) -> BN -> ReLU -> 3x3 depthwise
    (``stride``) -> BN -> ReLU -> 1x1 linear projection -> BN, plus the input when ``residual``.

    A residual block needs stride 1 and equal input and output channels (MobiFace's "residual
    bottleneck"); the stride-2 blocks that open each stage have no shortcut.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int,
                 residual: bool) -> None:
        super().__init__()
        if residual and (stride != 1 or in_channels != out_channels):
            raise ValueError("a residual bottleneck needs stride 1 and equal in/out channels")
        hidden = in_channels * expansion
        self.residual = residual
        self.expand = conv_bn(in_channels, hidden, 1, leaky=0.0)
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.project = conv_bn(hidden, out_channels, 1, leaky=None)  # linear: no activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


class MobiFace(nn.Module):
    """MobiFace feature extractor returning the stride 8, 16 and 32 stage outputs.

    ``width_mult`` scales every channel count (rounded to multiples of 8); ``stages`` lists
    ``(channels, residual blocks)`` for the three stages and ``expansion`` is the bottleneck
    expansion factor ``t``.
    """

    def __init__(self, width_mult: float = 1.0, stages: Sequence[Sequence[int]] = MOBIFACE_STAGES,
                 stem_channels: int = MOBIFACE_STEM, expansion: int = MOBIFACE_EXPANSION) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        if len(stages) != 3:
            raise ValueError(f"MobiFace needs 3 stages (strides 8/16/32), got {len(stages)}")
        stem = make_divisible(stem_channels * width_mult)
        # fast down-sampling: stride 2 twice before the first bottleneck (MobiFace keeps the
        # depthwise-separable layer at stride 1; detection needs stride 8 after the first stage)
        self.stem = nn.Sequential(conv_bn(3, stem, 3, 2, leaky=0.0), conv_dw(stem, stem, 2, leaky=0.0))
        in_channels = stem
        out_channels: List[int] = []
        built = []
        for channels, repeats in stages:
            channels = make_divisible(channels * width_mult)
            blocks = [Bottleneck(in_channels, channels, 2, expansion, residual=False)]
            blocks += [Bottleneck(channels, channels, 1, expansion, residual=True) for _ in range(int(repeats))]
            built.append(nn.Sequential(*blocks))
            out_channels.append(channels)
            in_channels = channels
        self.stage1, self.stage2, self.stage3 = built
        self.out_channels: List[int] = out_channels
        self.strides: List[int] = list(FEATURE_STRIDES)  # its three stages halve the size 3, 4 and 5 times

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        c3 = self.stage1(self.stem(x))
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return [c3, c4, c5]


@register_backbone("mobiface", fpn_width=64, description="MobiFace (fast down-sampling bottlenecks), width_mult")
def _mobiface(pretrained: bool = False, **kwargs) -> nn.Module:
    if pretrained:
        raise BackboneError("no downloadable ImageNet weights exist for mobiface; pass backbone_weights=PATH")
    return MobiFace(**kwargs)
