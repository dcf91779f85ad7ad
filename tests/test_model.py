import pytest
import torch

from retinaface import BackboneError, create_model, list_backbones
from retinaface.priors import num_priors

SIZES = [(97, 131), (150, 67)]


@pytest.mark.parametrize("backbone", [b for b in list_backbones() if b != "mobiface"] +
                         (["mobiface"] if "mobiface" in list_backbones() else []))
def test_output_shapes_match_prior_count(backbone):
    model = create_model(backbone).eval()
    for height, width in SIZES:
        with torch.inference_mode():
            loc, conf, landms = model(torch.randn(2, 3, height, width))
        p = num_priors(height, width)
        assert loc.shape == (2, p, 4)
        assert conf.shape == (2, p, 2)
        assert landms.shape == (2, p, 10)
        assert torch.allclose(conf.sum(-1), torch.ones(2, p), atol=1e-5)  # softmax in eval mode


def test_train_mode_returns_logits():
    model = create_model("mobilenet0.25").train()
    _, conf, _ = model(torch.randn(2, 3, 64, 64))
    assert not torch.allclose(conf.sum(-1), torch.ones_like(conf[..., 0]))


def test_fpn_width_defaults_and_override():
    assert create_model("mobilenet0.25").config.fpn_width == 64
    assert create_model("mobilenetv3_small").config.fpn_width == 256
    model = create_model("mobilenetv3_small", fpn_width=32)
    assert model.fpn.output1[0].out_channels == 32


def test_timm_generic_backbone_uses_reported_channels():
    model = create_model("timm:resnet18")
    assert model.body.out_channels == [128, 256, 512]
    assert model.fpn.output3[0].in_channels == 512


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backbone 'nope'"):
        create_model("nope")


def test_timm_model_without_stride_32_is_rejected():
    with pytest.raises(BackboneError, match="no features at stride"):
        create_model("timm:resnet18", backbone_kwargs={"output_stride": 16})


def test_model_config_refuses_levels_the_backbones_cannot_feed():
    from retinaface.config import ModelConfig

    with pytest.raises(ValueError, match=r"4 levels.*3 feature maps \(strides \(8, 16, 32\)\)"):
        ModelConfig(steps=(8, 16, 32, 64), min_sizes=((16,), (32,), (64,), (128,)))
    with pytest.raises(ValueError, match="num_classes must be 2"):
        ModelConfig(num_classes=3)


def test_steps_that_disagree_with_the_backbone_are_refused_naming_both():
    with pytest.raises(ValueError, match=r"steps \(8, 16, 64\).*mobilenet0.25's feature strides \(8, 16, 32\)"):
        create_model("mobilenet0.25", steps=(8, 16, 64))
