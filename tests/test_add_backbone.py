"""docs/architecture.md, "Adding things", a backbone: a builder decorated with ``register_backbone``
that returns stride 8 / 16 / 32 feature maps and carries ``out_channels`` and ``strides`` is all a
new backbone needs; then every door takes its name. This test follows those steps with a toy one."""
from __future__ import annotations

from typing import List

import numpy as np
import pytest
import torch
from torch import nn

import retinaface
from retinaface.models import backbones
from retinaface.models.backbones import register_backbone

NAME = "toy-three-convs"


class ToyBody(nn.Module):
    """Three strided stages: stride 8, 16 and 32 feature maps of 8, 16 and 32 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.top = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.out_channels: List[int] = [8, 16, 32]
        self.strides: List[int] = [8, 16, 32]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        c3 = self.stem(x)
        c4 = self.mid(c3)
        return [c3, c4, self.top(c4)]


@pytest.fixture
def toy_backbone():
    @register_backbone(NAME, fpn_width=16, description="a toy backbone added as docs/architecture.md says")
    def _toy(pretrained: bool = False, **kwargs) -> nn.Module:
        return ToyBody()

    yield NAME
    backbones._REGISTRY.pop(NAME)


def test_a_registered_backbone_works_through_every_door(toy_backbone, tmp_path):
    assert toy_backbone in retinaface.list_backbones()
    torch.manual_seed(0)
    model = retinaface.create_model(toy_backbone).eval()
    assert model.config.backbone == toy_backbone and model.config.fpn_width == 16
    loc, conf, landms = model(torch.zeros(1, 3, 64, 96))
    priors = (64 // 8) * (96 // 8) + (64 // 16) * (96 // 16) + (64 // 32) * (96 // 32)
    assert loc.shape == (1, 2 * priors, 4) and conf.shape == (1, 2 * priors, 2) and landms.shape == (1, 2 * priors, 10)

    path = tmp_path / "toy.pth"
    retinaface.save_model(model, path)
    loaded = retinaface.load_model(str(path)).eval()          # rebuilt by name from the registry
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    ours = retinaface.Detector(model, conf_threshold=0.0).detect(image)
    theirs = retinaface.Detector(loaded, conf_threshold=0.0).detect(image)
    assert len(ours) > 0 and torch.equal(torch.as_tensor(ours), torch.as_tensor(theirs))


def test_a_name_is_registered_once(toy_backbone):
    with pytest.raises(ValueError, match="registered twice"):
        register_backbone(toy_backbone)(lambda pretrained=False, **kw: ToyBody())
