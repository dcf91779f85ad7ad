"""Embedding networks: shapes, the published sizes, config round trips, the registry, lazy imports."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from retinaface.recognition.models import EmbedderConfig, create_embedder, embedder_from_config, list_embedders


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def mult_adds(model: torch.nn.Module, height: int = 112, width: int = 112) -> float:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, height, width))
    return counter.get_total_flops() / 2


def test_registry():
    assert {"mobiface", "mobilefacenet"} <= set(list_embedders())
    with pytest.raises(ValueError, match="unknown embedder 'nope'"):
        create_embedder("nope")
    with pytest.raises(ValueError, match="unknown timm model"):
        create_embedder("timm:not_a_model_xyz")
    with pytest.raises(ValueError, match="width must be positive"):
        create_embedder("mobiface", width=0)


def test_mobilefacenet_has_the_papers_size():
    # Chen et al. 2018, table: 0.99 M parameters and 221 M multiply-adds with a 128-d embedding
    model = create_embedder("mobilefacenet", embedding_size=128)
    assert abs(params(model) / 0.99e6 - 1) < 0.03
    assert abs(mult_adds(model) / 221e6 - 1) < 0.03


def test_mobiface_follows_its_table():
    model = create_embedder("mobiface")
    body = model.body.eval()
    with torch.no_grad():
        x = torch.zeros(1, 3, 112, 112)
        shapes = []
        for layer in body:
            x = layer(x)
            shapes.append(tuple(x.shape[1:]))
    # fast down-sampling: 56 x 56 after the first conv; stage ends 28 / 14 / 7; 1x1 conv to 512 at 7 x 7
    assert shapes[0] == (64, 56, 56) and shapes[2] == (64, 56, 56)
    assert (64, 28, 28) in shapes and (128, 14, 14) in shapes and (256, 7, 7) in shapes
    assert shapes[-1] == (512, 7, 7)
    # 3 conv layers in the stem, then 1 + 2, 1 + 3 and 1 + 6 bottlenecks, then the 1x1 conv
    assert len(body) == 3 + 3 + 4 + 7 + 1
    pooled = create_embedder("mobiface", head="pool")
    assert params(model) - params(pooled) == 512 * 49 * 512 - 512 * 512 + 2 * 512  # FC over 7x7 + its BN2d


@pytest.mark.parametrize("name, kwargs", [("mobiface", {}), ("mobiface", {"head": "pool", "width": 0.5}),
                                          ("mobilefacenet", {"width": 0.75}),
                                          ("mobiface", {"input_size": (112, 96)}),
                                          ("timm:mobilenetv3_small_050", {})])
def test_embedding_shape_and_config_round_trip(name, kwargs):
    torch.manual_seed(0)
    model = create_embedder(name, embedding_size=64, **kwargs).eval()
    height, width = kwargs.get("input_size", (112, 112))
    x = torch.randn(3, 3, height, width)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (3, 64) and torch.isfinite(y).all()
    assert not torch.allclose(y.norm(dim=1), torch.ones(3))  # not normalized: the caller decides
    # a checkpoint of config dict + state dict loads with weights_only=True and rebuilds the same net
    buffer = io.BytesIO()
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    rebuilt = create_embedder(saved["config"]).eval()
    rebuilt.load_state_dict(saved["state_dict"])
    assert rebuilt.config == model.config
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), y, atol=1e-5)


def test_width_shrinks_the_network():
    full, half = create_embedder("mobiface", head="pool"), create_embedder("mobiface", head="pool", width=0.5)
    assert params(half) < 0.4 * params(full)
    assert mult_adds(half) < 0.4 * mult_adds(full)


def test_config_refuses_unknown_fields():
    with pytest.raises(ValueError, match="unknown embedder config field"):
        EmbedderConfig.from_dict({"name": "mobiface", "depth": 3})


def test_import_is_lazy():
    code = ("import sys, retinaface.recognition as r; assert 'torch' not in sys.modules, 'torch imported'; "
            "r.read_lfw_pairs; assert 'torch' not in sys.modules, 'data imported torch'; "
            "r.create_embedder; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_create_embedder_is_the_one_door_and_the_old_builders_warn():
    torch.manual_seed(0)
    by_name = create_embedder("mobiface", embedding_size=64, width=0.5)
    config = by_name.config
    for built in (create_embedder(config), create_embedder(config.to_dict())):
        assert built.config == config
        assert built.state_dict().keys() == by_name.state_dict().keys()
    from retinaface.recognition.checkpoint import build_embedder_from_config

    for old in (embedder_from_config, build_embedder_from_config):
        with pytest.warns(DeprecationWarning, match="create_embedder"):
            assert old(config.to_dict()).config == config
