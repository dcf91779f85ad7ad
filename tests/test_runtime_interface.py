"""The declared runtime interface (retinaface/runtime_interface.py): the PyTorch, ONNX Runtime and
OpenVINO models implement it, the Detector plans with its members, and an export format added
through EXPORT_FORMATS alone (writer, loader, parity check) works in `retinaface export`."""
from __future__ import annotations

import dataclasses
import json
from typing import List, Tuple

import numpy as np
import pytest
import torch

from retinaface import Detector, create_model, load_model, load_runtime, save_model
from retinaface.deploy.export.metadata import build_metadata
from retinaface.deploy.export.writers import export_onnx
from retinaface.deploy.runtime import OnnxRuntimeModel
from retinaface.runtime_interface import (EXPORT_FORMATS, PYTORCH_TRAITS, ExportFormat, RuntimeModel,
                                          runtime_traits)

SIZE = (96, 128)


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return create_model("mobilenet0.25").eval()


def test_pytorch_network_declares_the_interface(network):
    assert isinstance(network, RuntimeModel)
    assert runtime_traits(network) == PYTORCH_TRAITS
    with pytest.raises(NotImplementedError):
        network.forward_uint8(np.zeros((1, 32, 32, 3), np.uint8), (104, 117, 123))
    # a module that declares nothing (a wrapper) runs as PyTorch does
    assert runtime_traits(torch.nn.Sequential(network)) == PYTORCH_TRAITS


@pytest.mark.parametrize("dynamic", [False, True])
def test_onnx_runtime_and_openvino_models_declare_the_file_they_run(network, tmp_path, dynamic):
    path = tmp_path / "model.onnx"
    export_onnx(network, path, dynamic=dynamic, size=SIZE)
    ort = OnnxRuntimeModel(path)
    assert isinstance(ort, RuntimeModel)
    traits = runtime_traits(ort)
    assert traits.fixed_input == (None if dynamic else (1, *SIZE))
    assert (traits.input_layout, traits.input_dtype, traits.outputs, traits.takes_uint8) == \
        ("NCHW", "float32", ("loc", "conf", "landms"), False)
    with pytest.raises(NotImplementedError):
        ort.forward_uint8(np.zeros((1, *SIZE, 3), np.uint8), (104, 117, 123))
    pytest.importorskip("openvino")
    ov = load_runtime(path, "openvino")
    assert isinstance(ov, RuntimeModel)
    assert runtime_traits(ov).takes_uint8 and runtime_traits(ov).fixed_input == traits.fixed_input


class FixedSizeModel:
    """A runtime of one input size, declared through the interface (not an nn.Module)."""

    input_layout, input_dtype, outputs, takes_uint8 = "NCHW", "float32", ("loc", "conf", "landms"), False

    def __init__(self, network, fixed: Tuple[int, int, int]) -> None:
        self.network, self.config, self.fixed_input, self.calls = network, network.config, fixed, []

    def __call__(self, images):
        self.calls.append(tuple(images.shape))
        with torch.no_grad():
            return self.network(images)

    def forward_uint8(self, images, mean):
        raise NotImplementedError

    def eval(self):
        return self

    def to(self, *args, **kwargs):
        return self


def test_detector_plans_with_the_declared_fixed_input(network):
    model = FixedSizeModel(network, (2, 64, 96))
    detector = Detector(model, device="cpu")
    assert detector.transform.fixed_size == (64, 96)
    images = [np.full((50 + 10 * i, 70, 3), 80 + i, np.uint8) for i in range(3)]
    detector.detect_batch(images)
    assert model.calls == [(2, 3, 64, 96), (1, 3, 64, 96)]  # letterboxed, at most 2 a call


# --------------------------------------------------------------------------- a toy format
@dataclasses.dataclass
class ToyReport:
    worst: float
    atol: float

    @property
    def passed(self) -> bool:
        return self.worst <= self.atol

    def lines(self) -> List[str]:
        return [f"toy parity: max |diff| {self.worst:.2e} ({'ok' if self.passed else 'FAIL'}, atol {self.atol:g})"]


def toy_writer(noise: float):
    def write(model, path, *, size, with_postprocess=False, width=None):
        if with_postprocess:
            raise ValueError("the toy format holds raw outputs only")
        copy = create_model(model.config.backbone)
        copy.load_state_dict(model.state_dict())
        with torch.no_grad():
            for p in copy.parameters():
                p.add_(noise)
        meta = build_metadata(copy, "toy", with_postprocess, False, size, width=width)
        save_model(copy, path, toy_metadata=json.dumps(meta))  # atomic, like every writer
        return meta
    return write


def toy_loader(path, threads=None):
    model = load_model(path).eval()

    def run(images):
        with torch.no_grad():
            return tuple(t.cpu() for t in model(images))
    return run


def toy_parity(model, path, atol=1e-4):
    torch.manual_seed(1)
    images = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        want = model.eval()(images)
    have = EXPORT_FORMATS["toy"].load(path)(images)  # the loader the table registers
    return ToyReport(max(float((a - b).abs().max()) for a, b in zip(want, have)), atol)


def test_a_format_added_through_the_table_exports_and_checks_parity(tmp_path, monkeypatch, capsys, network):
    from retinaface.cli import run_command

    monkeypatch.setitem(EXPORT_FORMATS, "toy", ExportFormat("toy", ".toy", "a test format", toy_writer(0.0),
                                                            toy_loader, toy_parity))
    monkeypatch.setitem(EXPORT_FORMATS, "toy-lossy", ExportFormat("toy-lossy", ".toy", "drifts", toy_writer(1e-2),
                                                                  toy_loader, toy_parity))
    weights = tmp_path / "model.pth"
    save_model(network, weights)
    out = tmp_path / "model.toy"
    args = ["--weights", str(weights), "--output", str(out), "--size", *map(str, SIZE)]
    assert run_command("export", args + ["--format", "toy"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (toy, mobilenet0.25" in printed and "toy parity" in printed and "ok" in printed
    assert out.is_file()
    assert run_command("export", args + ["--format", "toy-lossy", "--output", str(tmp_path / "lossy.toy")]) == 1
    assert "FAIL" in capsys.readouterr().out
    # --dynamic is an ONNX option: the toy writer (which registers no options) never sees it
    assert run_command("export", args + ["--format", "toy", "--dynamic", "--output", str(tmp_path / "d.toy")]) == 0
