"""Landmark networks as deployment files: ONNX (float or INT8) that the file alone can be used from,
checked against PyTorch, what ``retinaface export --weights LANDMARK_CHECKPOINT`` runs.

* :func:`export_landmark_onnx`: the network with a dynamic batch (``(B, 3, S, S)`` -> ``points``
  ``(B, K, 2)``) and metadata: the toolkit's provenance keys
  (:func:`~retinaface.deploy.export.metadata.provenance_metadata`), ``task = landmarks``, and the
  landmark facts (network config, ``scheme``, ``num_points``, ``input_size``, ``crop_margin``, the
  input normalisation and the crop policy in words). Written atomically; an existing file is refused.
* :func:`check_landmark_parity`: ONNX Runtime against PyTorch on the same crops, at batch 1 and 3,
  as the detector's :func:`~retinaface.deploy.parity.check_parity` reports it. The tolerance is
  in normalised crop units (:data:`PARITY_ATOL` = 1e-4 of the crop side: 0.011 px at 112 px).
* :func:`export_landmark_int8`: a float export quantised by
  :func:`~retinaface.deploy.quantize.quantize_onnx` with calibration inputs made by the landmark
  crop policy from annotated faces (:func:`calibration_faces`: the synthetic train split by
  default), and :func:`int8_report`: NME of the float and the INT8 file on the same faces and
  both latencies.

Running a written file is :mod:`retinaface.landmarks.runtime`.
"""
from __future__ import annotations

import dataclasses
import io
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..deploy.export.metadata import INPUT_NAME, MIN_OPSET, ExportError, provenance_metadata, write_onnx_file
from ..deploy.parity import ParityCase, ParityReport
from ..deploy.quantize import (DEFAULT_METHOD, ArrayCalibrationReader, QuantizationError, QuantizationResult,
                               median_latency_ms, quantize_onnx)
from ..runtime_interface import INPUT_DTYPE, INPUT_LAYOUT
from .config import SYNTHETIC_DATA, LandmarkConfig
from .evaluate import evaluate_landmarks
from .formats import LandmarkSample
from .models import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from .runtime import LANDMARK_OUTPUTS, LANDMARK_TASK, LandmarkOnnxModel
from .schemes import get_scheme
from .task import face_crops, load_samples, normalise_crops, predict_crops, synthetic_lists

PathLike = Union[str, Path]

# normalised crop units (1.0 = the crop side)
PARITY_ATOL = 1e-4
PARITY_BATCHES = (1, 3)
DEFAULT_CALIBRATION_FACES = 64
# quantize_onnx's options for landmark networks. Unlike a detector's, the layers finer than stride 8
# are quantised too: on the synthetic-recipe PFLD x0.5 at 64 px (benchmarks/bench_landmark_int8.py, 5
# calibration draws, one thread) keeping them float left the NME change where it was (+0.056 vs
# +0.052 points on the synthetic val faces, -0.004 vs -0.002 on the real WFLW test faces) and cost
# speed (1.40x vs 1.81x over float at batch 32)
LANDMARK_QUANTIZE_OPTIONS: Dict[str, Any] = dict(high_resolution_float=False)
OUTPUT_DESCRIPTION = ("(B,K,2) x,y in normalised crop coordinates, (u + 0.5) / input_size: 0 and 1 are the crop's "
                      "outer pixel edges")
PREPROCESSING = ("crop the face (crop_policy), BGR uint8 -> RGB, / 255, minus input_mean, divided by input_std, "
                 "HWC -> CHW")
CROP_POLICY = ("square crop centred on the face box's centre, side = the box's longer side x (1 + 2 x crop_margin), "
               "resized to input_size x input_size (bilinear, black outside the image); pixel centres at integer "
               "coordinates, so an image point x lands at (x - left) * input_size / side - 0.5")


