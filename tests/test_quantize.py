"""INT8 post-training quantisation: QDQ structure, per-channel weights, float layers, metadata, agreement."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

import retinaface  # noqa: E402
from retinaface.deploy.export import export_onnx  # noqa: E402
from retinaface.deploy.quantize import (AccuracyReport, QuantizationError, calibration_images,  # noqa: E402
                                 quantization_info, quantize_onnx, reproduced_share)

SIZE = (96, 128)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    model = retinaface.create_model("mobilenet0.25").eval()
    float_path = tmp / "m.onnx"
    export_onnx(model, float_path, size=SIZE)
    rng = np.random.default_rng(0)
    calib = tmp / "calib"
    calib.mkdir()
    for i in range(6):
        # smooth random images: closer to photos than white noise
        img = cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), (SIZE[1], SIZE[0]))
        cv2.imwrite(str(calib / f"{i}.png"), img)
    images, source = calibration_images(calib, 4)
    detector = retinaface.Detector(retinaface.load_runtime(float_path))
    int8_path = tmp / "m.int8.onnx"
    result = quantize_onnx(float_path, int8_path, detector, images, method="minmax", calibration_source=source)
    return dict(tmp=tmp, float=float_path, int8=int8_path, result=result, images=images,
                detector=detector, source=source)


def test_qdq_graph_with_per_channel_weights_and_float_layers(files):
    proto = onnx.load(str(files["int8"]))
    nodes = proto.graph.node
    ops = [n.op_type for n in nodes]
    assert ops.count("QuantizeLinear") > 20 and ops.count("DequantizeLinear") > 20
    produced_by = {out: n for n in nodes for out in n.output}
    inits = {i.name: i for i in proto.graph.initializer}
    convs = [n for n in nodes if n.op_type == "Conv"]
    quantized = float_convs = 0
    for conv in convs:
        source = produced_by.get(conv.input[1])
        if source is None or source.op_type != "DequantizeLinear":
            float_convs += 1
            continue
        quantized += 1
        # per-channel: one scale per output channel along axis 0
        scale = inits[source.input[1]]
        weight = inits.get(source.input[0])
        assert len(scale.dims) == 1 and weight is not None and scale.dims[0] == weight.dims[0]
        assert weight.data_type == onnx.TensorProto.INT8
    # by default the convs finer than stride 8 stay float (the stem and the first depthwise
    # blocks: on real photos they cost 0.04 AP when quantised, docs/real.md), the others are int8
    stem = next(c for c in convs if c.input[0] == proto.graph.input[0].name)
    assert stem.name in files["result"].float_nodes
    high_resolution = [c for c in convs if c.name in files["result"].float_nodes]
    assert float_convs == len(high_resolution) and 1 < float_convs < len(convs) // 2
    assert quantized == len(convs) - float_convs
    assert all("/body/stage1/" in c.name for c in high_resolution)
    # the output tail stays float: the softmax reads no dequantised input
    softmax = next(n for n in nodes if n.op_type == "Softmax")
    assert produced_by[softmax.input[0]].op_type != "DequantizeLinear"


def test_metadata_records_method_images_and_float_choices(files):
    info = quantization_info(files["int8"])
    assert info["method"] == "minmax" and info["format"] == "QDQ"
    assert info["calibration_count"] == 4 and len(info["calibration_images"]) == 4
    assert "Softmax" in info["float_op_types"] and info["weights"] == "int8 per-channel"
    assert quantization_info(files["float"]) is None
    # the export contract is kept, so every runtime still opens it
    meta = {p.key: p.value for p in onnx.load(str(files["int8"])).metadata_props}
    assert meta["format"] == "retinaface-export" and json.loads(meta["config"])["backbone"] == "mobilenet0.25"
    assert meta["precision"] == "int8"


def test_int8_outputs_follow_float(files):
    float_model = retinaface.load_runtime(files["float"])
    int8_model = retinaface.load_runtime(files["int8"])
    batch = torch.from_numpy(np.stack([files["detector"].transform([cv2.imread(str(p))])[0][0].numpy()
                                       for p in files["images"][:1]]))
    (loc_f, conf_f, lm_f), (loc_q, conf_q, lm_q) = float_model(batch), int8_model(batch)
    for want, have in ((loc_f, loc_q), (conf_f, conf_q), (lm_f, lm_q)):
        # the quantisation error is a small fraction of each output's spread
        assert (want - have).abs().mean() < 0.05 * want.std()
        assert torch.corrcoef(torch.stack([want.flatten(), have.flatten()]))[0, 1] > 0.999
    # detections of the untrained model at a low threshold: most float boxes reproduced
    det_f = retinaface.Detector(float_model, conf_threshold=0.3).detect(cv2.imread(str(files["images"][0])))
    det_q = retinaface.Detector(int8_model, conf_threshold=0.3).detect(cv2.imread(str(files["images"][0])))
    assert len(det_f) > 0
    assert reproduced_share({0: det_f}, {0: det_q}, score_threshold=0.3, iou=0.7) >= 0.6


def test_other_methods_and_refusals(files):
    tmp = files["tmp"]
    out = tmp / "entropy.onnx"
    quantize_onnx(files["float"], out, files["detector"], files["images"][:2], method="entropy")
    assert quantization_info(out)["method"] == "entropy"
    with pytest.raises(QuantizationError, match="already exists"):
        quantize_onnx(files["float"], out, files["detector"], files["images"][:2])
    with pytest.raises(QuantizationError, match="--method"):
        quantize_onnx(files["float"], tmp / "x.onnx", files["detector"], files["images"], method="kl")
    with pytest.raises(QuantizationError, match="already quantised"):
        quantize_onnx(files["int8"], tmp / "y.onnx", files["detector"], files["images"])
    with pytest.raises(QuantizationError, match="no images"):
        calibration_images(_empty(tmp), 4)


def _empty(tmp):
    folder = tmp / "empty"
    folder.mkdir(exist_ok=True)
    return folder


def test_reproduced_share_counts_each_candidate_once():
    ref = np.zeros((2, 15), dtype=np.float32)
    ref[:, :5] = [[0, 0, 10, 10, 0.9], [0.5, 0.5, 10.5, 10.5, 0.8]]
    cand = ref[:1].copy()
    assert reproduced_share({"a": ref}, {"a": cand}) == pytest.approx(0.5)
    assert reproduced_share({"a": ref}, {"a": ref}) == 1.0
    assert reproduced_share({"a": ref}, {}) == 0.0


def test_report_warns_only_when_ap_drops_more_than_a_hundredth():
    ap = {"easy": 0.98, "medium": 0.97, "hard": 0.90}
    ok = AccuracyReport(ap, {"easy": 0.975, "medium": 0.965, "hard": 0.895}, 0.97, 10.0, 5.0, (480, 640), 100, "s")
    bad = AccuracyReport(ap, {"easy": 0.98, "medium": 0.97, "hard": 0.88}, 0.9, 10.0, 5.0, (480, 640), 100, "s")
    assert ok.warnings == []
    assert len(bad.warnings) == 1 and "hard" in bad.warnings[0]
    assert any("2.00x" in line for line in ok.lines())


def test_export_command_int8_writes_a_quantised_file(files, tmp_path, capsys):
    from retinaface.checkpoint import save_model
    from retinaface.cli import run_command

    torch.manual_seed(0)
    weights = tmp_path / "m.pth"
    save_model(retinaface.create_model("mobilenet0.25").eval(), weights)
    out = tmp_path / "m.int8.onnx"
    calib = files["images"][0].parent
    code = run_command("export", ["--weights", str(weights), "--format", "onnx", "--output", str(out),
                                  "--size", "96", "128", "--int8", "--calibration", str(calib),
                                  "--calibration-images", "2", "--method", "percentile", "--no-check"])
    assert code == 0 and "INT8 QDQ" in capsys.readouterr().out
    info = quantization_info(out)
    assert info["method"] == "percentile" and info["calibration_count"] == 2
    code = run_command("export", ["--weights", str(weights), "--format", "onnx", "--output", str(tmp_path / "x"),
                                  "--int8", "--calibration", str(tmp_path / "nowhere")])
    assert code == 2 and "nowhere: not a folder" in capsys.readouterr().err


def test_runtime_selection_and_cached_export(tmp_path):
    from retinaface.checkpoint import save_model
    from retinaface.deploy.runtime import OnnxRuntimeModel, cached_onnx_export, resolve_runtime

    assert resolve_runtime("m.onnx") == "onnxruntime" and resolve_runtime("m.pth") == "pytorch"
    assert resolve_runtime("m.pth", "openvino") == "openvino"
    with pytest.raises(ValueError, match="cannot run on PyTorch"):
        resolve_runtime("m.onnx", "pytorch")
    with pytest.raises(ValueError, match="--runtime"):
        resolve_runtime("m.pth", "tensorrt")
    torch.manual_seed(0)
    weights = tmp_path / "m.pth"
    save_model(retinaface.create_model("mobilenet0.25").eval(), weights)
    model = retinaface.load_runtime(weights, "onnxruntime")
    assert isinstance(model, OnnxRuntimeModel) and model.path.parent == tmp_path
    first = model.path.stat().st_mtime_ns
    assert cached_onnx_export(weights).stat().st_mtime_ns == first  # reused, not re-exported
    save_model(retinaface.create_model("mobilenet0.25", num_classes=2).eval(), weights, note="changed")
    assert cached_onnx_export(weights) != model.path  # a changed checkpoint gets its own export
