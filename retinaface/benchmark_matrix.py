"""What ``retinaface benchmark`` measures: the deployment matrix (``--matrix``, the opencv_zoo
kind) and the per-model table (one backbone, ``--all``, a checkpoint, adaptive ``--widths``).

Used by :mod:`retinaface.cli.benchmark` (which only parses flags and prints) and by
``benchmarks/bench_detect_overhead.py``; the runtime tables of docs/edge.md and README come from
:func:`run_matrix`. The per-model rows are :func:`measure_models` over :func:`benchmark_jobs`
(:func:`retinaface.inference.profiling.benchmark_model` per model, plus the WIDER AP of each width with
``data_root``).

The matrix, backbones x widths x input sizes x runtimes x thread counts: the median forward time
(ms) and FPS of each cell, plus the full detect path (pre-processing, forward, decoding, NMS) and
its overhead over the bare forward. Runtimes: PyTorch eager (NHWC input, the Detector's CPU default),
PyTorch with BatchNorm folded into the convolutions, ONNX Runtime float and INT8, OpenVINO float
and INT8 (INT8: :func:`retinaface.deploy.quantize.quantize_onnx`, default float layers, calibrated on
synthetic training images). ONNX files are exported at each cell's fixed size, as deployed.

Within one (backbone, width, size, threads) group every runtime is timed in rotating blocks
(:func:`retinaface.deploy.quantize.median_latency_ms`), so load on a shared machine falls on all of them
alike and the ratios between runtimes are the reliable part of the table. Weights are untrained
(latency does not depend on their values), with about 300 candidates above the 0.02 threshold
once the class heads are recalibrated as ``retinaface benchmark`` does (face-logit margins scaled
to a trained model's spread, then shifted): a realistic post-processing load, kept by INT8 files.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import io
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .adaptive import make_adaptive
from .adaptive.slim import active_parameters
from .build import create_model
from .checkpoint import load_model
from .inference.detector import Detector
from .evaluation.predict import evaluate_model
from .deploy.export.writers import export_onnx
from .fileio import atomic_write
from .deploy.fusion import fuse_conv_bn
from .deploy.openvino_backend import openvino_available
from .inference.profiling import TRAINED_MARGIN_SPREAD, BenchmarkRow, benchmark_model, calibrate_score_bias
from .deploy.quantize import calibration_images as pick_images, median_latency_ms, quantize_onnx
from .deploy.runtime import load_runtime
from .runtime_interface import MATRIX_RUNTIMES

PathLike = Union[str, Path]

MATRIX_SIZES: Tuple[Tuple[int, int], ...] = ((240, 320), (480, 640), (720, 1280), (1080, 1920))
MATRIX_BACKBONES: Tuple[str, ...] = ("mobilenet0.25", "mobiface", "resnet50")
MATRIX_THREADS: Tuple[int, ...] = (1, 2)
CSV_COLUMNS = ("backbone", "width", "height_px", "width_px", "runtime", "threads", "forward_ms", "fps",
               "detect_ms", "detect_overhead", "candidates")


@dataclasses.dataclass
class MatrixCell:
    """One measured cell: forward and detect medians (ms) of one configuration."""

    backbone: str
    width: float
    size: Tuple[int, int]
    runtime: str
    threads: int
    forward_ms: float
    detect_ms: float
    candidates: int

    @property
    def fps(self) -> float:
        return 1000.0 / self.forward_ms

    @property
    def overhead(self) -> float:
        """Detect time over forward time, minus one (0.05 = 5 % spent outside the network)."""
        return self.detect_ms / self.forward_ms - 1.0


def _build(backbone: str, width: float):
    torch.manual_seed(0)
    model = create_model(backbone).eval()
    if width != 1.0:
        model = make_adaptive(model).set_width(width).eval()
    return model


def _runtime_models(model, runtimes: Sequence[str], size: Tuple[int, int], threads: int, workdir: Path,
                    calibration: Sequence[Path], width: Optional[float]) -> Dict[str, object]:
    """Detector-ready models of ``model`` for each runtime (ONNX files exported at ``size``)."""
    models: Dict[str, object] = {}
    if "pytorch" in runtimes:
        models["pytorch"] = model
    if "pytorch-fused" in runtimes:
        models["pytorch-fused"] = fuse_conv_bn(copy.deepcopy(model))
    needs_onnx = [r for r in runtimes if r.startswith(("onnxruntime", "openvino"))]
    if not needs_onnx:
        return models
    tag = f"{model.config.backbone}-{width or 1:g}-{size[0]}x{size[1]}"
    float_path = workdir / f"{tag}.onnx"
    int8_path = workdir / f"{tag}.int8.onnx"
    if not float_path.exists():
        export_onnx(model, float_path, size=size, width=width if width not in (None, 1.0) else None)
    if any(r.endswith("-int8") for r in needs_onnx) and not int8_path.exists():
        quantize_onnx(float_path, int8_path, Detector(load_runtime(float_path, "onnxruntime")), calibration,
                      calibration_source=f"synthetic: {len(calibration)} images")
    for runtime in needs_onnx:
        backend = "openvino" if runtime.startswith("openvino") else "onnxruntime"
        path = int8_path if runtime.endswith("-int8") else float_path
        models[runtime] = load_runtime(path, backend, threads=threads)
    return models


def run_matrix(backbones: Sequence[str] = MATRIX_BACKBONES, widths: Sequence[float] = (1.0,),
               sizes: Sequence[Tuple[int, int]] = MATRIX_SIZES, runtimes: Sequence[str] = MATRIX_RUNTIMES,
               threads: Sequence[int] = MATRIX_THREADS, repeats: int = 10, calibration_images: int = 8,
               candidates: int = 300, log: Optional[Callable[[str], None]] = None) -> List[MatrixCell]:
    """Measure every cell; ``log`` receives a line per finished group. Runtimes whose package is
    missing (openvino) are skipped with a note through ``log``. The class heads are recalibrated
    so that about ``candidates`` priors pass the score threshold, with a trained model's spread
    of scores (:func:`retinaface.inference.profiling.calibrate_score_bias`)."""
    unknown = [r for r in runtimes if r not in MATRIX_RUNTIMES]
    if unknown:
        raise ValueError(f"unknown runtime(s) {unknown}; choose from {', '.join(MATRIX_RUNTIMES)}")
    if not openvino_available() and any(r.startswith("openvino") for r in runtimes):
        runtimes = [r for r in runtimes if not r.startswith("openvino")]
        if log:
            log("openvino is not installed: its columns are skipped (pip install openvino)")
    calibration = pick_images("synthetic", calibration_images)[0] if any(r.endswith("-int8") for r in runtimes) else []
    cells: List[MatrixCell] = []
    previous_threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="retinaface-matrix-") as tmp:
        for backbone in backbones:
            for width in widths:
                model = _build(backbone, width)
                for size in sizes:
                    image = rng.integers(0, 255, (size[0], size[1], 3), dtype=np.uint8)
                    # a trained detector's load on the post-processing: ~300 candidates above 0.02
                    sized = copy.deepcopy(model)
                    calibrate_score_bias(sized, image, candidates)
                    for count in threads:
                        torch.set_num_threads(count)
                        models = _runtime_models(sized, runtimes, size, count, Path(tmp), calibration,
                                                 width if width != 1.0 else None)
                        detectors = {name: Detector(m) for name, m in models.items()}
                        batches = {name: d.transform([image])[0] for name, d in detectors.items()}
                        calls = {}
                        for name, det in detectors.items():
                            # an external runtime runs the network on its own threads; torch then
                            # only post-processes, on one thread (its idle OpenMP workers would
                            # compete with the runtime's on a small CPU: docs/edge.md)
                            own = count if name.startswith("pytorch") else 1
                            calls[f"{name}|forward"] = lambda d=det, b=batches[name], t=own: (
                                torch.set_num_threads(t), d.forward(b))
                            calls[f"{name}|detect"] = lambda d=det, t=own: (torch.set_num_threads(t), d.detect(image))
                        ms = median_latency_ms(calls, repeats=repeats)
                        for name, det in detectors.items():
                            passed = int((det.forward(batches[name])[1][0, :, 1] > det.conf_threshold).sum())
                            cells.append(MatrixCell(backbone, width, tuple(size), name, count,
                                                    ms[f"{name}|forward"], ms[f"{name}|detect"], passed))
                        if log:
                            log(f"measured {backbone} @{width:g} {size[1]}x{size[0]} x{count} threads")
    torch.set_num_threads(previous_threads)
    return cells


def to_csv(cells: Sequence[MatrixCell]) -> str:
    """The cells as CSV text (:data:`CSV_COLUMNS`)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for c in cells:
        writer.writerow([c.backbone, f"{c.width:g}", c.size[0], c.size[1], c.runtime, c.threads,
                         f"{c.forward_ms:.3f}", f"{c.fps:.1f}", f"{c.detect_ms:.3f}", f"{c.overhead:.3f}",
                         c.candidates])
    return out.getvalue()


