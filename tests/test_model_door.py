"""The doors to a detection model, and only those: ``create_model`` builds one (a backbone name or a
``ModelConfig``), ``load_model`` loads a checkpoint (a file or a zoo name), ``load_runtime`` (and
``Detector.from_checkpoint`` over it) opens any file for inference: a checkpoint, or an ONNX or
TorchScript export. The earlier doors are deprecated aliases that warn and give the same model."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing

import numpy as np
import pytest
import torch
from torch import nn

import retinaface
from retinaface import Detector, ModelConfig, create_model, load_model, load_runtime, save_model
from retinaface.deploy.export.metadata import ExportedModel, ExportError
from retinaface.deploy.export.writers import export_torchscript
from retinaface.deploy.runtime import TorchScriptModel, is_torchscript_export
from retinaface.runtime_interface import RuntimeModel

DOORS = {"retinaface.build.create_model", "retinaface.checkpoint.load_model", "retinaface.deploy.runtime.load_runtime"}
DEPRECATED = {"retinaface.build.build_model", "retinaface.deploy.export.writers.load_for_export",
              "retinaface.deploy.runtime.load_runtime_model", "retinaface.deploy.runtime.load_onnx_model",
              "retinaface.deploy.openvino_backend.load_openvino_model", "retinaface.deploy.quantize.load_backend_model"}
# public functions that return a module without being a door to a detection model
NOT_DOORS = {
    "retinaface.models.backbones.create_backbone": "a backbone: the feature maps one RetinaFace part reads",
    "retinaface.models.backbones.timm_backbone": "a backbone, as create_backbone",
    "retinaface.models.layers.conv_bn": "a layer",
    "retinaface.models.layers.conv_dw": "a layer",
    "retinaface.engine.builders.initial_model": "the trainer's model, built through create_model",
    "retinaface.engine.builders.prepare_model": "the trainer's model on its device, from initial_model",
}
SIZE = (64, 96)


def _returns_model(function) -> bool:
    hint = typing.get_type_hints(function).get("return")
    return isinstance(hint, type) and (hint is RuntimeModel or issubclass(hint, (nn.Module, ExportedModel)))


def _takes_model(function) -> bool:
    """Whether the first parameter is a model (the function changes a model, it does not make one)."""
    params = list(inspect.signature(function).parameters)
    if not params:
        return False
    hint = typing.get_type_hints(function).get(params[0])
    return isinstance(hint, type) and (hint is RuntimeModel or issubclass(hint, (nn.Module, ExportedModel)))


def test_the_package_root_offers_exactly_three_doors():
    makers = {name for name in retinaface.__all__ if inspect.isfunction(getattr(retinaface, name, None))
              and _returns_model(getattr(retinaface, name))}
    assert makers == {"create_model", "load_model", "load_runtime"}
    assert "build_model" not in retinaface.__all__  # deprecated: importable, not advertised
    assert inspect.ismethod(Detector.from_checkpoint)


def test_no_other_public_function_makes_a_model():
    # recognition (embedders), dense landmarks (their own registry) and the commands are outside
    # the detection model's doors
    found = set()
    for info in pkgutil.walk_packages(retinaface.__path__, "retinaface."):
        if info.name.startswith(("retinaface.recognition", "retinaface.landmarks", "retinaface.cli")) or info.name == "retinaface.__main__":
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (not name.startswith("_") and inspect.isfunction(value) and value.__module__ == info.name
                    and _returns_model(value) and not _takes_model(value)):
                found.add(f"{info.name}.{name}")
    assert found == DOORS | DEPRECATED | set(NOT_DOORS), sorted(found ^ (DOORS | DEPRECATED | set(NOT_DOORS)))


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_create_model_takes_a_name_or_a_config():
    config = ModelConfig(backbone="mobilenet0.25", fpn_width=32)
    torch.manual_seed(0)
    by_config = create_model(config)
    torch.manual_seed(0)
    by_name = create_model("mobilenet0.25", fpn_width=32)
    assert by_config.config == by_name.config == config and _same_weights(by_config, by_name)
    assert create_model(config, fpn_width=16).config.fpn_width == 16  # overrides apply on a config too
    assert create_model(backbone="mobiface").config.backbone == "mobiface"  # the earlier keyword
    with pytest.raises(TypeError, match="backbone name or a ModelConfig"):
        create_model(3)


def test_deprecated_builders_warn_and_build_the_same_model():
    config = ModelConfig(fpn_width=32)
    torch.manual_seed(0)
    expected = create_model(config)
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="create_model"):
        built = retinaface.build_model(config)  # the root still resolves the earlier name
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="create_model"):
        keyword = create_model(config=config)
    assert built.config == keyword.config == expected.config
    assert _same_weights(built, expected) and _same_weights(keyword, expected)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="adaptive"):
        retinaface.build_model(config, width=0.5)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("mobilenet0.25", fpn_width=32).eval()
    path = tmp_path_factory.mktemp("door") / "m.pth"
    save_model(model, path)
    return path


def test_deprecated_checkpoint_loaders_warn_and_load_the_same_model(checkpoint):
    from retinaface.deploy.export import load_for_export
    from retinaface.deploy.runtime import load_runtime_model

    expected = load_model(checkpoint)
    with pytest.warns(DeprecationWarning, match="load_model"):
        for_export = load_for_export(checkpoint)
    with pytest.warns(DeprecationWarning, match="load_runtime"):
        runtime_model = load_runtime_model(checkpoint)
    for model in (for_export, runtime_model, load_runtime(checkpoint)):
        assert not model.training and model.config == expected.config and _same_weights(model, expected)


def test_deprecated_onnx_loaders_warn_and_run_like_load_runtime(checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    from retinaface.deploy.export.writers import export_onnx
    from retinaface.deploy.quantize import load_backend_model
    from retinaface.deploy.runtime import OnnxRuntimeModel, load_onnx_model

    path = tmp_path / "m.onnx"
    export_onnx(load_model(checkpoint), path, size=SIZE)
    images = torch.rand(1, 3, *SIZE) * 255 - 117
    expected = load_runtime(path)
    assert isinstance(expected, OnnxRuntimeModel)
    with pytest.warns(DeprecationWarning, match="load_runtime"):
        onnx_model = load_onnx_model(path)
    with pytest.warns(DeprecationWarning, match="load_runtime"):
        backend_model = load_backend_model(path)
    for model in (onnx_model, backend_model):
        for got, want in zip(model(images), expected(images)):
            assert torch.equal(got, want)
    with pytest.raises(ExportError, match="holds backbone 'mobilenet0.25', not 'resnet50'"):
        load_runtime(path, backbone="resnet50")


def test_load_runtime_opens_torchscript_exports(checkpoint, tmp_path):
    model = load_model(checkpoint)
    path = tmp_path / "m.pt"
    export_torchscript(model, path, size=SIZE)
    assert is_torchscript_export(path) and not is_torchscript_export(checkpoint)
    scripted = load_runtime(path)
    assert isinstance(scripted, TorchScriptModel) and isinstance(scripted, RuntimeModel)
    assert scripted.config == model.config and scripted.fixed_input is None
    images = torch.rand(2, 3, 80, 112) * 255 - 117  # another size than the export's: traced size-generic
    with torch.no_grad():
        for got, want in zip(scripted(images), model(images)):
            assert torch.allclose(got, want, atol=1e-4)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    via_file = Detector.from_checkpoint(path, conf_threshold=0.05).detect(image)
    via_model = Detector(model, conf_threshold=0.05, channels_last=False).detect(image)
    assert via_file.shape == via_model.shape and np.allclose(via_file, via_model, atol=1e-3)

    with pytest.raises(ValueError, match="exported with"):
        load_runtime(path, width=0.5)
    with pytest.raises(ValueError, match="PyTorch only"):
        load_runtime(path, "onnxruntime")
    decoded = tmp_path / "decoded.pt"
    export_torchscript(model, decoded, size=SIZE, with_postprocess=True)
    with pytest.raises(ExportError, match="with-postprocess"):
        load_runtime(decoded)


def test_detector_from_checkpoint_is_load_runtime_in_a_detector(checkpoint):
    detector = Detector.from_checkpoint(checkpoint, conf_threshold=0.3)
    assert _same_weights(detector.model, load_runtime(checkpoint)) and detector.conf_threshold == 0.3
    with pytest.raises(ValueError, match="backend='tensorrt'"):
        Detector.from_checkpoint(checkpoint, backend="tensorrt")


def test_private_builders_stay_private():
    import retinaface.models as models

    assert not hasattr(models, "create_body") and not hasattr(models, "build_retinaface")
    assert {"_create_body", "_build_retinaface"} <= set(vars(models))