def _exportable(model: nn.Module) -> nn.Module:
    if model.training:
        raise ExportError("the landmark model is in training mode; call model.eval() before exporting")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ExportError("export from a CPU model (model.cpu()); the file runs on any device")
    return model


def landmark_metadata(model: nn.Module, opset: int) -> Dict[str, str]:
    """What a landmark export records (string keys and values; see the module docstring)."""
    config = model.config
    size = int(config.input_size)
    scheme = str(getattr(model, "scheme", None) or get_scheme(config.num_points).name)
    return {
        **provenance_metadata("onnx"),
        "task": LANDMARK_TASK,
        "network": config.name,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "scheme": scheme,
        "num_points": str(int(config.num_points)),
        "input_size": str(size),
        "crop_margin": repr(float(getattr(model, "crop_margin", 0.1))),
        "crop_policy": CROP_POLICY,
        "input_name": INPUT_NAME,
        "input_shape": json.dumps(["batch", 3, size, size]),
        "input_layout": INPUT_LAYOUT,
        "input_dtype": INPUT_DTYPE,
        "input_color": "RGB",
        "input_mean": json.dumps(list(IMAGENET_MEAN_RGB)),
        "input_std": json.dumps(list(IMAGENET_STD_RGB)),
        "input_preprocessing": PREPROCESSING,
        "output_names": json.dumps(list(LANDMARK_OUTPUTS)),
        "outputs": json.dumps({"points": OUTPUT_DESCRIPTION}),
        "opset": str(opset),
        "exporter": "TorchScript-based (dynamo=False)",
    }


def export_landmark_onnx(model: nn.Module, path: PathLike, *, opset: int = MIN_OPSET,
                         overwrite: bool = False) -> Dict[str, str]:
    """Write the landmark network ``model`` (eval mode, CPU; a loaded checkpoint, whose ``scheme``
    and ``crop_margin`` are recorded) as ONNX with a dynamic batch to ``path``, atomically; returns
    the metadata. An existing ``path`` is refused unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ExportError(f"{path}: already exists; choose another --output or delete it")
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: opset {MIN_OPSET} or newer is required")
    import onnx

    net = _exportable(model)
    size = int(model.config.input_size)
    example = normalise_crops(torch.zeros(1, size, size, 3, dtype=torch.uint8))
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript-based exporter is chosen on purpose (see deploy/export/writers.py)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        # LandmarkRegressor's check of the body's output width: a constant of the network, rightly traced as one
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(net, (example,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=list(LANDMARK_OUTPUTS), do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, LANDMARK_OUTPUTS[0]: {0: "batch"}})
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    meta = landmark_metadata(model, opset)
    write_onnx_file(proto, meta, path, f"landmarks {model.config.name}, {model.config.num_points} points; "
                                       "see metadata_props")
    return meta


def random_crops(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """``count`` uint8 BGR crops of uniform noise (``(N, S, S, 3)``), fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, size, size, 3), generator=generator, dtype=torch.uint8)


def check_landmark_parity(model: nn.Module, path: PathLike, atol: float = PARITY_ATOL,
                          batches: Sequence[int] = PARITY_BATCHES, seed: int = 0) -> ParityReport:
    """Run ``model`` (PyTorch) and the exported file on the same normalised noise crops, one batch of
    each size in ``batches``, and compare the points: each case passes when the max abs difference
    is at most ``atol`` normalised crop units."""
    exported = LandmarkOnnxModel(path)
    size = int(model.config.input_size)
    if exported.config.to_dict() != model.config.to_dict():
        raise ExportError(f"{path}: holds {exported.config.to_dict()}, the model is {model.config.to_dict()}")
    cases = []
    for i, batch in enumerate(batches):
        images = normalise_crops(random_crops(int(batch), size, seed + i))
        with torch.no_grad():
            want = model(images)
        have = exported(images)
        if tuple(have.shape) != tuple(want.shape):
            raise ExportError(f"{path}: points have shape {tuple(have.shape)} for a batch of {batch}, PyTorch "
                              f"gives {tuple(want.shape)}")
        diff = float((want.double() - have.double()).abs().max())
        cases.append(ParityCase((int(batch), 3, size, size), {"points": diff}, {"points": float(atol)}))
    return ParityReport(str(path), cases)


