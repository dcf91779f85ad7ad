"""Landmark networks: the seed's MobileNetV3-small (its parameter count and FLOPs convention), PFLD,
timm bodies, the registry and configs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retinaface.landmarks import models


@pytest.fixture(scope="module")
def seed_model():
    torch.manual_seed(0)
    return models.create_landmark_model("mobilenetv3_small", models.SEED_NUM_POINTS)


def test_seed_network_has_the_reports_parameter_count(seed_model):
    assert models.count_parameters(seed_model) == 1_560_906 == models.SEED_PARAMETERS
    assert seed_model.config.input_size == 224
    # the report's torchsummary rows: the classifier's 1024 -> 42 linear holds 43,050 parameters
    assert sum(p.numel() for p in seed_model.body.classifier[-1].parameters()) == 43_050


def test_seed_flops_are_twice_thops_total(single_thread, seed_model):
    ops = models.thop_operations(seed_model, 224)
    assert ops == 61_496_952 == models.SEED_THOP_OPERATIONS
    assert 2 * ops == 122_993_904          # the report's "FLOPS: 0.122993904 G"
    # torch's own counter: 2 x the multiply-accumulates of convolutions and linear layers only
    assert models.torch_flops(seed_model, 224) == 111_058_816
    complexity = models.model_complexity(seed_model, 224)
    assert complexity["gflops"] == pytest.approx(0.122993904, abs=1e-12)
    assert complexity["params_millions"] == pytest.approx(1.560906, abs=1e-12)


def test_thop_convention_on_a_hand_counted_network(single_thread):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=True), torch.nn.BatchNorm2d(4),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2))
    # conv 8x8x4 outputs x 27 (no bias) = 6912; BN 4 x 256 = 1024; pool (64 + 1) x 4 = 260; linear 4 x 2 = 8
    assert models.thop_operations(net, 8) == 6912 + 1024 + 260 + 8


def test_seed_model_outputs_normalised_points(single_thread, seed_model):
    seed_model.eval()
    with torch.no_grad():
        out = seed_model(torch.zeros(2, 3, 224, 224))
    assert out.shape == (2, 21, 2)
    # the last layer's bias starts at the crop centre
    np.testing.assert_allclose(seed_model.body.classifier[-1].bias.detach().numpy(), 0.5)


@pytest.mark.parametrize("points, width", [(98, 1.0), (68, 0.25), (5, 0.5)])
def test_pfld_any_number_of_points(single_thread, points, width):
    net = models.create_landmark_model("pfld", points, width=width)
    assert net.config.input_size == 112
    out = net(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, points, 2)
    out.sum().backward()   # trains in a batch of two (no batch norm on the 1 x 1 map)


def test_pfld_width_scales_and_input_size_checked():
    small = models.count_parameters(models.create_landmark_model("pfld", 98, width=0.25))
    full = models.count_parameters(models.create_landmark_model("pfld", 98))
    assert small < full / 4
    with pytest.raises(ValueError, match="multiple of 16"):
        models.create_landmark_model("pfld", 98, input_size=100)


def test_timm_body(single_thread):
    net = models.create_landmark_model("timm:mobilenetv3_small_050", 21, input_size=96)
    assert net(torch.zeros(1, 3, 96, 96)).shape == (1, 21, 2)
    with pytest.raises(ValueError, match="unknown timm model"):
        models.create_landmark_model("timm:no_such_net", 21)


def test_registry_and_config_round_trip():
    assert {"mobilenetv3_small", "pfld"} <= set(models.list_landmark_models())
    net = models.create_landmark_model("pfld", 29, input_size=128, width=0.5)
    data = net.config.to_dict()
    assert data == {"name": "pfld", "num_points": 29, "input_size": 128, "kwargs": {"width": 0.5}}
    again = models.landmark_model_from_config(data)
    assert models.count_parameters(again) == models.count_parameters(net)
    with pytest.raises(ValueError, match="unknown landmark model 'nope'"):
        models.create_landmark_model("nope", 68)
    with pytest.raises(ValueError, match=r"unknown landmark model config field\(s\) \['extra'\]"):
        models.LandmarkModelConfig.from_dict({**data, "extra": 1})
    with pytest.raises(ValueError, match="already registered"):
        models.register_landmark_model("pfld", 112)(lambda **kw: None)


def test_preprocess_crops_rgb_imagenet():
    crop = np.zeros((4, 4, 3), dtype=np.uint8)
    crop[..., 2] = 255                    # red in BGR
    tensor = models.preprocess_crops(crop)
    assert tensor.shape == (1, 3, 4, 4)
    np.testing.assert_allclose(tensor[0, :, 0, 0].numpy(),
                               [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225], rtol=1e-6)
    with pytest.raises(ValueError, match="uint8 BGR"):
        models.preprocess_crops(np.zeros((4, 4, 3), dtype=np.float32))
