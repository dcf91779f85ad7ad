"""Writers of deployment files: ONNX and TorchScript, each written atomically with its metadata.

:func:`export_onnx` / :func:`export_torchscript` (and :func:`export_model` choosing by format) take
a loaded model in eval mode on CPU, optionally wrapped in the in-graph decoding of
:class:`retinaface.inference.postprocess.DecodedRetinaFace`, and record the input contract of
:mod:`retinaface.deploy.export.metadata` in the file. Checking a written file against PyTorch is
:mod:`retinaface.deploy.parity`'s job.

ONNX goes through the TorchScript-based exporter (``dynamo=False``) by default: on torch 2.14 both
exporters give correct size-generic graphs here, but the torch.export-based one (torch's default)
needs ~25 s per export of mobilenet0.25 on 2 cores against <1 s, and implements opsets from 18 on,
reaching 17 through a version converter. ``dynamo=True`` selects it.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ...checkpoint import load_model
from ...conventions import BGR_MEAN
from ...fileio import atomic_write
from ...inference.postprocess import DecodedRetinaFace
from ...runtime_interface import export_format
from .metadata import (DECODED_OUTPUTS, DEFAULT_SIZE, INPUT_NAME, MAX_DYNAMIC_SIDE, MIN_DYNAMIC_SIDE,
                       MIN_OPSET, RAW_OUTPUTS, TORCHSCRIPT_METADATA_FILE, ExportError, build_metadata,
                       quiet_torchscript, write_onnx_file)

PathLike = Union[str, Path]


# -- loading ------------------------------------------------------------------------------------
def load_for_export(weights: PathLike, backbone: Optional[str] = None,
                    width: Optional[float] = None) -> nn.Module:
    """Deprecated alias of :func:`retinaface.load_model` (which loads on CPU in eval mode by
    default), kept for one release."""
    warnings.warn("retinaface.deploy.export.writers.load_for_export is deprecated; use retinaface.load_model",
                  DeprecationWarning, stacklevel=2)
    return load_model(weights, backbone=backbone, device="cpu", width=width)


# -- export -------------------------------------------------------------------------------------
def _validate_size(size: Sequence[int], dynamic: bool) -> Tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ExportError(f"--size must be two positive integers H W, got {list(size)}")
    height, width = int(size[0]), int(size[1])
    if dynamic and min(height, width) < MIN_DYNAMIC_SIDE:
        raise ExportError(f"--size {height} {width}: a dynamic export needs both sides >= {MIN_DYNAMIC_SIDE}")
    return height, width


def _export_width(model: nn.Module, width: Optional[float]) -> Optional[float]:
    """The width to record: the model's own for an adaptive model, else ``width`` (1.0 only).

    ``width`` is not applied here (:func:`retinaface.load_model` does that); a value the model does not
    run at would make the metadata lie, so it is refused.
    """
    actual = getattr(model, "width", None) if hasattr(model, "set_width") else None
    if width is None:
        return None if actual is None else float(actual)
    if float(width) != float(1.0 if actual is None else actual):
        raise ExportError(f"--width {width}: the model runs at width {1.0 if actual is None else actual}; "
                          f"load it at that width (load_model(..., width={width}))")
    return float(width)


def exportable(model: nn.Module, with_postprocess: bool) -> nn.Module:
    """The module to export (or to compare against): ``model``, or ``model`` with in-graph decoding."""
    if model.training:
        raise ExportError("the model is in training mode; call model.eval() before exporting")
    # traced device arguments (the in-graph priors') would pin a GPU export to that device
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ExportError("export from a CPU model (model.cpu()); the file runs on any device")
    return DecodedRetinaFace(model).eval() if with_postprocess else model


def _example(batch: int, size: Tuple[int, int]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, 3, *size, generator=generator) * 255.0 - torch.tensor(BGR_MEAN).view(1, 3, 1, 1)


def export_onnx(model: nn.Module, path: PathLike, *, dynamic: bool = False, with_postprocess: bool = False,
                opset: int = MIN_OPSET, size: Sequence[int] = DEFAULT_SIZE, dynamo: bool = False,
                width: Optional[float] = None) -> Dict[str, str]:
    """Write ``model`` (eval mode, CPU) as ONNX to ``path`` atomically; returns the recorded metadata.

    ``dynamic`` makes batch, height and width symbolic (FPN upsampling sizes and, with
    ``with_postprocess``, the priors follow the input); otherwise the graph is fixed to
    ``1 x 3 x size``. ``dynamo`` picks torch's torch.export-based exporter instead of the
    TorchScript-based one (see the module docstring).
    """
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: opset {MIN_OPSET} or newer is required")
    size = _validate_size(size, dynamic)
    width = _export_width(model, width)
    net = exportable(model, with_postprocess)
    outputs = list(DECODED_OUTPUTS if with_postprocess else RAW_OUTPUTS)
    with torch.no_grad(), warnings.catch_warnings():
        # the deprecation notice of the TorchScript-based exporter: chosen on purpose, see above
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        if dynamo:
            proto = _export_onnx_dynamo(net, size, dynamic, opset, outputs)
        else:
            proto = _export_onnx_torchscript(net, size, dynamic, opset, outputs)
    _declare_last_dims(proto, model.config.num_classes)
    meta = build_metadata(model, "onnx", with_postprocess, dynamic, size, opset=opset, width=width)
    meta["exporter"] = "torch.export (dynamo=True)" if dynamo else "TorchScript-based (dynamo=False)"
    write_onnx_file(proto, meta, path, f"RetinaFace {model.config.backbone}; see metadata_props for the input contract")
    return meta


def _declare_last_dims(proto, num_classes: int) -> None:
    """State the fixed last dimension of each output where the exporter left a symbolic name.

    The TorchScript-based exporter's shape inference loses the constant ``values`` of the heads'
    ``reshape(B, -1, values)`` under dynamic axes; consumers reading the declared shape want 4/2/10.
    """
    import onnx

    last = {"loc": 4, "conf": num_classes, "landms": 10, "boxes": 4, "landmarks": 10}
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        if output.name in last and len(dims) == 3 and not dims[2].HasField("dim_value"):
            dims[2].Clear()
            dims[2].dim_value = last[output.name]
    onnx.checker.check_model(proto)


def _export_onnx_torchscript(net: nn.Module, size: Tuple[int, int], dynamic: bool, opset: int,
                             outputs: List[str]):
    import onnx

    buffer = io.BytesIO()
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
        dynamic_axes.update({name: {0: "batch", 1: "num_priors"} for name in outputs})
    torch.onnx.export(net, (_example(1, size),), buffer, dynamo=False, opset_version=opset,
                      input_names=[INPUT_NAME], output_names=outputs, dynamic_axes=dynamic_axes,
                      do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


def _export_onnx_dynamo(net: nn.Module, size: Tuple[int, int], dynamic: bool, opset: int,
                        outputs: List[str]):
    dynamic_shapes = None
    batch = 1
    if dynamic:
        # torch.export specialises dimensions that are 1 in the example, hence a batch of 2
        batch = 2
        dims = {0: torch.export.Dim("batch", min=1, max=1024),
                2: torch.export.Dim("height", min=MIN_DYNAMIC_SIDE, max=MAX_DYNAMIC_SIDE),
                3: torch.export.Dim("width", min=MIN_DYNAMIC_SIDE, max=MAX_DYNAMIC_SIDE)}
        dynamic_shapes = (dims,)
    program = torch.onnx.export(net, (_example(batch, size),), None, dynamo=True, opset_version=opset,
                                input_names=[INPUT_NAME], output_names=outputs,
                                dynamic_shapes=dynamic_shapes, verbose=False)
    return program.model_proto


def export_torchscript(model: nn.Module, path: PathLike, *, with_postprocess: bool = False,
                       size: Sequence[int] = DEFAULT_SIZE, width: Optional[float] = None) -> Dict[str, str]:
    """Write ``model`` as a traced TorchScript module to ``path`` atomically; returns the metadata.

    Tracing records the input's shape as a variable (``aten::size``) wherever the model reads it
    (FPN upsampling targets, head reshapes, in-graph priors), so the module accepts any batch,
    height and width; :func:`check_parity` verifies that on unseen sizes. The metadata is stored
    as ``_extra_files[TORCHSCRIPT_METADATA_FILE]`` (JSON).
    """
    size = _validate_size(size, dynamic=True)
    width = _export_width(model, width)
    net = exportable(model, with_postprocess)
    with torch.no_grad(), quiet_torchscript():
        # check_trace would re-run at the same size only; check_parity tests other sizes instead
        traced = torch.jit.trace(net, (_example(1, size),), check_trace=False)
    meta = build_metadata(model, "torchscript", with_postprocess, True, size, width=width)
    meta["exporter"] = "torch.jit.trace"
    with atomic_write(path, "wb") as handle, quiet_torchscript():
        torch.jit.save(traced, handle, _extra_files={TORCHSCRIPT_METADATA_FILE: json.dumps(meta)})
    return meta


def export_model(model: nn.Module, path: PathLike, fmt: str, **kwargs) -> Dict[str, str]:
    """The writer :data:`~retinaface.runtime_interface.EXPORT_FORMATS` registers for ``fmt``; options
    another format takes (``dynamic``, ``opset``, ``dynamo`` for ONNX) are dropped."""
    try:
        registered = export_format(fmt)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    return registered.write(model, path, **kwargs)


__all__ = ["export_model", "export_onnx", "export_torchscript", "exportable"]