# -- INT8 ------------------------------------------------------------------------------------------
def landmark_faces(source: str, num_points: int, split: str, flag: str = "--accuracy-data"
                   ) -> Tuple[List[LandmarkSample], str]:
    """The annotated faces of ``source`` (a WFLW list or a folder of ``.pts`` files, images beside
    them) or of the built-in synthetic set's ``split`` (``"train"`` or ``"val"``) when ``source`` is
    ``"synthetic"``, and a label. Their point count must be ``num_points``; errors name ``flag``."""
    if source == SYNTHETIC_DATA and num_points not in (68, 98):
        raise QuantizationError(f"{flag} synthetic: the synthetic faces have 68 or 98 points, the network "
                                f"{num_points}; give a WFLW list or a .pts folder")
    if source == SYNTHETIC_DATA:
        train, val = synthetic_lists(LandmarkConfig(), get_scheme(num_points))
        listing = train if split == "train" else val
        samples, label = load_samples(listing), f"synthetic {split} ({listing})"
    else:
        samples, label = load_samples(source), str(source)
    wrong = {s.num_points for s in samples} - {num_points}
    if wrong:
        raise QuantizationError(f"{flag} {source}: faces with {sorted(wrong)} points; the network predicts "
                                f"{num_points}")
    return samples, label


def calibration_faces(source: str, num_points: int, count: int = DEFAULT_CALIBRATION_FACES,
                      seed: int = 0) -> Tuple[List[LandmarkSample], str]:
    """Up to ``count`` faces to calibrate on (a random ``count``, fixed by ``seed``, when there are
    more) and where they came from: ``"synthetic"`` is the synthetic *train* split, so the val split
    an accuracy report uses was never seen by calibration."""
    if count < 1:
        raise QuantizationError(f"--calibration-images {count}: need at least 1 face")
    samples, label = landmark_faces(source, num_points, "train", "--calibration")
    if len(samples) > count:
        rng = np.random.default_rng(seed)
        samples = [samples[i] for i in sorted(rng.choice(len(samples), size=count, replace=False))]
    return samples, f"{label}: {len(samples)} faces"


def calibration_inputs(samples: Sequence[LandmarkSample], size: int, margin: float) -> np.ndarray:
    """The network inputs of ``samples`` (``(N, 3, S, S)`` float32): each face cropped by the crop
    policy at ``margin`` and normalised as in inference."""
    crops, _ = face_crops(samples, size, margin)
    return normalise_crops(crops).numpy()


@dataclasses.dataclass
class LandmarkInt8Report:
    """NME (``normalisation``) of the float and the INT8 file on the same faces, and the median
    latency of each on one batch of ``latency_batch`` crops, timed in alternation."""

    float_nme: float
    int8_nme: float
    float_ms: float
    int8_ms: float
    latency_batch: int
    faces: int
    data: str
    normalisation: str = "inter-ocular"

    def lines(self) -> List[str]:
        return [f"accuracy on {self.data} ({self.faces} faces, NME {self.normalisation}):",
                "  model  NME %    latency (batch {})".format(self.latency_batch),
                f"  float  {100 * self.float_nme:.3f}  {self.float_ms:.2f} ms",
                f"  int8   {100 * self.int8_nme:.3f}  {self.int8_ms:.2f} ms",
                f"  NME change {100 * (self.int8_nme - self.float_nme):+.3f} points; speed-up "
                f"{self.float_ms / self.int8_ms:.2f}x"]

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def int8_report(float_path: PathLike, int8_path: PathLike, samples: Sequence[LandmarkSample], data: str = "",
                threads: Optional[int] = None, latency_batch: int = 1, repeats: int = 20) -> LandmarkInt8Report:
    """NME of both files on ``samples`` (cropped by the files' own crop margin) and their median
    latency on one batch of ``latency_batch`` crops (:func:`~retinaface.deploy.quantize.median_latency_ms`)."""
    models = {name: LandmarkOnnxModel(path, threads=threads) for name, path in (("float", float_path),
                                                                                ("int8", int8_path))}
    reference = models["float"]
    crops, transforms = face_crops(samples, int(reference.config.input_size), reference.crop_margin)
    nmes = {}
    for name, model in models.items():
        normalised = predict_crops(model, crops)
        points = np.stack([t.normalised_to_image(p) for t, p in zip(transforms, normalised)])
        nmes[name] = evaluate_landmarks(points, samples).nme
    batch = normalise_crops(crops[:latency_batch])
    ms = median_latency_ms({name: (lambda m=model: m(batch)) for name, model in models.items()}, repeats=repeats)
    return LandmarkInt8Report(nmes["float"], nmes["int8"], ms["float"], ms["int8"], len(batch), len(samples), data)


@dataclasses.dataclass
class LandmarkInt8Export:
    """What :func:`export_landmark_int8` did: the quantised file, the seconds it took, the report."""

    result: QuantizationResult
    seconds: float
    report: Optional[LandmarkInt8Report] = None


def export_landmark_int8(model: nn.Module, output: PathLike, calibration: Sequence[LandmarkSample],
                         calibration_source: str = "", method: str = DEFAULT_METHOD, opset: int = MIN_OPSET,
                         threads: Optional[int] = None, accuracy: Optional[Sequence[LandmarkSample]] = None,
                         accuracy_label: str = "", written: Optional[Any] = None,
                         **quantize_options: Any) -> LandmarkInt8Export:
    """Write the landmark network ``model`` as an INT8 ONNX file to ``output`` (refused when it
    exists): a float export to a temporary file, then :func:`~retinaface.deploy.quantize.quantize_onnx`
    (QDQ, per-channel int8 weights, uint8 activations, the detector's choice of float layers)
    calibrated on the crops of ``calibration`` faces. With ``accuracy`` faces, :func:`int8_report`
    compares both files on them; ``written(done)`` is called once the file is written, before it.
    ``quantize_options`` go to ``quantize_onnx`` over :data:`LANDMARK_QUANTIZE_OPTIONS`
    (``high_resolution_float``, ``equalize``, ...)."""
    output = Path(output)
    if output.exists():
        raise ExportError(f"{output}: already exists; choose another --output or delete it")
    if not calibration:
        raise QuantizationError("no calibration faces")
    started = time.perf_counter()
    inputs = calibration_inputs(calibration, int(model.config.input_size), float(getattr(model, "crop_margin", 0.1)))
    with tempfile.TemporaryDirectory(prefix="retinaface-landmarks-export-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        export_landmark_onnx(model, float_path, opset=opset)
        result = quantize_onnx(float_path, output, None, [s.source for s in calibration], method=method,
                               calibration_source=calibration_source, reader=ArrayCalibrationReader(inputs, INPUT_NAME),
                               **{**LANDMARK_QUANTIZE_OPTIONS, **quantize_options})
        done = LandmarkInt8Export(result, time.perf_counter() - started)
        if written is not None:
            written(done)
        if accuracy:
            done.report = int8_report(float_path, output, accuracy, accuracy_label, threads=threads)
    return done


__all__ = ["CROP_POLICY", "LANDMARK_QUANTIZE_OPTIONS", "LandmarkInt8Export", "LandmarkInt8Report", "PARITY_ATOL",
           "calibration_faces",
           "calibration_inputs", "check_landmark_parity", "export_landmark_int8", "export_landmark_onnx",
           "int8_report", "landmark_faces", "landmark_metadata", "random_crops"]
