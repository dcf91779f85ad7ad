"""MobileNetV1 x0.25, the light backbone of the reference RetinaFace, laid out key for key like
the Pytorch_Retinaface checkpoints (``stage1``, ``stage2``, ``stage3``)."""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..conventions import FEATURE_STRIDES
from .backbones import load_backbone_weights, register_backbone
from .layers import conv_bn, conv_dw

# the zoo entry (retinaface.zoo) of the ImageNet weights pretrained=True loads
IMAGENET_WEIGHTS = "mobilenet0.25-imagenet"


class MobileNetV1(nn.Module):
    """MobileNetV1 at width 0.25 returning the stride 8, 16 and 32 stage outputs (64/128/256 ch)."""

    def __init__(self, leaky: float = 0.1) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 3, 2, leaky=leaky),
            conv_dw(8, 16, 1), conv_dw(16, 32, 2), conv_dw(32, 32, 1),
            conv_dw(32, 64, 2), conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))
        self.out_channels: List[int] = [64, 128, 256]
        self.strides: List[int] = list(FEATURE_STRIDES)  # its three stages halve the size 3, 4 and 5 times

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return [c3, c4, c5]


@register_backbone("mobilenet0.25", fpn_width=64, description="MobileNetV1 x0.25 (Pytorch_Retinaface layout)")
def _mobilenet025(pretrained: bool = False, **kwargs) -> nn.Module:
    body = MobileNetV1(**kwargs)
    if pretrained:
        # Pytorch_Retinaface's recipe starts from its own ImageNet classifier (timm has none at x0.25):
        # the zoo fetches it and checks its SHA-256
        load_backbone_weights(body, IMAGENET_WEIGHTS)
    return body