def to_markdown(cells: Sequence[MatrixCell]) -> str:
    """One table per (backbone, width, threads): rows are input sizes, columns runtimes, each cell
    ``forward ms (FPS)``; then the detect-path overhead per runtime (worst over sizes)."""
    blocks = []
    groups: Dict[Tuple[str, float, int], List[MatrixCell]] = {}
    for c in cells:
        groups.setdefault((c.backbone, c.width, c.threads), []).append(c)
    for (backbone, width, count), group in groups.items():
        runtimes = list(dict.fromkeys(c.runtime for c in group))
        sizes = list(dict.fromkeys(c.size for c in group))
        table = {(c.size, c.runtime): c for c in group}
        title = f"### {backbone}" + (f" @{width:g}" if width != 1.0 else "") + f", {count} thread(s): forward ms (FPS)"
        lines = [title, "", "| input | " + " | ".join(runtimes) + " |", "|---" * (len(runtimes) + 1) + "|"]
        for size in sizes:
            row = [f"{table[(size, r)].forward_ms:.1f} ({table[(size, r)].fps:.0f})" if (size, r) in table else "-"
                   for r in runtimes]
            lines.append(f"| {size[1]}x{size[0]} | " + " | ".join(row) + " |")
        worst = {r: max(c.overhead for c in group if c.runtime == r) for r in runtimes}
        lines.append("| detect overhead (worst) | " + " | ".join(f"{100 * worst[r]:+.0f} %" for r in runtimes) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def matrix_files(prefix: PathLike) -> List[Path]:
    """The files :func:`write_matrix` writes for ``prefix``: ``PREFIX.md``, ``.csv`` and ``.png``."""
    return [Path(f"{prefix}{ext}") for ext in (".md", ".csv", ".png")]


def write_matrix(cells: Sequence[MatrixCell], prefix: PathLike) -> List[Path]:
    """Write the cells as ``PREFIX.md`` (:func:`to_markdown`), ``PREFIX.csv`` (:func:`to_csv`) and
    ``PREFIX.png`` (:func:`plot`; left out when matplotlib is missing), each atomically; returns
    the files written."""
    markdown, table, image = matrix_files(prefix)
    with atomic_write(markdown) as handle:
        handle.write(to_markdown(cells))
    with atomic_write(table) as handle:
        handle.write(to_csv(cells))
    return [markdown, table] + ([image] if plot(cells, image) is not None else [])


# one row of the per-model table: its name, what builds the model, the adaptive width (or None)
ModelJob = Tuple[str, Callable[[], nn.Module], Optional[float]]


def benchmark_jobs(backbones: Sequence[str] = ("mobilenet0.25",), weights: Optional[str] = None,
                   widths: Optional[Sequence[float]] = None, device: str = "cpu") -> List[ModelJob]:
    """The rows ``retinaface benchmark`` measures: each of ``backbones`` untrained, or checkpoint
    ``weights``; with ``widths``, one adaptive model at each width (``weights``, or the first
    backbone made width-switchable). Models are built when a row is measured, afresh per row."""
    if widths:
        def build(w: float) -> nn.Module:
            if weights:
                return load_model(weights, device=device, width=w)
            return make_adaptive(create_model(backbones[0])).set_width(w)

        label = Path(weights).stem if weights else backbones[0]
        return [(f"{label} @{w:g}", lambda w=w: build(w), w) for w in widths]
    if weights:
        return [(Path(weights).stem, lambda: load_model(weights, device=device), None)]
    return [(name, lambda name=name: create_model(name), None) for name in backbones]


def measure_models(jobs: Sequence[ModelJob], height: int, width: int, device: str = "cpu", repeats: int = 20,
                   detect: bool = True, data_root: Optional[PathLike] = None, trained: bool = False,
                   log: Optional[Callable[[str], None]] = None) -> List[BenchmarkRow]:
    """One :func:`retinaface.inference.profiling.benchmark_model` row per job at ``height x width``, in
    order; an adaptive row counts the parameters its width computes with, and with ``data_root``
    also gets the WIDER AP of that width on the root's val split. Untrained models get their class
    heads recalibrated to a trained model's spread of scores (``trained``: shifted only).
    ``log`` receives a line per measured row."""
    rows = []
    for name, build, w in jobs:
        model = build()
        extra = {}
        if data_root is not None and w is not None:
            ap = evaluate_model(model.eval(), data_root, progress=False).as_dict()
            extra = {f"AP {k}": v for k, v in ap.items()}
        row = benchmark_model(model, height, width, name, device, repeats, detect=detect,
                              spread=None if trained else TRAINED_MARGIN_SPREAD)
        if w is not None:
            row.params_m = active_parameters(model) / 1e6  # the weights this width computes with
        row.extra.update(extra)
        rows.append(row)
        if log is not None:
            log(f"measured {name}")
    return rows


def plot(cells: Sequence[MatrixCell], path: PathLike) -> Optional[Path]:
    """FPS against input size, one line per runtime, one panel per backbone (at the highest thread
    count); written atomically as PNG. ``None`` when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None

    top = max(c.threads for c in cells)
    backbones = list(dict.fromkeys(c.backbone for c in cells))
    fig, axes = plt.subplots(1, len(backbones), figsize=(5 * len(backbones), 4), squeeze=False)
    for ax, backbone in zip(axes[0], backbones):
        group = [c for c in cells if c.backbone == backbone and c.threads == top and c.width == 1.0]
        for runtime in dict.fromkeys(c.runtime for c in group):
            pts = sorted((c.size[0] * c.size[1], c.fps) for c in group if c.runtime == runtime)
            ax.plot([p[0] / 1e6 for p in pts], [p[1] for p in pts], marker="o", label=runtime)
        ax.set_xlabel("input megapixels")
        ax.set_ylabel("forward FPS")
        ax.set_yscale("log")
        ax.set_title(f"{backbone}, {top} thread(s)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return Path(path)


__all__ = ["CSV_COLUMNS", "MATRIX_BACKBONES", "MATRIX_RUNTIMES", "MATRIX_SIZES", "MATRIX_THREADS", "MatrixCell",
           "ModelJob", "benchmark_jobs", "matrix_files", "measure_models", "plot", "run_matrix", "to_csv",
           "to_markdown", "write_matrix"]
