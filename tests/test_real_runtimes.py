"""Exported files of the published weights detect what PyTorch detects on real WIDER photos, and
INT8 (calibrated on real train photos) reproduces most of it (skipped without ``../shared/real``)."""
from __future__ import annotations


import numpy as np
import pytest
from conftest import REAL  # ../shared/real, or $RETINAFACE_REAL_DATA

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

WEIGHTS = REAL / "weights" / "mobilenet0.25_Final.pth"
VAL = REAL / "widerface" / "val" / "images"
TRAIN = REAL / "widerface" / "train" / "images"
pytestmark = pytest.mark.skipif(not VAL.is_dir() or not WEIGHTS.is_file(),
                                reason=f"{REAL} (real WIDER photos and weights) is absent")

# float runtimes: every PyTorch face (score >= 0.5) found again with IoU >= 0.99 and its score
# within 1e-3 (float32 rounding of a different kernel order moves boxes by ~1e-4 px and scores by
# ~1e-6; the margins leave two orders of magnitude)
FLOAT_IOU, FLOAT_SCORE_TOL = 0.99, 1e-3
# INT8: share of float faces reproduced at IoU >= 0.9. Over the 264 val photos the default INT8
# file (64 calibration photos) reproduces 94 % (docs/real.md); on these 8 photos with 8 calibration
# photos the share varies with the photos drawn; 0.8 fails a quantisation that damages the
# network (the earlier default reproduced 53 % over val)
INT8_MIN_SHARE = 0.8


def _photos(count: int = 8):
    import cv2

    paths = sorted(VAL.rglob("*.jpg"))[::33][:count]
    return {p.name: cv2.imread(str(p)) for p in paths}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import retinaface
    from retinaface.deploy.runtime import cached_onnx_export

    tmp = tmp_path_factory.mktemp("real")
    model = retinaface.load_model(WEIGHTS)
    photos = _photos()
    reference = {k: retinaface.Detector(model, conf_threshold=0.3).detect(img) for k, img in photos.items()}
    return dict(model=model, float=cached_onnx_export(WEIGHTS, cache_dir=tmp), tmp=tmp, photos=photos,
                reference=reference)


def _matched(reference: np.ndarray, candidate: np.ndarray):
    """(IoU, |score difference|) of each reference row (score >= 0.5) against its best candidate."""
    from torchvision.ops import box_iou

    ref = reference[reference[:, 4] >= 0.5]
    if not len(ref):
        return np.zeros(0), np.zeros(0)
    if not len(candidate):
        return np.zeros(len(ref)), np.ones(len(ref))
    iou = box_iou(torch.from_numpy(ref[:, :4]), torch.from_numpy(candidate[:, :4])).numpy()
    best = iou.argmax(axis=1)
    return iou.max(axis=1), np.abs(ref[:, 4] - candidate[best, 4])


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_float_runtimes_reproduce_pytorch_on_real_photos(files, runtime):
    import retinaface
    from retinaface.deploy.runtime import load_runtime

    if runtime == "openvino":
        pytest.importorskip("openvino")
    detector = retinaface.Detector(load_runtime(files["float"], runtime, threads=2), conf_threshold=0.3)
    faces = 0
    for name, image in files["photos"].items():
        ious, score_diffs = _matched(files["reference"][name], detector.detect(image))
        faces += len(ious)
        assert (ious >= FLOAT_IOU).all(), (runtime, name, ious.min())
        assert (score_diffs <= FLOAT_SCORE_TOL).all(), (runtime, name, score_diffs.max())
    assert faces >= 20  # the photos hold real faces: the comparison compared something


def test_int8_reproduces_most_float_detections_on_real_photos(files):
    import retinaface
    from retinaface.deploy.quantize import calibration_images, quantization_info, quantize_onnx, reproduced_share
    from retinaface.deploy.runtime import load_runtime

    images, source = calibration_images(TRAIN, 8)
    int8 = files["tmp"] / "int8.onnx"
    quantize_onnx(files["float"], int8, retinaface.Detector(load_runtime(files["float"])), images,
                  calibration_source=source)
    info = quantization_info(int8)
    assert info["equalized_pairs"] > 0 and any("stage1" in n for n in info["float_nodes"])
    detector = retinaface.Detector(load_runtime(int8, threads=2), conf_threshold=0.3)
    candidate = {k: detector.detect(img) for k, img in files["photos"].items()}
    share = reproduced_share(files["reference"], candidate, iou=0.9)
    assert share >= INT8_MIN_SHARE, share


def test_equalization_keeps_the_float_network(files):
    """The channel factors moved between a convolution and the depthwise one after it change no
    output beyond float rounding (real photos as inputs, real weights)."""
    import onnx
    import onnxruntime as ort
    import retinaface
    from retinaface.deploy.quantize import DetectorCalibrationReader, equalizable_pairs, equalize_activations, network_input

    proto = onnx.load(str(files["float"]))
    detector = retinaface.Detector(files["model"])
    photos = sorted(VAL.rglob("*.jpg"))[:2]
    reader = DetectorCalibrationReader(detector, photos, proto.graph.input[0].name)
    before = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert len(equalizable_pairs(proto)) >= 10
    assert equalize_activations(proto, reader) == len(equalizable_pairs(proto))
    after = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    import cv2

    feed = {proto.graph.input[0].name: network_input(detector, cv2.imread(str(photos[0])))}
    for old, new in zip(before.run(None, feed), after.run(None, feed)):
        assert np.allclose(old, new, rtol=1e-3, atol=1e-4), np.abs(old - new).max()
