"""INT8 post-training quantisation of exported RetinaFace ONNX files, and what it costs in accuracy.

Owns:

* :class:`DetectorCalibrationReader`: calibration batches made by the Detector's own
  pre-processing (its transform is called, not re-implemented), so the activation ranges are the
  ones inference will see;
* :func:`calibration_images`: images from a folder, or the synthetic training split;
* :func:`quantize_onnx`: ONNX Runtime static quantisation in QDQ format (per-channel int8 weights,
  uint8 activations), with a choice of which op types / nodes stay float, and metadata recording
  the method, the calibration images and what was kept float;
* :func:`accuracy_report`: easy / medium / hard AP of the float and the INT8 file on a val split,
  the share of float detections the INT8 model reproduces at IoU >= 0.9, both latencies, and a
  warning when AP drops by more than 0.01;
* :func:`export_int8`: a loaded model to an INT8 file in one call (float export to a temporary
  file, quantisation, optionally the accuracy report), what ``retinaface export --int8`` runs.

Which layers stay float, and why (measured on real WIDER val photos, docs/real.md): the output
tail (:data:`DEFAULT_FLOAT_OP_TYPES`: Transpose, Reshape, Concat, Softmax) moves bytes and does no
arithmetic worth quantising, and an int8 softmax would clip the scores the threshold compares
against; the layers finer than stride 8 (:data:`HIGH_RESOLUTION_FLOAT`, found by shape inference:
the stem and the first depthwise blocks of mobilenet0.25) because ONNX Runtime quantises each
activation with one scale per tensor and these few-channel, high-resolution activations lost
0.04 AP on real photos that way, whatever the calibration method. Before quantising, the channels
that feed each depthwise convolution are equalized (:func:`equalize_activations`, the same float network
to rounding), which halves what is left of the loss.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

from ..conventions import DET_SCORE, TRAIN_IMAGES, VAL_GROUND_TRUTH, first_line
from ..data.dataset import WiderFaceValDataset
from ..data.synthetic import generate_synthetic_widerface
from ..inference.detector import Detector
from ..evaluation import evaluate, open_ground_truth, to_wider_rows
from ..evaluation.predict import predict_widerface, widerface_detector
from .export.metadata import DEFAULT_SIZE, MIN_OPSET, write_onnx_file
from .export.writers import export_onnx
from .runtime import load_runtime
from ..runtime_interface import RuntimeModel

PathLike = Union[str, Path]

QUANT_METHODS: Tuple[str, ...] = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "minmax"
DEFAULT_CALIBRATION_IMAGES = 64
# the output tail: layout ops and the softmax whose scores the threshold reads
DEFAULT_FLOAT_OP_TYPES: Tuple[str, ...] = ("Transpose", "Reshape", "Concat", "Softmax")
KEEP_FIRST_CONV_FLOAT = True
KEEP_HEADS_FLOAT = False
DEFAULT_PERCENTILE = 99.999
CALIBRATION_CHUNK = 8
EQUALIZE = True
HIGH_RESOLUTION_FLOAT = True
FLOAT_BELOW_STRIDE = 8
MAX_EQUALIZE_SCALE = 1000.0
# ops between the head convolutions and the graph outputs (shape arithmetic included)
TAIL_OP_TYPES: Tuple[str, ...] = ("Transpose", "Reshape", "Concat", "Softmax", "Shape", "Gather", "Unsqueeze",
                                  "Flatten", "Squeeze")
AP_DROP_WARNING = 0.01
REPRODUCED_IOU = 0.9
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
QUANT_METADATA_KEY = "quantization"


class QuantizationError(RuntimeError):
    """A quantisation could not be made or checked; the message is one line naming the file or option."""


# -- calibration -----------------------------------------------------------------------------------
def calibration_images(source: PathLike, count: int = DEFAULT_CALIBRATION_IMAGES,
                       seed: int = 0) -> Tuple[List[Path], str]:
    """Up to ``count`` image paths for calibration and a description of where they came from.

    ``source`` is a folder (searched recursively for images; a random ``count`` of them, fixed by
    ``seed``, when there are more) or ``"synthetic"``: the training split of the built-in synthetic
    set (generated under ``data/synthetic`` if missing) — the training split, so that the val split
    the accuracy report uses was never seen by calibration.
    """
    if count < 1:
        raise QuantizationError(f"--calibration-images {count}: need at least 1 image")
    if str(source) == "synthetic":
        root = Path("data/synthetic")
        generate_synthetic_widerface(root)
        folder = root / TRAIN_IMAGES
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise QuantizationError(f"--calibration {folder}: not a folder (give a folder of images or 'synthetic')")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise QuantizationError(f"--calibration {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    if len(paths) > count:
        rng = np.random.default_rng(seed)
        paths = [paths[i] for i in sorted(rng.choice(len(paths), size=count, replace=False))]
    return paths, f"{source}: {len(paths)} images"


def network_input(detector: Any, image: np.ndarray) -> np.ndarray:
    """``(1, 3, H, W)`` float32 C-contiguous network input of one BGR uint8 ``image``, made by
    ``detector``'s own transform (resize policy, mean subtraction), so calibration sees what
    inference feeds."""
    transform = getattr(detector, "transform", None)
    if callable(transform):
        batch, _ = transform([image])
    else:  # a Detector without a transform object exposes the two steps
        batch = detector.to_batch([detector.prepare(image)[0]])
    return batch.detach().to("cpu").contiguous().numpy()


def _fixed_hw(input_shape: Sequence[Any]) -> Optional[Tuple[int, int]]:
    """``(H, W)`` of a static ONNX input shape, ``None`` when they are symbolic."""
    h, w = input_shape[2], input_shape[3]
    return (int(h), int(w)) if isinstance(h, int) and isinstance(w, int) else None


class DetectorCalibrationReader:
    """Feeds calibration images, pre-processed by a Detector, to ONNX Runtime's calibrator.

    ``fixed_size`` ``(H, W)``: images are first resized to it (a static export accepts only that
    size); otherwise they keep their size (or the detector's resize policy). Images that cannot be
    read are refused with their path. Implements ONNX Runtime's ``CalibrationDataReader`` protocol
    (``get_next`` returning a feed dict, then ``None``; ``rewind``).
    """

    def __init__(self, detector: Any, images: Sequence[PathLike], input_name: str = "input",
                 fixed_size: Optional[Tuple[int, int]] = None) -> None:
        self.detector = detector
        self.images = [Path(p) for p in images]
        self.input_name = input_name
        self.fixed_size = fixed_size
        self._next = 0

        self._end = len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Serve images ``start_index`` .. ``end_index - 1`` only: ONNX Runtime calibrates in such
        chunks (``CalibStridedMinMax``) so that the activations of one chunk, not of all images,
        are held in memory at a time."""
        self._next, self._end = int(start_index), min(int(end_index), len(self.images))

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self._next >= self._end:
            return None
        path = self.images[self._next]
        self._next += 1
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise QuantizationError(f"{path}: cannot read this calibration image")
        # a detector over a fixed-size file letterboxes by itself; otherwise stretch to the size
        own_fixed = getattr(getattr(self.detector, "transform", None), "fixed_size", None)
        if self.fixed_size is not None and own_fixed is None and image.shape[:2] != self.fixed_size:
            image = cv2.resize(image, (self.fixed_size[1], self.fixed_size[0]), interpolation=cv2.INTER_LINEAR)
        return {self.input_name: network_input(self.detector, image)}

    def rewind(self) -> None:
        self._next, self._end = 0, len(self.images)


class ArrayCalibrationReader:
    """Feeds network inputs prepared by the caller (``(N, C, H, W)`` float32, one sample per call)
    to ONNX Runtime's calibrator: for networks whose pre-processing is not the Detector's (a landmark
    network's face crops). The same ``CalibrationDataReader`` protocol as
    :class:`DetectorCalibrationReader`, ``set_range`` included."""

    def __init__(self, inputs: np.ndarray, input_name: str = "input") -> None:
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        if inputs.ndim != 4 or not len(inputs):
            raise QuantizationError(f"calibration inputs must be a non-empty (N, C, H, W) array, got {inputs.shape}")
        self.inputs = inputs
        self.input_name = input_name
        self._next, self._end = 0, len(inputs)

    def __len__(self) -> int:
        return len(self.inputs)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = int(start_index), min(int(end_index), len(self.inputs))

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self._next >= self._end:
            return None
        self._next += 1
        return {self.input_name: self.inputs[self._next - 1:self._next]}

    def rewind(self) -> None:
        self._next, self._end = 0, len(self.inputs)


# -- quantisation ----------------------------------------------------------------------------------
@dataclasses.dataclass
class QuantizationResult:
    """What :func:`quantize_onnx` wrote: the path, its metadata and the nodes it kept float."""

    path: Path
    metadata: Dict[str, str]
    float_nodes: List[str]
    quantized_nodes: int


def _calibration_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    if method not in table:
        raise QuantizationError(f"--method {method!r}: choose one of {', '.join(QUANT_METHODS)}")
    return table[method]


def first_conv_nodes(model_proto) -> List[str]:
    """Names of the Conv nodes fed directly by a graph input (the stem convolution)."""
    inputs = {i.name for i in model_proto.graph.input}
    return [n.name for n in model_proto.graph.node if n.op_type == "Conv" and n.input and n.input[0] in inputs]


def depthwise_conv_nodes(model_proto) -> List[str]:
    """Names of grouped (depthwise) Conv nodes."""
    return [n.name for n in model_proto.graph.node if n.op_type == "Conv"
            and any(a.name == "group" and a.i > 1 for a in n.attribute)]


def head_conv_nodes(model_proto, tail_op_types: Sequence[str] = TAIL_OP_TYPES) -> List[str]:
    """Names of the Conv nodes that produce the graph outputs (the class, box and landmark heads):
    found by walking back from each output through layout ops (``tail_op_types``) to the first
    Conv on every path."""
    producer = {out: node for node in model_proto.graph.node for out in node.output}
    heads: List[str] = []
    pending = [o.name for o in model_proto.graph.output]
    seen = set()
    while pending:
        tensor = pending.pop()
        node = producer.get(tensor)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv":
            heads.append(node.name)
        elif node.op_type in tail_op_types:
            pending.extend(node.input)
    return sorted(heads)


def high_resolution_nodes(model_proto, below_stride: int, probe_size: int = 640) -> List[str]:
    """Names of the nodes whose output is finer than ``below_stride`` (output height above
    input height / ``below_stride``), found by ONNX shape inference at a ``probe_size`` square
    input. In a detector these are the early, high-resolution layers."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model_proto)
    dims = probe.graph.input[0].type.tensor_type.shape.dim
    for axis, value in ((0, 1), (2, probe_size), (3, probe_size)):
        dims[axis].ClearField("dim_param")
        dims[axis].dim_value = value
    del probe.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(probe)
    heights = {}
    for info in inferred.graph.value_info:
        shape = info.type.tensor_type.shape.dim
        if len(shape) == 4 and shape[2].HasField("dim_value"):
            heights[info.name] = shape[2].dim_value
    limit = probe_size / below_stride
    return [n.name for n in model_proto.graph.node if n.output and heights.get(n.output[0], 0) > limit]


def _initializers(model_proto) -> Dict[str, Any]:
    return {init.name: init for init in model_proto.graph.initializer}


def equalizable_pairs(model_proto) -> List[Tuple[Any, Any, Any]]:
    """``(conv, activation, depthwise conv)`` node triples where a convolution's output goes only
    through a ReLU / LeakyReLU into a depthwise convolution, with constant weights on both sides.

    Such a pair can move a positive factor per channel from the first convolution's output to the
    depthwise one's input (``leaky(s * x) = s * leaky(x)`` for ``s > 0``) without changing what the
    float network computes."""
    consumers: Dict[str, List[Any]] = {}
    for node in model_proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in model_proto.graph.output}
    weights = _initializers(model_proto)
    pairs = []
    for conv in model_proto.graph.node:
        if conv.op_type != "Conv" or len(conv.input) < 2 or conv.input[1] not in weights:
            continue
        after = consumers.get(conv.output[0], [])
        if len(after) != 1 or after[0].op_type not in ("Relu", "LeakyRelu") or conv.output[0] in graph_outputs:
            continue
        act = after[0]
        nxt = consumers.get(act.output[0], [])
        if len(nxt) != 1 or nxt[0].op_type != "Conv" or act.output[0] in graph_outputs:
            continue
        dw = nxt[0]
        channels = weights[conv.input[1]].dims[0]
        groups = next((a.i for a in dw.attribute if a.name == "group"), 1)
        if groups != channels or dw.input[0] != act.output[0] or dw.input[1] not in weights \
                or weights[dw.input[1]].dims[:2] != [channels, 1]:
            continue
        pairs.append((conv, act, dw))
    return pairs


def equalize_activations(model_proto, reader: "DetectorCalibrationReader",
                         max_scale: float = MAX_EQUALIZE_SCALE) -> int:
    """Give every channel feeding a depthwise convolution the range of the widest one, in place.

    ONNX Runtime quantises each activation tensor with one scale (per tensor), so a channel whose
    values stay within a hundredth of its neighbours' range is rounded to a few levels. In
    Pytorch_Retinaface's mobilenet0.25 two stem channels stay below -0.01 on real photos while
    another reaches 5.4 (docs/real.md). For each pair of
    :func:`equalizable_pairs`, channel ``c`` of the first convolution (weights and bias) is
    multiplied by ``s_c = max_k r_k / r_c`` (``r``: the channel's largest magnitude over the
    ``reader``'s images, ``s_c`` at most ``max_scale``) and the depthwise weights of that channel
    divided by it. The float network computes the same outputs (to rounding; tested on real photos
    in tests/test_real_runtimes.py). Both convolutions are quantised per output channel, so each
    factor moves its channel's weight scale with it and, in exact arithmetic, leaves the int8 weight
    values as they were (not checked by a test). Returns the number of pairs equalized.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    pairs = equalizable_pairs(model_proto)
    if not pairs:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model_proto)
    known = {o.name for o in probe.graph.output}
    for _, act, _ in pairs:
        if act.output[0] not in known:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(act.output[0], onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [act.output[0] for _, act, _ in pairs]
    peaks = {name: None for name in names}
    reader.rewind()
    while True:
        feed = reader.get_next()
        if feed is None:
            break
        for name, value in zip(names, session.run(names, feed)):
            peak = np.abs(value).max(axis=(0, 2, 3))
            peaks[name] = peak if peaks[name] is None else np.maximum(peaks[name], peak)
    reader.rewind()
    weights = _initializers(model_proto)

    def scaled(name: str, factor: np.ndarray) -> None:
        init = weights[name]
        array = numpy_helper.to_array(init).astype(np.float32)
        array = array * factor.reshape((-1,) + (1,) * (array.ndim - 1)).astype(np.float32)
        init.CopyFrom(numpy_helper.from_array(array, name))

    used = set()
    for conv, act, dw in pairs:
        peak = peaks[act.output[0]].astype(np.float64)
        alive = peak > 0
        if not alive.any():
            continue
        scale = np.ones_like(peak)
        scale[alive] = np.minimum(peak[alive].max() / peak[alive], max_scale)
        # an initializer shared with another node would change that node too
        shared = {conv.input[1], dw.input[1]} | ({conv.input[2]} if len(conv.input) > 2 else set())
        if shared & used:
            continue
        used |= shared
        scaled(conv.input[1], scale)
        if len(conv.input) > 2 and conv.input[2]:
            scaled(conv.input[2], scale)
        scaled(dw.input[1], 1.0 / scale)
    return len(pairs)


def quantize_onnx(float_path: PathLike, output: PathLike, detector: Any, images: Sequence[PathLike],
                  method: str = DEFAULT_METHOD, calibration_source: str = "",
                  float_op_types: Sequence[str] = DEFAULT_FLOAT_OP_TYPES,
                  keep_first_conv_float: bool = KEEP_FIRST_CONV_FLOAT,
                  float_nodes: Sequence[str] = (), keep_depthwise_float: bool = False,
                  keep_heads_float: bool = KEEP_HEADS_FLOAT, symmetric_activations: bool = False,
                  percentile: float = DEFAULT_PERCENTILE, calibration_chunk: int = CALIBRATION_CHUNK,
                  equalize: bool = EQUALIZE, high_resolution_float: bool = HIGH_RESOLUTION_FLOAT,
                  per_channel: bool = True,
                  overwrite: bool = False, reader: Optional[Any] = None) -> QuantizationResult:
    """Write the INT8 (QDQ) version of the float ONNX file ``float_path`` to ``output``, atomically.

    ``detector`` is a :class:`retinaface.Detector` (over the float file or the PyTorch model: only
    its pre-processing is used) and ``images`` the calibration image paths. ``method`` is the
    activation-range calibration (``minmax``, ``entropy`` or ``percentile`` 99.999). Op types in
    ``float_op_types`` and the nodes in ``float_nodes`` (plus the stem conv and, if asked, the
    depthwise convs) stay float. The float file's metadata is kept and ``quantization`` added (a
    JSON object: method, images, per-channel, types, what stayed float). ``output`` must not exist
    unless ``overwrite``.

    ``reader`` (e.g. an :class:`ArrayCalibrationReader`) replaces the Detector's calibration: it
    feeds the inputs, ``detector`` is not used and ``images`` only names them in the metadata.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_path, output = Path(float_path), Path(output)
    if not float_path.is_file():
        raise QuantizationError(f"{float_path}: ONNX file not found")
    if output.exists() and not overwrite:
        raise QuantizationError(f"{output}: already exists; choose another --output or delete it")
    if output.resolve() == float_path.resolve():
        raise QuantizationError(f"{output}: the INT8 file must not replace the float one")
    calibrate = _calibration_method(method)
    if not images or (reader is not None and not len(reader)):
        raise QuantizationError("no calibration images")
    try:
        float_proto = onnx.load(str(float_path))
    except Exception as exc:
        raise QuantizationError(f"{float_path}: not a readable ONNX file ({first_line(exc)})") from None
    metadata = {p.key: p.value for p in float_proto.metadata_props}
    if QUANT_METADATA_KEY in metadata:
        raise QuantizationError(f"{float_path}: already quantised ({metadata[QUANT_METADATA_KEY]})")
    input_name = float_proto.graph.input[0].name
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in float_proto.graph.input[0].type.tensor_type.shape.dim]
    fixed = _fixed_hw(dims)

    with tempfile.TemporaryDirectory(prefix="retinaface-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quantized = Path(tmp) / "int8.onnx"
        # constant folding and shape inference first, as ONNX Runtime recommends; the symbolic
        # pass is skipped (the exporter's shapes are already declared)
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        pre_proto = onnx.load(str(pre))
        keep = list(float_nodes)
        if keep_first_conv_float:
            keep += first_conv_nodes(pre_proto)
        if keep_depthwise_float:
            keep += depthwise_conv_nodes(pre_proto)
        if keep_heads_float:
            keep += head_conv_nodes(pre_proto)
        if high_resolution_float:
            # a file of one input size (a landmark network's crop) is probed at that size
            keep += high_resolution_nodes(pre_proto, FLOAT_BELOW_STRIDE, *(fixed[:1] if fixed else ()))
        op_types = sorted({n.op_type for n in pre_proto.graph.node} - set(float_op_types))
        if reader is None:
            reader = DetectorCalibrationReader(detector, images, input_name, fixed)
        equalized = 0
        if equalize:
            equalized = equalize_activations(pre_proto, reader)
            onnx.save(pre_proto, str(pre))
        extra: Dict[str, Any] = {"CalibMovingAverage": False}
        # calibrate in chunks: ONNX Runtime keeps every activation of the images it is given
        # until it reduces them (histograms or min / max); at original WIDER size that is tens of
        # MB per image. The chunk must divide the image count.
        chunk = max(d for d in range(1, min(calibration_chunk, len(reader)) + 1) if len(reader) % d == 0)
        extra["CalibStridedMinMax"] = chunk
        if method == "percentile":
            extra["CalibPercentile"] = float(percentile)
        if symmetric_activations:
            extra["ActivationSymmetric"] = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(pre), str(quantized), reader, quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, op_types_to_quantize=op_types,
                            nodes_to_exclude=sorted(set(keep)), calibrate_method=calibrate,
                            extra_options=extra)
        proto = onnx.load(str(quantized))
    info = {
        "method": method,
        "format": "QDQ",
        "activations": "uint8 per-tensor",
        "weights": "int8 per-channel" if per_channel else "int8 per-tensor",
        "calibration": calibration_source or f"{len(images)} images",
        "calibration_images": [str(p) for p in images][:200],
        "calibration_count": len(reader),
        "float_op_types": list(float_op_types),
        "float_nodes": sorted(set(keep)),
        "symmetric_activations": bool(symmetric_activations),
        "equalized_pairs": equalized,
        **({"percentile": float(percentile)} if method == "percentile" else {}),
        "source": float_path.name,
    }
    metadata[QUANT_METADATA_KEY] = json.dumps(info, sort_keys=True)
    metadata["precision"] = "int8"
    write_onnx_file(proto, metadata, output)
    count = sum(1 for n in proto.graph.node if n.op_type == "QuantizeLinear")
    return QuantizationResult(output, metadata, sorted(set(keep)), count)


def quantization_info(path: PathLike) -> Optional[Dict[str, Any]]:
    """The ``quantization`` metadata of an ONNX file (``None`` for a float file)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    return json.loads(meta[QUANT_METADATA_KEY]) if QUANT_METADATA_KEY in meta else None


# -- accuracy --------------------------------------------------------------------------------------
def reproduced_share(reference: Dict[Any, np.ndarray], candidate: Dict[Any, np.ndarray],
                     score_threshold: float = 0.5, iou: float = REPRODUCED_IOU) -> float:
    """Share of ``reference`` detections (score >= ``score_threshold``; ``(N, 15)`` rows per image
    key) that ``candidate`` reproduces: a candidate box of score >= ``score_threshold`` / 2 with IoU
    >= ``iou``, each candidate used once (greedy in reference score order). 1.0 when the reference
    has no detection."""
    total = matched = 0
    for key, ref in reference.items():
        ref = ref[ref[:, DET_SCORE] >= score_threshold]
        total += len(ref)
        cand = candidate.get(key)
        if not len(ref) or cand is None or not len(cand):
            continue
        # a borderline face may sit just under the threshold in the other model
        cand = cand[cand[:, DET_SCORE] >= score_threshold / 2]
        if not len(cand):
            continue
        overlaps = box_iou(torch.from_numpy(ref[:, :4].copy()), torch.from_numpy(cand[:, :4].copy())).numpy()
        used = np.zeros(len(cand), dtype=bool)
        for row in np.argsort(-ref[:, DET_SCORE], kind="stable"):
            best = np.where(~used, overlaps[row], -1.0)
            j = int(np.argmax(best))
            if best[j] >= iou:
                used[j] = True
                matched += 1
    return matched / total if total else 1.0


def median_latency_ms(functions: Dict[str, Callable[[], Any]], repeats: int = 20,
                      rounds: int = 4) -> Dict[str, float]:
    """Median wall time (ms) of each no-argument function over ``repeats`` timed calls.

    The calls are split into ``rounds`` blocks rotating between the functions, each block opening
    with an untimed call: blocks, because ONNX Runtime's and OpenMP's threads spin for a while after
    a call and would slow whichever function ran next; rotation, so that load from other processes
    on a shared machine falls on all of them alike.
    """
    times: Dict[str, List[float]] = {name: [] for name in functions}
    rounds = max(1, min(rounds, repeats))
    per_block = [repeats // rounds + (1 if i < repeats % rounds else 0) for i in range(rounds)]
    for block in per_block:
        for name, fn in functions.items():
            fn()
            for _ in range(block):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) * 1000.0 for name, t in times.items()}


@dataclasses.dataclass
class AccuracyReport:
    """Float vs INT8 on one val split: AP per setting, reproduced share, latencies (ms)."""

    float_ap: Dict[str, float]
    int8_ap: Dict[str, float]
    reproduced: float
    float_ms: float
    int8_ms: float
    latency_size: Tuple[int, int]
    images: int
    data_root: str

    @property
    def ap_drop(self) -> Dict[str, float]:
        return {k: self.float_ap[k] - self.int8_ap[k] for k in self.float_ap}

    @property
    def warnings(self) -> List[str]:
        return [f"INT8 AP {k} drops by {d:.4f} (> {AP_DROP_WARNING}): try --method entropy or "
                f"percentile, more --calibration-images, or keep more layers float"
                for k, d in self.ap_drop.items() if d > AP_DROP_WARNING]

    def lines(self) -> List[str]:
        h, w = self.latency_size
        out = [f"accuracy on {self.data_root} ({self.images} val images):",
               "  model  easy    medium  hard    latency @{}x{}".format(w, h),
               "  float  {easy:.4f}  {medium:.4f}  {hard:.4f}  {ms:.2f} ms".format(ms=self.float_ms, **self.float_ap),
               "  int8   {easy:.4f}  {medium:.4f}  {hard:.4f}  {ms:.2f} ms".format(ms=self.int8_ms, **self.int8_ap),
               f"  speed-up {self.float_ms / self.int8_ms:.2f}x; INT8 reproduces {100 * self.reproduced:.1f} % of "
               f"the float detections (score >= 0.5) at IoU >= {REPRODUCED_IOU}"]
        return out + [f"  warning: {w}" for w in self.warnings]

    def as_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ap_drop"] = self.ap_drop
        data["warnings"] = self.warnings
        return data


def accuracy_report(float_path: PathLike, int8_path: PathLike, data_root: PathLike = "synthetic",
                    backend: str = "onnxruntime", threads: Optional[int] = None,
                    latency_repeats: int = 20, progress: bool = False) -> AccuracyReport:
    """Easy / medium / hard AP of both files on ``data_root``'s val split (``"synthetic"``: the
    built-in one; any WIDER-layout folder with ``val/ground_truth``), the share of float
    detections INT8 reproduces, and both median latencies on one val image, timed in alternation.

    Both files are run through the same :class:`~retinaface.Detector` pipeline (WIDER protocol:
    threshold 0.02, NMS 0.4, no top-k caps, original image size).
    """
    root = Path("data/synthetic") if str(data_root) == "synthetic" else Path(data_root)
    if str(data_root) == "synthetic":
        generate_synthetic_widerface(root)
    gt_dir = root / VAL_GROUND_TRUTH
    if not gt_dir.is_dir():
        raise QuantizationError(f"{root}: no val/ground_truth folder (a WIDER-layout val split is needed)")
    gt = open_ground_truth(gt_dir)
    dataset = WiderFaceValDataset(root)
    if backend not in ("onnxruntime", "openvino"):
        raise QuantizationError(f"backend {backend!r}: choose onnxruntime or openvino")
    detectors = {name: widerface_detector(load_runtime(path, backend, threads=threads))
                 for name, path in (("float", float_path), ("int8", int8_path))}
    predictions = {name: predict_widerface(det, dataset, batch_size=1, workers=0, progress=progress)
                   for name, det in detectors.items()}
    aps = {name: evaluate({k: to_wider_rows(d) for k, d in preds.items()}, gt).as_dict()
           for name, preds in predictions.items()}
    image = dataset[0][0]
    batch = network_input(detectors["float"], image)
    tensor = torch.from_numpy(batch)
    ms = median_latency_ms({name: (lambda d=det: d.forward(tensor)) for name, det in detectors.items()},
                           repeats=latency_repeats)
    return AccuracyReport(aps["float"], aps["int8"], reproduced_share(predictions["float"], predictions["int8"]),
                          ms["float"], ms["int8"], tuple(batch.shape[-2:]), len(dataset), str(data_root))


@dataclasses.dataclass
class Int8Export:
    """What :func:`export_int8` did: the quantised file, the seconds export and quantisation took,
    and the accuracy report (None when not asked for)."""

    result: QuantizationResult
    seconds: float
    report: Optional[AccuracyReport] = None


def export_int8(model: Any, output: PathLike, images: Sequence[PathLike], calibration_source: str = "",
                method: str = DEFAULT_METHOD, dynamic: bool = False, size: Sequence[int] = DEFAULT_SIZE,
                opset: int = MIN_OPSET, dynamo: bool = False, width: Optional[float] = None,
                threads: Optional[int] = None, accuracy_data: Optional[PathLike] = None,
                report_runtime: str = "onnxruntime",
                written: Optional[Callable[[Int8Export], None]] = None) -> Int8Export:
    """Write ``model`` (eval mode, CPU) as an INT8 ONNX file to ``output``: a float export
    (:func:`retinaface.deploy.export.writers.export_onnx`) to a temporary file, then :func:`quantize_onnx`
    calibrated on ``images`` through the Detector's own pre-processing of the float file
    (``output`` is replaced). With ``accuracy_data`` (a WIDER-layout root or ``"synthetic"``) the
    float and INT8 files are compared on it by :func:`accuracy_report` on ``report_runtime``;
    ``written`` is called once the INT8 file is written, before the (slower) report runs."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="retinaface-export-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        export_onnx(model, float_path, dynamic=dynamic, size=tuple(size), opset=opset, dynamo=dynamo, width=width)
        detector = Detector(load_runtime(float_path, "onnxruntime", threads=threads))
        result = quantize_onnx(float_path, output, detector, images, method=method,
                               calibration_source=calibration_source, overwrite=True)
        done = Int8Export(result, time.perf_counter() - started)
        if written is not None:
            written(done)
        if accuracy_data is not None:
            done.report = accuracy_report(float_path, output, accuracy_data, backend=report_runtime, threads=threads)
    return done


def load_backend_model(path: PathLike, backend: str = "onnxruntime", threads: Optional[int] = None) -> RuntimeModel:
    """Deprecated: ``retinaface.load_runtime(path, backend, threads=...)``, kept for one release."""
    warnings.warn("retinaface.deploy.quantize.load_backend_model is deprecated; use "
                  "retinaface.load_runtime(path, backend, threads=...)", DeprecationWarning, stacklevel=2)
    if backend not in ("onnxruntime", "openvino"):
        raise QuantizationError(f"backend {backend!r}: choose onnxruntime or openvino")
    return load_runtime(path, backend, threads=threads)


__all__ = ["AccuracyReport", "ArrayCalibrationReader", "DEFAULT_FLOAT_OP_TYPES", "DetectorCalibrationReader",
           "Int8Export", "QUANT_METHODS",
           "QuantizationError", "QuantizationResult", "accuracy_report", "calibration_images",
           "depthwise_conv_nodes", "export_int8", "first_conv_nodes", "median_latency_ms",
           "network_input", "quantization_info", "quantize_onnx", "reproduced_share"]
