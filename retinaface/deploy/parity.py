"""Parity of an exported file with PyTorch: same random inputs, every output compared.

Owns :func:`check_parity` and its report (:class:`ParityReport`, one :class:`ParityCase` per input
shape). The file is run through :func:`retinaface.deploy.runtime.load_exported`, the reference through
the same module the writer exported (:func:`retinaface.deploy.export.writers.exportable`).
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..conventions import BGR_MEAN
from .export.metadata import (DECODED_OUTPUTS, DETECTION_TASK, EXPORT_FORMAT, RAW_OUTPUTS, ExportError,
                              export_task, first_line, read_metadata)
from .export.writers import exportable
from .runtime import load_exported

PathLike = Union[str, Path]
# sizes a dynamic export is checked at besides its own: odd, non-square, never seen by the exporter
UNSEEN_SIZES = ((241, 317), (480, 640), (352, 288))


@dataclasses.dataclass
class ParityCase:
    """Max abs differences of every output for one input shape, and their tolerances."""

    shape: Tuple[int, int, int, int]
    diffs: Dict[str, float]
    tolerances: Dict[str, float]
    # PyTorch float32 vs float64 per output, measured only when the plain tolerance is exceeded
    float32_error: Optional[Dict[str, float]] = None

    @property
    def passed(self) -> bool:
        return all(self.diffs[k] <= self.tolerances[k] for k in self.diffs)


@dataclasses.dataclass
class ParityReport:
    """The outcome of :func:`check_parity`."""

    path: str
    cases: List[ParityCase]

    @property
    def passed(self) -> bool:
        return all(case.passed for case in self.cases)

    @property
    def max_diff(self) -> float:
        return max(max(case.diffs.values()) for case in self.cases)

    def lines(self) -> List[str]:
        out = []
        for case in self.cases:
            shape = "x".join(str(v) for v in case.shape)
            cells = "  ".join(f"{k} {v:.2e} (tol {case.tolerances[k]:.0e})" for k, v in case.diffs.items())
            note = " (within PyTorch's own float32 error)" if case.float32_error and case.passed else ""
            out.append(f"  {shape:<14} {cells}  {'ok' if case.passed else 'MISMATCH'}{note}")
        out.append(f"parity {'PASS' if self.passed else 'FAIL'}: max abs diff {self.max_diff:.2e} "
                   f"over {len(self.cases)} input shape(s)")
        return out


def parity_shapes(size: Sequence[int], dynamic: bool) -> List[Tuple[int, int, int, int]]:
    """The export size (batch 1) and, for size-generic files, two unseen sizes (one at batch 2)."""
    height, width = int(size[0]), int(size[1])
    shapes = [(1, 3, height, width)]
    if dynamic:
        unseen = [s for s in UNSEEN_SIZES if s != (height, width)][:2]
        shapes += [(2, 3, *unseen[0]), (1, 3, *unseen[1])]
    return shapes


def check_parity(model: nn.Module, path: PathLike, shapes: Optional[Sequence[Sequence[int]]] = None,
                 atol: float = 1e-4, seed: int = 0) -> ParityReport:
    """Run ``model`` (eval, CPU) and the exported file on the same random inputs and compare.

    ``shapes`` default to :func:`parity_shapes` of the file's export size. Each output must agree
    within ``atol * max(1, max |PyTorch output|)``: plain ``atol`` for scores and for outputs of
    magnitude <= 1, relative for larger ones (pixel coordinates, the offsets of a deep model with
    large activations), where float32 itself cannot resolve ``atol`` absolutely (ulp(1024) is
    1.2e-4). A shape that still fails is re-run in float64: when PyTorch's own float32 error is of
    the same size, the tolerance grows by twice that error and the line says so.
    """
    meta = read_metadata(path)
    if meta.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path}: not a retinaface export (no format={EXPORT_FORMAT} metadata)")
    if export_task(meta) != DETECTION_TASK:
        raise ExportError(f"{path}: a {export_task(meta)} export; its parity check is that task's own")
    with_postprocess = json.loads(meta["with_postprocess"])
    if shapes is None:
        shapes = parity_shapes(json.loads(meta["export_size"]), json.loads(meta["dynamic"]))
    reference = exportable(model, with_postprocess)
    names = DECODED_OUTPUTS if with_postprocess else RAW_OUTPUTS
    try:
        run = load_exported(path)
    except ExportError:
        raise
    except Exception as exc:  # onnxruntime's errors are not RuntimeErrors
        raise ExportError(f"{path}: cannot be loaded to run it ({first_line(exc)})") from None
    generator = torch.Generator().manual_seed(seed)
    mean = torch.tensor(BGR_MEAN).view(1, 3, 1, 1)
    cases = []
    for shape in shapes:
        shape = tuple(int(v) for v in shape)
        images = torch.rand(shape, generator=generator) * 255.0 - mean
        with torch.no_grad():
            expected = reference(images)
        try:
            got = run(images)
        except Exception as exc:  # a size baked into the graph fails here, in onnxruntime's own error types
            raise ExportError(f"{path}: fails on input {'x'.join(map(str, shape))} "
                              f"({first_line(exc)})") from None
        diffs, tolerances = {}, {}
        for name, want, have in zip(names, expected, got):
            if tuple(want.shape) != tuple(have.shape):
                raise ExportError(f"{path}: output {name} has shape {tuple(have.shape)} for input "
                                  f"{shape}, PyTorch gives {tuple(want.shape)}")
            diffs[name] = _max_abs_diff(want, have)
            finite = want[torch.isfinite(want)]
            scale = float(finite.abs().max()) if finite.numel() else 0.0
            tolerances[name] = atol * max(1.0, scale)
        case = ParityCase(shape, diffs, tolerances)
        if not case.passed:
            _widen_by_float32_error(case, reference, images, expected, names)
        cases.append(case)
    return ParityReport(str(path), cases)


def _max_abs_diff(want: torch.Tensor, have: torch.Tensor) -> float:
    """Max abs difference where equal values (inf and inf, NaN and NaN included) count as 0 and a
    non-finite value against a different one counts as inf."""
    if not want.numel():
        return 0.0
    want, have = want.double(), have.double()
    same = (want == have) | (torch.isnan(want) & torch.isnan(have))
    diff = torch.where(same, torch.zeros_like(want), (want - have).abs())
    return float(torch.nan_to_num(diff, nan=float("inf")).max())


def _widen_by_float32_error(case: ParityCase, reference: nn.Module, images: torch.Tensor,
                            expected: Sequence[torch.Tensor], names: Sequence[str]) -> None:
    """Tell float32 rounding from a broken export: a deep model with large activations can put
    PyTorch's float32 result further than ``atol`` from the exact (float64) one. Two runtimes that
    each carry that error may differ by up to twice it, so the tolerance grows by ``2 * error``."""
    exact_model = copy.deepcopy(reference).double()
    with torch.no_grad():
        exact = exact_model(images.double())
    # where float32 overflowed, float64 has no comparable value: those positions are not measured
    case.float32_error = {name: _max_abs_diff(want[torch.isfinite(want)], ref[torch.isfinite(want)])
                          for name, want, ref in zip(names, expected, exact)}
    for name in names:
        case.tolerances[name] += 2.0 * case.float32_error[name]


__all__ = ["ParityCase", "ParityReport", "UNSEEN_SIZES", "check_parity", "parity_shapes"]
