"""Small convolution building blocks shared by the backbone, FPN and SSH.

Each block is an ``nn.Sequential`` whose children are numbered ``0`` (conv) and ``1`` (BN), so the
state-dict keys match checkpoints saved by the Pytorch_Retinaface code (``<module>.0.weight``,
``<module>.1.running_mean``, ...).
"""
from __future__ import annotations

from torch import nn


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
            leaky: float | None = 0.0) -> nn.Sequential:
    """Conv (no bias, padding k//2) -> BN -> LeakyReLU(leaky); ``leaky=None`` leaves out the activation.

    A slope of 0 is a ReLU (LeakyReLU(0) computes the same values).
    """
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
              nn.BatchNorm2d(out_channels)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*layers)


def conv_dw(in_channels: int, out_channels: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise-separable block: 3x3 depthwise conv -> BN -> act -> 1x1 conv -> BN -> act.

    Children 0/1 are the depthwise conv/BN and 3/4 the pointwise conv/BN, as in the reference keys.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )
