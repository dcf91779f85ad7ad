"""Deployment: ONNX / TorchScript export and parity, in-graph decoding, metadata, the ONNX Runtime
backend of the Detector, BatchNorm folding, and tools/export.py end to end. CPU only, small inputs."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import retinaface
from retinaface import BoxCoder, Detector, ModelConfig, generate_priors, load_model
from retinaface.deploy.export import (DECODED_OUTPUTS, RAW_OUTPUTS, ExportError, export_onnx, export_torchscript,
                               read_metadata)
from retinaface.deploy.fusion import count_batchnorm, fuse_conv_bn
from retinaface.deploy.parity import check_parity
from retinaface.priors import pixel_priors
from retinaface.deploy.runtime import OnnxRuntimeModel, load_exported
from conftest import FIXTURES

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = FIXTURES / "biubug6_mnet025_seed0.pth"
EXPORT_SIZE = (128, 160)
# unseen by the exporter: odd, non-square, several batch sizes
UNSEEN = [(2, 3, 97, 131), (1, 3, 241, 317), (3, 3, 64, 64)]
MEAN = torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model():
    return load_model(WEIGHTS)


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    paths = {"onnx": out / "mnet.onnx", "onnx_decoded": out / "mnet_decoded.onnx",
             "onnx_static": out / "mnet_static.onnx", "ts": out / "mnet.pt"}
    export_onnx(model, paths["onnx"], dynamic=True, size=EXPORT_SIZE)
    export_onnx(model, paths["onnx_decoded"], dynamic=True, with_postprocess=True, size=EXPORT_SIZE)
    export_onnx(model, paths["onnx_static"], dynamic=False, size=(240, 320))
    export_torchscript(model, paths["ts"], size=EXPORT_SIZE)
    return paths


def images(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 255.0 - MEAN


def max_abs_diffs(expected, got):
    return [float((a - b).abs().max()) for a, b in zip(expected, got)]


def match_fraction(a: np.ndarray, b: np.ndarray, tol: float = 1e-3) -> float:
    """Share of rows of ``a`` with a row of ``b`` equal within ``tol`` in every column (order-free:
    NMS may order near-equal scores differently after float noise)."""
    if len(a) == 0 or len(b) == 0:
        return float(len(a) == len(b))
    dist = np.abs(a[:, None, :] - b[None, :, :]).max(-1)
    return float((dist.min(1) < tol).mean())


# -- ONNX / TorchScript parity -------------------------------------------------------------------
def test_onnx_parity_at_export_and_unseen_sizes_with_dynamic_batch(model, files):
    shapes = [(1, 3, *EXPORT_SIZE)] + UNSEEN
    report = check_parity(model, files["onnx"], shapes=shapes)
    assert report.passed, "\n".join(report.lines())
    assert report.max_diff <= 1e-4  # the fixture's outputs are O(1): the plain absolute bound holds
    assert [c.shape for c in report.cases] == shapes
    session = ort.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]


def test_onnx_raw_session_equals_pytorch(model, files):
    # without any retinaface code on the ORT side
    session = ort.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    x = images((2, 3, 150, 99), seed=3)
    got = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = model(x)
    assert [o.name for o in session.get_outputs()] == list(RAW_OUTPUTS)
    assert max(max_abs_diffs(expected, [torch.from_numpy(g) for g in got])) <= 1e-4


def test_static_onnx_has_fixed_shape(model, files):
    report = check_parity(model, files["onnx_static"])
    assert report.passed and [c.shape for c in report.cases] == [(1, 3, 240, 320)]
    runtime = OnnxRuntimeModel(files["onnx_static"])
    assert runtime.input_shape == (1, 3, 240, 320)
    with pytest.raises(ValueError, match="fixed input shape"):
        runtime(images((1, 3, 128, 160)))


def test_torchscript_parity_at_unseen_sizes(model, files):
    report = check_parity(model, files["ts"], shapes=[(1, 3, *EXPORT_SIZE)] + UNSEEN[:2])
    assert report.passed and report.max_diff <= 1e-4, "\n".join(report.lines())


def test_onnx_export_with_the_dynamo_exporter(model, tmp_path):
    # torch.export-based exporter; a fixed size keeps it fast (dynamic shapes take ~25 s here)
    path = tmp_path / "dynamo.onnx"
    meta = export_onnx(model, path, dynamo=True, opset=18, size=(96, 128))
    assert meta["exporter"].startswith("torch.export")
    report = check_parity(model, path)
    assert report.passed and report.max_diff <= 1e-4, "\n".join(report.lines())


def test_parity_on_a_size_the_file_cannot_run_is_a_one_line_export_error(model, files):
    # onnxruntime raises its own (non-RuntimeError) types; tools/export.py must get an ExportError
    with pytest.raises(ExportError, match=r"mnet_static\.onnx: fails on input 1x3x128x160"):
        check_parity(model, files["onnx_static"], shapes=[(1, 3, 128, 160)])


def test_parity_counts_equal_non_finite_outputs_as_equal(model, tmp_path):
    # exp() overflow in the decoded boxes: inf / nan at the same places in PyTorch and the trace
    net = copy.deepcopy(model)
    with torch.no_grad():
        net.BboxHead[0].conv1x1.bias.fill_(1000.0)
    path = tmp_path / "overflow.pt"
    export_torchscript(net, path, with_postprocess=True, size=(64, 96))
    report = check_parity(net, path, shapes=[(1, 3, 64, 96), (1, 3, 97, 131)])
    assert report.passed and report.max_diff == 0.0, "\n".join(report.lines())
    # an infinite output does not make the tolerance infinite
    assert all(np.isfinite(t) for case in report.cases for t in case.tolerances.values())


# -- in-graph decoding ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(1, 1), (33, 65), (241, 317), (128, 160)])
def test_pixel_priors_match_generate_priors(size):
    height, width = size
    got = pixel_priors(torch.zeros(1, 3, height, width), ((16, 32), (64, 128), (256, 512)), (8, 16, 32))
    expected = generate_priors(height, width) * torch.tensor([width, height, width, height])
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-4)


def decode_in_pytorch(model, x):
    """The reference: raw outputs decoded against normalized priors, scaled to pixels."""
    with torch.no_grad():
        loc, conf, landms = model(x)
    height, width = x.shape[-2:]
    priors = generate_priors(height, width, model.config.min_sizes, model.config.steps)
    coder = BoxCoder(model.config.variances)
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    return (coder.decode_boxes(loc, priors) * scale, conf[..., 1],
            coder.decode_landmarks(landms, priors) * scale[:2].repeat(5))


@pytest.mark.parametrize("shape", [(1, 3, *EXPORT_SIZE), (2, 3, 97, 131)])
def test_with_postprocess_onnx_equals_pytorch_decoding(model, files, shape):
    session = ort.InferenceSession(str(files["onnx_decoded"]), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(DECODED_OUTPUTS)
    x = images(shape, seed=1)
    boxes, scores, landmarks = (torch.from_numpy(v) for v in session.run(None, {"input": x.numpy()}))
    ref_boxes, ref_scores, ref_landmarks = decode_in_pytorch(model, x)
    assert boxes.shape == (shape[0], ref_boxes.shape[1], 4) and scores.shape == ref_scores.shape
    # pixel coordinates of a few hundred: float32 resolves ~3e-5 there
    torch.testing.assert_close(boxes, ref_boxes, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(landmarks, ref_landmarks, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(scores, ref_scores, rtol=0, atol=1e-4)


# -- metadata ------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["onnx", "onnx_decoded", "ts"])
def test_metadata_records_the_input_contract(model, files, key):
    meta = read_metadata(files[key])
    assert meta["format"] == "retinaface-export"
    assert meta["backbone"] == "mobilenet0.25"
    assert meta["input_color"] == "BGR" and json.loads(meta["input_mean"]) == [104.0, 117.0, 123.0]
    assert meta["input_layout"] == "NCHW" and meta["input_dtype"] == "float32"
    assert json.loads(meta["dynamic"]) is True
    assert ModelConfig.from_dict(json.loads(meta["config"])) == model.config
    decoded = key == "onnx_decoded"
    assert json.loads(meta["output_names"]) == list(DECODED_OUTPUTS if decoded else RAW_OUTPUTS)
    assert set(json.loads(meta["outputs"])) == set(json.loads(meta["output_names"]))
    if key != "ts":
        assert int(meta["opset"]) >= 17


def test_metadata_width_is_the_width_the_model_runs_at(model, tmp_path):
    from retinaface.adaptive import make_adaptive

    # a width the model does not run at must not be recorded (it used to be, silently)
    with pytest.raises(ExportError, match="--width 0.5"):
        export_onnx(model, tmp_path / "a.onnx", size=(64, 96), width=0.5)
    adaptive = make_adaptive(copy.deepcopy(model)).eval().set_width(0.5)
    with pytest.raises(ExportError, match="runs at width 0.5"):
        export_torchscript(adaptive, tmp_path / "a.pt", size=(64, 96), width=0.75)
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "a.pt").exists()
    # an adaptive model records its width even when none is passed
    assert json.loads(export_onnx(adaptive, tmp_path / "b.onnx", size=(64, 96))["width"]) == 0.5
    assert json.loads(read_metadata(tmp_path / "b.onnx")["width"]) == 0.5
    assert "width" not in export_onnx(model, tmp_path / "c.onnx", size=(64, 96))


def test_export_leaves_no_temporary_files(files):
    leftovers = [p.name for p in files["onnx"].parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_export_rejects_bad_arguments(model, tmp_path):
    with pytest.raises(ExportError, match="opset"):
        export_onnx(model, tmp_path / "a.onnx", opset=13)
    with pytest.raises(ExportError, match="size"):
        export_onnx(model, tmp_path / "a.onnx", dynamic=True, size=(16, 16))
    assert not (tmp_path / "a.onnx").exists()


# -- Detector on ONNX Runtime --------------------------------------------------------------------
def test_detector_onnxruntime_gives_the_torch_detections(model, files):
    image = np.load(FIXTURES / "biubug6_mnet025_io.npz")["image_bgr"]
    torch_dets = Detector(model).detect(image)
    onnx_detector = Detector.from_checkpoint(files["onnx"])
    assert isinstance(onnx_detector.model, OnnxRuntimeModel)
    assert onnx_detector.model.config == model.config
    onnx_dets = onnx_detector.detect(image)
    assert len(torch_dets) > 0 and onnx_dets.shape == torch_dets.shape
    assert match_fraction(onnx_dets, torch_dets) == 1.0
    assert match_fraction(torch_dets, onnx_dets) == 1.0
    np.testing.assert_allclose(onnx_dets[:, 4], torch_dets[:, 4], atol=1e-5)  # scores stay sorted alike


def test_detector_onnxruntime_batches_of_mixed_sizes(model, files):
    image = np.load(FIXTURES / "biubug6_mnet025_io.npz")["image_bgr"]
    batch = [image, np.ascontiguousarray(image[:150, :200]), np.ascontiguousarray(image[::-1])]
    kwargs = dict(channels_last=True, target_size=200, max_size=260)
    torch_dets = Detector(model, **kwargs).detect_batch(batch)
    onnx_dets = Detector(OnnxRuntimeModel(files["onnx"]), **kwargs).detect_batch(batch)
    for a, b in zip(onnx_dets, torch_dets):
        assert a.shape == b.shape and match_fraction(a, b) == 1.0


def test_onnxruntime_model_errors_are_clear(files, tmp_path):
    with pytest.raises(ExportError, match="with-postprocess"):
        OnnxRuntimeModel(files["onnx_decoded"])
    with pytest.raises(ExportError, match="not found"):
        OnnxRuntimeModel(tmp_path / "missing.onnx")
    with pytest.raises(ExportError, match="resnet50"):
        Detector.from_checkpoint(files["onnx"], backbone="resnet50")
    with pytest.raises(ValueError, match="backend"):
        Detector.from_checkpoint(WEIGHTS, backend="tensorrt")


# -- BatchNorm folding ---------------------------------------------------------------------------
def calibrate(net: nn.Module, size=(48, 64), steps: int = 1) -> nn.Module:
    """Running statistics measured on data, as in a trained network (fresh BN stats make
    activations explode through 50 layers, which only tests float32 rounding)."""
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    net.train()
    with torch.no_grad():
        for step in range(steps):
            net(images((2, 3, *size), seed=10 + step))
    return net.eval()


def assert_fused_matches(net: nn.Module, x: torch.Tensor, tol: float) -> None:
    with torch.no_grad():
        expected = net(x)
    before = count_batchnorm(net)
    fused = copy.deepcopy(net).fuse()
    assert before > 0 and count_batchnorm(fused) == 0
    with torch.no_grad():
        got = fused(x)
    for a, b in zip(got, expected):
        # relative to the output's magnitude (plain absolute for outputs of size <= 1)
        assert float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


def test_fuse_mobilenet025_fixture(model):
    assert_fused_matches(model, images((2, 3, 96, 128)), 1e-5)


def test_fuse_resnet50():
    torch.manual_seed(0)
    assert_fused_matches(calibrate(retinaface.create_model("resnet50")), images((1, 3, 48, 64)), 1e-5)


def test_fuse_timm_mobilenetv3_batchnormact():
    torch.manual_seed(0)
    net = calibrate(retinaface.create_model("mobilenetv3_small"), size=(64, 96), steps=2)
    assert any(type(m).__name__ == "BatchNormAct2d" for m in net.modules())
    assert_fused_matches(net, images((1, 3, 64, 96)), 1e-5)


def test_fuse_timm_efficientnet_is_exact_in_float64():
    # float32 rounding of this random deep net is ~1e-5 relative by itself; float64 shows the fold is exact
    torch.manual_seed(0)
    net = calibrate(retinaface.create_model("efficientnet_b0")).double()
    assert_fused_matches(net, images((1, 3, 48, 64)).double(), 1e-10)


def test_fuse_needs_eval_mode_and_returns_self(model):
    net = copy.deepcopy(model)
    with pytest.raises(RuntimeError, match="eval"):
        net.train().fuse()
    net.eval()
    assert net.fuse() is net


class _NotConsecutive(nn.Module):
    """conv/bn attributes in order, but the BN normalizes the input and the conv output is reused."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        self.conv3 = nn.Conv2d(3, 3, 1)
        self.bn3 = nn.BatchNorm2d(3)

    def forward(self, x):
        a = self.conv1(x) + self.bn1(x)      # bn1 is not applied to conv1's output
        b = self.conv2(a)
        c = self.bn2(b) + b                  # conv2's output has a second user
        return self.bn3(self.conv3(c))      # the only foldable pair


def test_fuse_only_folds_pairs_consecutive_in_the_forward():
    torch.manual_seed(0)
    net = _NotConsecutive()
    for bn in (net.bn1, net.bn2, net.bn3):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    net.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = net(x)
    fuse_conv_bn(net)
    assert isinstance(net.bn1, nn.BatchNorm2d) and isinstance(net.bn2, nn.BatchNorm2d)
    assert isinstance(net.bn3, nn.Identity) and net.conv3.bias is not None
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)


# -- tools/export.py -----------------------------------------------------------------------------
def _run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "export.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def _load_tool():
    from retinaface.cli import export

    return export


def test_cli_exports_onnx_and_checks_parity(tmp_path):
    out = tmp_path / "sub" / "mnet.onnx"
    result = _run_cli("--weights", WEIGHTS, "--format", "onnx", "--output", out, "--dynamic",
                      "--size", 96, 128)
    assert result.returncode == 0, result.stderr
    assert "parity PASS" in result.stdout and "2x3x241x317" in result.stdout
    assert read_metadata(out)["backbone"] == "mobilenet0.25"


def test_cli_bad_weights_is_a_one_line_error(tmp_path):
    missing = tmp_path / "nope.pth"
    result = _run_cli("--weights", missing, "--format", "onnx", "--output", tmp_path / "x.onnx")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tools/export.py: error:") and "nope.pth" in lines[0]
    assert not (tmp_path / "x.onnx").exists()


def test_cli_torchscript_with_postprocess_in_process(model, tmp_path, capsys):
    tool = _load_tool()
    out = tmp_path / "mnet.pt"
    assert tool.main(["--weights", str(WEIGHTS), "--format", "torchscript", "--output", str(out),
                      "--with-postprocess", "--size", "96", "128"]) == 0
    stdout = capsys.readouterr().out
    assert "parity PASS" in stdout and "boxes" in stdout
    assert json.loads(read_metadata(out)["with_postprocess"]) is True
    # the decoded TorchScript outputs equal PyTorch decoding at a size the trace never saw
    x = images((2, 3, 97, 131), seed=2)
    for got, expected in zip(load_exported(out)(x), decode_in_pytorch(model, x)):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3)


def test_cli_parity_failure_exits_non_zero(tmp_path, capsys, monkeypatch):
    import retinaface.deploy.parity as library

    def failing_check(model, path, **kwargs):
        case = library.ParityCase((1, 3, 96, 128), {"loc": 0.5}, {"loc": 1e-4})
        return library.ParityReport(str(path), [case])

    monkeypatch.setattr(library, "check_parity", failing_check)
    out = tmp_path / "m.onnx"
    assert _load_tool().main(["--weights", str(WEIGHTS), "--format", "onnx", "--output", str(out),
                              "--size", "96", "128"]) == 1
    captured = capsys.readouterr()
    assert "parity FAIL" in captured.out and "MISMATCH" in captured.out and "FAIL" in captured.err
    assert out.exists()  # kept for inspection


