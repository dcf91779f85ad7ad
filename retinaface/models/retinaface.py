"""The RetinaFace detector network: backbone -> FPN -> SSH context modules -> per-level heads.

The model receives its parts as constructor arguments (see :func:`retinaface.models.create_model`
for the usual way to build one). Module names equal those of Pytorch_Retinaface checkpoints
(``body``, ``fpn``, ``ssh1..3``, ``ClassHead``, ``BboxHead``, ``LandmarkHead``), so those
checkpoints load as they are.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..runtime_interface import INPUT_DTYPE, INPUT_LAYOUT, RAW_OUTPUTS
from .layers import conv_bn


def _slope(width: int) -> float:
    # the reference uses LeakyReLU(0.1) in its narrow (mobilenet) heads and ReLU in its wide ones
    return 0.1 if width <= 64 else 0.0


class FPN(nn.Module):
    """Three-level feature pyramid: 1x1 laterals, nearest upsampling top-down, 3x3 merges."""

    def __init__(self, in_channels: Sequence[int], width: int) -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"FPN expects 3 input levels, got {len(in_channels)}")
        leaky = _slope(width)
        self.output1 = conv_bn(in_channels[0], width, 1, leaky=leaky)
        self.output2 = conv_bn(in_channels[1], width, 1, leaky=leaky)
        self.output3 = conv_bn(in_channels[2], width, 1, leaky=leaky)
        self.merge1 = conv_bn(width, width, 3, leaky=leaky)
        self.merge2 = conv_bn(width, width, 3, leaky=leaky)

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        out1 = self.output1(features[0])
        out2 = self.output2(features[1])
        out3 = self.output3(features[2])
        out2 = self.merge2(out2 + F.interpolate(out3, size=out2.shape[-2:], mode="nearest"))
        out1 = self.merge1(out1 + F.interpolate(out2, size=out1.shape[-2:], mode="nearest"))
        return [out1, out2, out3]


class SSH(nn.Module):
    """Single-stage headless context module: parallel 3x3, 5x5 and 7x7 (stacked 3x3) branches."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"SSH width must be a multiple of 4, got {out_channels}")
        leaky = _slope(out_channels)
        self.conv3X3 = conv_bn(in_channels, out_channels // 2, 3, leaky=None)
        self.conv5X5_1 = conv_bn(in_channels, out_channels // 4, 3, leaky=leaky)
        self.conv5X5_2 = conv_bn(out_channels // 4, out_channels // 4, 3, leaky=None)
        self.conv7X7_2 = conv_bn(out_channels // 4, out_channels // 4, 3, leaky=leaky)
        self.conv7x7_3 = conv_bn(out_channels // 4, out_channels // 4, 3, leaky=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3 = self.conv3X3(x)
        mid = self.conv5X5_1(x)
        branch5 = self.conv5X5_2(mid)
        branch7 = self.conv7x7_3(self.conv7X7_2(mid))
        return F.relu(torch.cat([branch3, branch5, branch7], dim=1))


class Head(nn.Module):
    """A 1x1 conv predicting ``values`` numbers per anchor, flattened to (B, H*W*anchors, values)."""

    def __init__(self, in_channels: int, num_anchors: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(in_channels, num_anchors * values, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.values)


def _heads(levels: int, width: int, num_anchors: int, values: int) -> nn.ModuleList:
    return nn.ModuleList(Head(width, num_anchors, values) for _ in range(levels))


class RetinaFace(nn.Module):
    """RetinaFace with any backbone returning stride 8/16/32 features.

    Input: float tensor (B, 3, H, W), BGR minus the mean (104, 117, 123), any H and W.
    Output: ``(loc (B, P, 4), conf (B, P, 2), landms (B, P, 10))`` with priors ordered level by level,
    row-major, then anchor size; ``conf`` holds logits in train mode and softmax scores in eval mode.
    Implements :class:`~retinaface.runtime_interface.RuntimeModel` (the PyTorch runtime).
    """

    input_layout = INPUT_LAYOUT
    input_dtype = INPUT_DTYPE
    fixed_input = None
    outputs = RAW_OUTPUTS
    takes_uint8 = False

    def __init__(self, body: nn.Module, config: ModelConfig, fpn: Optional[nn.Module] = None) -> None:
        super().__init__()
        width = config.fpn_width
        if width is None:
            raise ValueError("config.fpn_width must be resolved before building the model")
        self.config = config
        self.body = body
        self.fpn = fpn if fpn is not None else FPN(body.out_channels, width)
        self.ssh1 = SSH(width, width)
        self.ssh2 = SSH(width, width)
        self.ssh3 = SSH(width, width)
        levels, anchors = len(config.steps), config.num_anchors
        self.ClassHead = _heads(levels, width, anchors, config.num_classes)
        self.BboxHead = _heads(levels, width, anchors, 4)
        self.LandmarkHead = _heads(levels, width, anchors, 10)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = self.fpn(self.body(images))
        levels = [self.ssh1(levels[0]), self.ssh2(levels[1]), self.ssh3(levels[2])]
        loc = torch.cat([head(f) for head, f in zip(self.BboxHead, levels)], dim=1)
        conf = torch.cat([head(f) for head, f in zip(self.ClassHead, levels)], dim=1)
        landms = torch.cat([head(f) for head, f in zip(self.LandmarkHead, levels)], dim=1)
        if not self.training:
            conf = F.softmax(conf, dim=-1)
        return loc, conf, landms

    def forward_uint8(self, images, mean):
        raise NotImplementedError("the PyTorch network takes float32 batches (the Detector builds them)")

    def fuse(self) -> "RetinaFace":
        """Fold every BatchNorm into its preceding conv, in place, for inference; returns ``self``.

        Eval mode only (uses the running statistics); the fused model cannot be trained or loaded
        back into an unfused one. See :func:`retinaface.deploy.fusion.fuse_conv_bn`.
        """
        if self.training:
            raise RuntimeError("RetinaFace.fuse() needs eval mode: call model.eval() first")
        # lazy: fusion imports timm, which a detector with a built-in backbone never loads
        from ..deploy.fusion import fuse_conv_bn

        return fuse_conv_bn(self)
