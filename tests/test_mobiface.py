"""The mobiface backbone: layout, strides, width multiplier and use inside RetinaFace."""
import pytest
import torch

from retinaface import BackboneError, create_model, list_backbones
from retinaface.models import create_backbone
from retinaface.models.mobiface import Bottleneck, MobiFace, make_divisible
from retinaface.priors import num_priors


def test_registered_with_fpn_width_64():
    assert "mobiface" in list_backbones()
    assert create_model("mobiface").config.fpn_width == 64


def test_feature_strides_and_channels():
    body = create_backbone("mobiface").eval()
    assert body.out_channels == [64, 128, 256] and body.strides == [8, 16, 32]
    with torch.no_grad():
        feats = body(torch.randn(1, 3, 128, 96))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 16, 12), (1, 128, 8, 6), (1, 256, 4, 3)]


def test_layout_follows_mobiface():
    body = MobiFace()
    stem_conv, stem_dw = body.stem
    assert stem_conv[0].kernel_size == (3, 3) and stem_conv[0].stride == (2, 2)
    assert stem_dw[0].groups == stem_dw[0].in_channels == 64  # the depthwise-separable layer
    for stage, repeats in zip((body.stage1, body.stage2, body.stage3), (2, 3, 6)):
        opener, *residuals = stage
        assert isinstance(opener, Bottleneck) and not opener.residual
        assert opener.depthwise[0].stride == (2, 2)
        assert len(residuals) == repeats
        assert all(b.residual and b.depthwise[0].stride == (1, 1) for b in residuals)
        assert opener.expand[0].out_channels == 2 * opener.expand[0].in_channels  # expansion t=2


def test_residual_block_adds_its_input():
    block = Bottleneck(16, 16, 1, 2, residual=True).eval()
    with torch.no_grad():
        torch.nn.init.zeros_(block.project[1].weight)
        torch.nn.init.zeros_(block.project[1].bias)
        x = torch.randn(2, 16, 8, 8)
        assert torch.equal(block(x), x)  # a zeroed branch leaves the shortcut alone
    with pytest.raises(ValueError):
        Bottleneck(16, 32, 1, 2, residual=True)


def test_width_multiplier_scales_channels_and_cost():
    half = create_backbone("mobiface", width_mult=0.5)
    assert half.out_channels == [32, 64, 128]
    assert make_divisible(0.25 * 64) == 16 and make_divisible(0.35 * 64) == 24
    full_params = sum(p.numel() for p in create_model("mobiface").parameters())
    half_model = create_model("mobiface", backbone_kwargs={"width_mult": 0.5})
    half_params = sum(p.numel() for p in half_model.parameters())
    assert half_params < 0.5 * full_params


def test_retinaface_outputs_and_training_step():
    model = create_model("mobiface", backbone_kwargs={"width_mult": 0.5})
    loc, conf, landms = model(torch.randn(2, 3, 96, 64))
    assert loc.shape == (2, num_priors(96, 64), 4) and landms.shape[-1] == 10
    (loc.square().mean() + conf.square().mean() + landms.square().mean()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_no_pretrained_weights():
    with pytest.raises(BackboneError, match="backbone_weights"):
        create_model("mobiface", pretrained=True)