def test_cli_argument_errors_in_process(tmp_path, capsys):
    tool = _load_tool()
    base = ["--weights", str(WEIGHTS), "--output", str(tmp_path / "m.onnx")]
    assert tool.main(base + ["--format", "onnx", "--opset", "13", "--no-check"]) == 2
    assert "--opset 13" in capsys.readouterr().err
    # adaptive widths belong to another part of the toolkit; a plain checkpoint must refuse one
    assert tool.main(base + ["--format", "onnx", "--width", "0.5", "--no-check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("retinaface export: error:") and "width" in err[0]
    assert not (tmp_path / "m.onnx").exists()


def test_detect_tool_runs_an_onnx_file(files, tmp_path, capsys):
    import cv2

    image = np.load(FIXTURES / "biubug6_mnet025_io.npz")["image_bgr"]
    cv2.imwrite(str(tmp_path / "face.png"), image)
    from retinaface.cli import detect as tool

    records = {}
    for name, weights in (("onnx", files["onnx"]), ("torch", WEIGHTS)):
        out = tmp_path / name
        assert tool.main(["--weights", str(weights), str(tmp_path / "face.png"), "--output", str(out)]) == 0
        faces = json.loads((out / "detections.jsonl").read_text().splitlines()[0])["faces"]
        records[name] = np.array([f["box"] + [f["score"]] + sum(f["landmarks"], []) for f in faces])
    capsys.readouterr()
    assert records["onnx"].shape == records["torch"].shape
    # the tool rounds to 2 (coordinates) and 5 (scores) decimals; a rounding tie may differ by one unit
    assert match_fraction(records["onnx"], records["torch"], tol=0.011) == 1.0


@pytest.mark.parametrize("extra, name", [(["--threads", "-1"], "--threads"), (["--threads", "0"], "--threads"),
                                         (["--atol", "-1"], "--atol"), (["--atol", "nan"], "--atol")])
def test_cli_bad_numbers_are_one_line_errors(tmp_path, capsys, extra, name):
    tool = _load_tool()
    out = tmp_path / "m.onnx"
    assert tool.main(["--weights", str(WEIGHTS), "--format", "onnx", "--output", str(out),
                      "--size", "64", "96", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # argparse's usage line, then one line naming the flag and the allowed range
    assert err[-1].startswith(f"retinaface export: error: argument {name}:")
    assert "allowed range" in err[-1]
    assert not out.exists()


def test_cli_output_directory_is_a_one_line_error(tmp_path, capsys):
    assert _load_tool().main(["--weights", str(WEIGHTS), "--format", "onnx", "--output", str(tmp_path),
                              "--size", "64", "96", "--no-check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("retinaface export: error: --output") and "directory" in err[0]
    assert [p.name for p in tmp_path.parent.iterdir() if p.name.endswith(".tmp")] == []
