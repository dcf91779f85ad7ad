import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from retinaface import CheckpointError, create_model, load_model, save_model
from retinaface.checkpoint import read_checkpoint
from retinaface.models.backbones import BackboneError
from tests.conftest import ROOT


def run_fixture(model, io):
    image = io["image_bgr"].astype(np.float32) - np.array([104, 117, 123], np.float32)
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    with torch.inference_mode():
        return [t.numpy() for t in model(x)]


@pytest.mark.parametrize("which", ["legacy_checkpoint", "legacy_checkpoint_dp"])
def test_pytorch_retinaface_checkpoint_reproduces_outputs(which, request, fixture_io):
    model = load_model(request.getfixturevalue(which))
    assert model.config.backbone == "mobilenet0.25" and model.config.fpn_width == 64
    for out, name in zip(run_fixture(model, fixture_io), ("loc", "conf", "landms")):
        assert out.shape == fixture_io[name].shape
        assert np.abs(out - fixture_io[name]).max() <= 1e-5, name


def test_save_load_round_trip_is_identical(tmp_path):
    torch.manual_seed(3)
    model = create_model("mobilenet0.25").eval()
    path = tmp_path / "model.pth"
    save_model(model, path, epoch=4)
    assert read_checkpoint(path)["epoch"] == 4
    loaded = load_model(path)
    x = torch.randn(1, 3, 75, 99)
    with torch.inference_mode():
        for a, b in zip(model(x), loaded(x)):
            assert torch.equal(a, b)


def test_round_trip_keeps_non_default_config(tmp_path):
    model = create_model("timm:resnet18", fpn_width=32)
    save_model(model, tmp_path / "r18.pth")
    loaded = load_model(tmp_path / "r18.pth")
    assert loaded.config.backbone == "timm:resnet18" and loaded.config.fpn_width == 32


def test_backbone_flag_must_agree_with_own_checkpoint(tmp_path):
    save_model(create_model("mobilenet0.25"), tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match="holds backbone 'mobilenet0.25'"):
        load_model(tmp_path / "m.pth", backbone="resnet50")


def test_corrupt_file_gives_clear_error(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pth: not a readable PyTorch checkpoint"):
        load_model(bad)


def test_truncated_checkpoint_gives_clear_error(tmp_path, legacy_checkpoint):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(legacy_checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_model(cut)


def test_foreign_state_dict_lists_missing_and_unexpected_keys(tmp_path, legacy_checkpoint):
    state = torch.load(legacy_checkpoint, weights_only=True)
    del state["ClassHead.0.conv1x1.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "foreign.pth")
    message = str(info.value)
    assert "foreign.pth" in message and "1 missing keys" in message and "ClassHead.0.conv1x1.bias" in message
    assert "1 unexpected keys" in message and "extra.weight" in message


def test_unrelated_state_dict_is_rejected(tmp_path):
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "linear.pth")
    with pytest.raises(CheckpointError, match="not a RetinaFace state dict"):
        load_model(tmp_path / "linear.pth")


def test_pickled_code_is_refused(tmp_path):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "code.pth")  # a pickled module, not data
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_model(tmp_path / "code.pth")


def test_wrong_backbone_shapes_are_named(tmp_path, legacy_checkpoint):
    state = torch.load(legacy_checkpoint, weights_only=True)
    state["body.stage1.0.0.weight"] = torch.zeros(8, 3, 5, 5)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="shape mismatch: body.stage1.0.0.weight"):
        load_model(tmp_path / "shape.pth")


def test_resnet50_legacy_layout_is_inferred(tmp_path):
    # a Pytorch_Retinaface ResNet-50 file holds torchvision's ResNet-50 under body.* (no fc)
    import torchvision

    torch.manual_seed(0)
    ours = create_model("resnet50")
    state = {f"module.{k}": v for k, v in ours.state_dict().items()}
    body = torchvision.models.resnet50().state_dict()
    tv_keys = {f"module.body.{k}" for k in body if not k.startswith("fc.")}
    assert tv_keys == {k for k in state if k.startswith("module.body.")}
    torch.save(state, tmp_path / "Resnet50_Final.pth")
    loaded = load_model(tmp_path / "Resnet50_Final.pth")
    assert loaded.config.backbone == "resnet50" and loaded.config.fpn_width == 256


def test_backbone_weights_file(tmp_path):
    torch.manual_seed(1)
    source = create_model("mobilenet0.25").body.state_dict()
    # as ImageNet files come: DataParallel prefix, a classifier, nested under state_dict
    torch.save({"state_dict": {**{f"module.{k}": v for k, v in source.items()},
                               "module.fc.weight": torch.zeros(1000, 256)}}, tmp_path / "imagenet.tar")
    model = create_model("mobilenet0.25", backbone_weights=str(tmp_path / "imagenet.tar"))
    for k, v in model.body.state_dict().items():
        assert torch.equal(v, source[k])
    with pytest.raises(BackboneError, match="missing"):
        torch.save({"stage1.0.0.weight": source["stage1.0.0.weight"]}, tmp_path / "partial.pth")
        create_model("mobilenet0.25", backbone_weights=str(tmp_path / "partial.pth"))


def test_pretrained_offline_fails_with_one_line():
    code = ("from retinaface import create_model\n"
            "try:\n    create_model('resnet50', pretrained=True)\n"
            "except Exception as e:\n    print(type(e).__name__ + '|' + str(e))\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120).stdout.strip()
    assert out.startswith("BackboneError|could not get ImageNet weights for timm model 'resnet50'")
    assert "\n" not in out and "backbone_weights=PATH" in out


def test_own_format_without_config_or_weights_is_named(tmp_path):
    torch.save({"format": "retinaface", "format_version": 1}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="empty.pth: retinaface checkpoint without its config and model"):
        load_model(tmp_path / "empty.pth")
