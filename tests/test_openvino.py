"""OpenVINO runtime: same call contract and detections as the ONNX Runtime path (skipped without openvino)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import retinaface  # noqa: E402
from retinaface.deploy.export import export_onnx  # noqa: E402
from retinaface.deploy.openvino_backend import OpenVinoError, OpenVinoModel  # noqa: E402
from retinaface.deploy.runtime import OnnxRuntimeModel  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ov")
    torch.manual_seed(0)
    model = retinaface.create_model("mobilenet0.25").eval()
    static, dynamic = tmp / "static.onnx", tmp / "dynamic.onnx"
    export_onnx(model, static, size=(96, 128))
    export_onnx(model, dynamic, dynamic=True, size=(96, 128))
    return dict(model=model, static=static, dynamic=dynamic, tmp=tmp)


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), rng.integers(0, 255, (70, 150, 3), dtype=np.uint8)]


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_detections_match_onnx_runtime(exported, kind):
    path = exported[kind]
    ov_model, ort_model = OpenVinoModel(path, threads=1), OnnxRuntimeModel(path)
    assert ov_model.config == ort_model.config and ov_model.fixed_input == ort_model.fixed_input
    # the untrained model's scores are near-ties, which float rounding reorders and NMS then
    # resolves differently; without NMS (IoU 1.0) the candidate sets must agree row for row
    settings = dict(conf_threshold=0.5, nms_threshold=1.0, post_nms_topk=None)
    ov_det, ort_det = retinaface.Detector(ov_model, **settings), retinaface.Detector(ort_model, **settings)
    for image in _images():
        a, b = ov_det.detect(image), ort_det.detect(image)
        assert len(a) > 10
        for row in a[a[:, 4] > 0.5 + 1e-4]:  # clear of the threshold
            assert np.abs(b - row).max(axis=1).min() < 2e-2
        assert abs(len(a) - len(b)) <= max(2, len(b) // 50)


def test_raw_outputs_and_shape_contract(exported):
    model = OpenVinoModel(exported["dynamic"])
    batch = torch.randn(2, 3, 64, 96) * 50
    loc, conf, landms = model(batch)
    with torch.no_grad():
        want = exported["model"](batch)
    for have, ref in zip((loc, conf, landms), want):
        assert have.shape == ref.shape and have.dtype == torch.float32
        assert (have - ref).abs().max() < 1e-3
    model(torch.randn(1, 3, 96, 64))  # a second shape compiles a second network
    assert len(model._compiled) == 2
    static = OpenVinoModel(exported["static"])
    with pytest.raises(ValueError, match="fixed input shape"):
        static(torch.randn(1, 3, 64, 64))


def test_unusable_files_are_one_line_errors(exported, tmp_path):
    with pytest.raises(OpenVinoError, match="not found"):
        OpenVinoModel(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(OpenVinoError, match="junk.onnx"):
        OpenVinoModel(junk)
    assert "mobilenet0.25" in repr(OpenVinoModel(exported["static"]))


def test_detect_command_on_openvino_matches_onnx_runtime(tmp_path):
    import json

    import cv2

    from retinaface.checkpoint import save_model
    from retinaface.cli import run_command

    torch.manual_seed(0)
    weights = tmp_path / "m.pth"
    save_model(retinaface.create_model("mobilenet0.25").eval(), weights)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), _images()[0])
    records = {}
    for runtime in ("onnxruntime", "openvino"):
        out = tmp_path / runtime
        assert run_command("detect", [str(image), "--weights", str(weights), "--runtime", runtime,
                                      "--output", str(out), "--conf", "0.5", "--nms", "1.0"]) == 0
        records[runtime] = json.loads((out / "detections.jsonl").read_text().splitlines()[0])
    # one cached export beside the checkpoint served both runtimes
    assert len(list(tmp_path.glob(".m.*.onnx"))) == 1
    a, b = (np.array([f["score"] for f in records[r]["faces"]]) for r in ("openvino", "onnxruntime"))
    assert len(a) > 0 and abs(len(a) - len(b)) <= 2
    np.testing.assert_allclose(np.sort(a)[-10:], np.sort(b)[-10:], atol=1e-4)
    assert run_command("detect", [str(image), "--weights", str(weights), "--runtime", "pytorch",
                                  "--tile", "64", "--overlap", "64", "--output", str(tmp_path / "x")]) == 2


def test_detector_from_checkpoint_runs_a_pth_on_every_backend(exported):
    # a .pth asked for an external runtime is exported once into a cache beside it; all three
    # backends give the same candidates (no NMS, as above, since near-ties reorder under rounding)
    from retinaface import Detector, save_model

    path = exported["tmp"] / "model.pth"
    save_model(exported["model"], path)
    settings = dict(conf_threshold=0.5, nms_threshold=1.0, post_nms_topk=None)
    image = _images(3)[0]
    results = {b: Detector.from_checkpoint(path, backend=b, **settings).detect(image)
               for b in ("torch", "onnxruntime", "openvino")}
    assert len(results["torch"]) > 0
    for backend in ("onnxruntime", "openvino"):
        got, want = results[backend], results["torch"]
        assert got.shape == want.shape, backend
        order_g, order_w = np.lexsort(got[:, :4].T), np.lexsort(want[:, :4].T)
        np.testing.assert_allclose(got[order_g], want[order_w], atol=1e-3)
    assert len(list(exported["tmp"].glob(".model.*.onnx"))) == 1
    with pytest.raises(ValueError, match="backend='tensorrt'"):
        Detector.from_checkpoint(path, backend="tensorrt")


def test_one_detector_shared_by_threads_gives_each_thread_its_own_answer(exported):
    """The README promises a Detector may be shared by threads: on OpenVINO too (one infer request)."""
    from concurrent.futures import ThreadPoolExecutor

    detector = retinaface.Detector(OpenVinoModel(exported["dynamic"], threads=1), conf_threshold=0.3)
    images = _images(1) * 4
    expected = [detector.detect(image) for image in images]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(detector.detect, images))
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_uint8_input_path_gives_the_float_path_outputs(exported):
    """The conversion and mean subtraction compiled into OpenVINO equal the Detector's float batch."""
    from retinaface.inference.transform import InferenceTransform

    model = OpenVinoModel(exported["dynamic"], threads=1)
    transform = InferenceTransform()
    images = _images(2)  # two sizes: the smaller one is padded
    pixels = transform.uint8_batch(images)
    assert pixels.dtype == np.uint8 and pixels.shape == (2, 96, 150, 3)
    assert (pixels[1, 70:, :, :] == np.array([104, 117, 123], np.uint8)).all()  # mean-colour padding
    for got, want in zip(model.forward_uint8(pixels, transform.mean), model(transform.batch(images))):
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_detector_takes_the_uint8_path_only_where_it_is_exact(exported, monkeypatch):
    model = OpenVinoModel(exported["dynamic"], threads=1)
    calls = []
    real = model.forward_uint8
    monkeypatch.setattr(model, "forward_uint8", lambda *a: (calls.append(a[0].shape), real(*a))[1])
    image = _images(3)[0]
    # near-tied scores of the untrained model: compare without NMS, row by row (as above)
    settings = dict(conf_threshold=0.5, nms_threshold=1.0, post_nms_topk=None)
    fast = retinaface.Detector(model, **settings)
    reference = retinaface.Detector(OnnxRuntimeModel(exported["dynamic"]), **settings)
    a, b = fast.detect(image), reference.detect(image)
    assert calls == [(1, 96, 128, 3)]
    assert len(a) > 10 and abs(len(a) - len(b)) <= max(2, len(b) // 50)
    for row in a[a[:, 4] > 0.5 + 1e-4]:
        assert np.abs(b - row).max(axis=1).min() < 2e-2
    resized = retinaface.Detector(model, conf_threshold=0.3, target_size=64)  # resizing is float work
    resized.detect(image)
    assert len(calls) == 1
    from retinaface.inference.transform import InferenceTransform

    assert InferenceTransform(mean=(104.5, 117.0, 123.0)).uint8_batch([image]) is None  # padding could not carry it
