"""Deployment export: ONNX and TorchScript files of a RetinaFace model, their metadata, parity checks.

Owns everything between a loaded model and a file another runtime can execute:

* :class:`DecodedRetinaFace`, the optional in-graph decoding (priors computed from the input's
  height and width inside the graph, boxes and landmarks in input pixels; NMS stays outside);
* :func:`export_onnx` / :func:`export_torchscript` (and :func:`export_model` choosing by format),
  which write atomically and record the input contract in the file (:func:`build_metadata`,
  :func:`read_metadata`);
* :func:`check_parity`, which runs the written file and the PyTorch model on the same inputs,
  including sizes the exporter never saw.

ONNX goes through the TorchScript-based exporter (``dynamo=False``) by default: on torch 2.14 both
exporters give correct size-generic graphs here, but the torch.export-based one (torch's default)
needs ~25 s per export of mobilenet0.25 on 2 cores against <1 s, and implements opsets from 18 on,
reaching 17 through a version converter. ``dynamo=True`` selects it.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import io
import json
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .box_coder import BoxCoder
from .fileio import atomic_write

PathLike = Union[str, Path]

EXPORT_FORMAT = "retinaface-export"
EXPORT_FORMAT_VERSION = 1
INPUT_NAME = "input"
RAW_OUTPUTS = ("loc", "conf", "landms")
DECODED_OUTPUTS = ("boxes", "scores", "landmarks")
TORCHSCRIPT_METADATA_FILE = "retinaface_metadata.json"
BGR_MEAN = (104.0, 117.0, 123.0)
DEFAULT_SIZE = (640, 640)
MIN_OPSET = 17
# sizes a dynamic export is checked at besides its own: odd, non-square, never seen by the exporter
UNSEEN_SIZES = ((241, 317), (480, 640), (352, 288))
# the coarsest level (stride 32) must have more than one cell, or export specialises on it
MIN_DYNAMIC_SIDE = 33
MAX_DYNAMIC_SIDE = 8192

OUTPUT_DESCRIPTIONS = {
    "loc": "(B,P,4) box offsets against the priors, variance-encoded",
    "conf": "(B,P,2) softmax scores, column 1 = face",
    "landms": "(B,P,10) landmark offsets against the priors, variance-encoded",
    "boxes": "(B,P,4) x1,y1,x2,y2 in input pixels (not clipped, before NMS)",
    "scores": "(B,P) face probability",
    "landmarks": "(B,P,10) five x,y points in input pixels",
}


class ExportError(RuntimeError):
    """An export could not be made or checked; the message is one line naming the file or argument."""


# -- in-graph decoding ------------------------------------------------------------------------
def pixel_priors(images: torch.Tensor, min_sizes: Sequence[Union[Sequence[int], torch.Tensor]],
                 steps: Sequence[int]) -> torch.Tensor:
    """Priors ``(P, 4)`` as ``(cx, cy, w, h)`` in pixels of ``images``' height and width.

    Same order and grids (``ceil(H/s) x ceil(W/s)``) as :func:`retinaface.priors.generate_priors`
    times ``(W, H, W, H)``, but built only from ops that tracing and ``torch.export`` record with the
    input's size and device as variables. ``min_sizes`` may hold tensors (buffers, which follow the
    module's device), else they become constants.
    """
    # 0..H-1 and 0..W-1 derived from the input itself: a trace records arange's device (and
    # tensor.to's) as a constant, which would pin a TorchScript file to the export device
    rows = torch.ones_like(images[0, 0, :, 0]).cumsum(0) - 1
    cols = torch.ones_like(images[0, 0, 0, :]).cumsum(0) - 1
    levels = []
    for sizes, step in zip(min_sizes, steps):
        # every step-th index: ceil(H/s) cells, at (i + 0.5) * s
        cy = rows[::step] + step / 2
        cx = cols[::step] + step / 2
        anchor = sizes if isinstance(sizes, torch.Tensor) else torch.tensor(
            [float(s) for s in sizes], dtype=images.dtype, device=images.device)
        # (rows, cols, anchors) grids: row-major, then anchor size, as the heads emit them
        gx, gy, gs = torch.broadcast_tensors(cx.view(1, -1, 1), cy.view(-1, 1, 1), anchor.view(1, 1, -1))
        levels.append(torch.stack([gx, gy, gs, gs], dim=-1).reshape(-1, 4))
    return torch.cat(levels)


class DecodedRetinaFace(nn.Module):
    """``model`` followed by prior generation and decoding: outputs boxes, scores, landmarks in pixels.

    Decoding in pixel units is the normalised decoding of :class:`BoxCoder` scaled by the input size
    (the coding is linear in the prior's units), without dividing by H and W and multiplying back.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.box_coder = BoxCoder(model.config.variances)
        self.steps = tuple(model.config.steps)
        for i, level in enumerate(model.config.min_sizes):
            self.register_buffer(f"anchor_sizes{i}", torch.tensor(level, dtype=torch.float32),
                                 persistent=False)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loc, conf, landms = self.model(images)
        sizes = [getattr(self, f"anchor_sizes{i}") for i in range(len(self.steps))]
        priors = pixel_priors(images, sizes, self.steps)
        boxes = self.box_coder.decode_boxes(loc, priors)
        landmarks = self.box_coder.decode_landmarks(landms, priors)
        return boxes, conf[..., 1], landmarks


# -- metadata -----------------------------------------------------------------------------------
def build_metadata(model: nn.Module, fmt: str, with_postprocess: bool, dynamic: bool,
                   size: Sequence[int], opset: Optional[int] = None,
                   width: Optional[float] = None) -> Dict[str, str]:
    """The input contract and provenance recorded in an exported file (string keys and values)."""
    from . import __version__

    config = model.config
    outputs = DECODED_OUTPUTS if with_postprocess else RAW_OUTPUTS
    meta = {
        "format": EXPORT_FORMAT,
        "format_version": str(EXPORT_FORMAT_VERSION),
        "toolkit_version": __version__,
        "torch_version": torch.__version__,
        "file_format": fmt,
        "backbone": config.backbone,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "input_name": INPUT_NAME,
        "input_layout": "NCHW",
        "input_dtype": "float32",
        "input_color": "BGR",
        "input_mean": json.dumps(list(BGR_MEAN)),
        "input_preprocessing": "float32(image_bgr) - mean, HWC -> CHW, no scaling, no std division",
        "input_size": "dynamic" if dynamic else f"{int(size[0])}x{int(size[1])}",
        "export_size": json.dumps([int(size[0]), int(size[1])]),
        "dynamic": json.dumps(bool(dynamic)),
        "with_postprocess": json.dumps(bool(with_postprocess)),
        "output_names": json.dumps(list(outputs)),
        "outputs": json.dumps({name: OUTPUT_DESCRIPTIONS[name] for name in outputs}),
        "postprocess": ("decoded in-graph; apply score threshold and NMS outside" if with_postprocess
                        else "decode against priors (ceil(H/s) grids), threshold and NMS outside"),
    }
    if opset is not None:
        meta["opset"] = str(opset)
    if width is not None:
        meta["width"] = json.dumps(width)
    return meta


def read_metadata(path: PathLike) -> Dict[str, str]:
    """The metadata :func:`build_metadata` wrote into an ``.onnx`` or TorchScript file."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: file not found")
    if _looks_like_torchscript(path):
        extra = {TORCHSCRIPT_METADATA_FILE: ""}
        try:
            with quiet_torchscript():
                torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:
            raise ExportError(f"{path}: not a loadable TorchScript file ({_first_line(exc)})") from None
        if not extra[TORCHSCRIPT_METADATA_FILE]:
            raise ExportError(f"{path}: TorchScript file without {TORCHSCRIPT_METADATA_FILE} "
                              f"(not exported by retinaface)")
        return json.loads(extra[TORCHSCRIPT_METADATA_FILE])
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"{path}: not a readable ONNX file ({_first_line(exc)})") from None
    return {prop.key: prop.value for prop in proto.metadata_props}


def _looks_like_torchscript(path: Path) -> bool:
    # TorchScript files are zip archives; ONNX files are bare protobuf
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence torch's "torch.jit.* is deprecated" notices: TorchScript output is asked for on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- loading ------------------------------------------------------------------------------------
def load_for_export(weights: PathLike, backbone: Optional[str] = None,
                    width: Optional[float] = None) -> nn.Module:
    """:func:`retinaface.load_model` on CPU in eval mode; ``width`` is passed only when given."""
    from .checkpoint import load_model

    kwargs = {}
    if width is not None:
        params = inspect.signature(load_model).parameters
        takes_width = "width" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
        if not takes_width:
            raise ExportError(f"--width {width}: this checkpoint/toolkit has no adaptive widths")
        kwargs["width"] = width
    return load_model(weights, backbone=backbone, device="cpu", **kwargs).eval()


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

    ``width`` is not applied here (:func:`load_for_export` does that); a value the model does not
    run at would make the metadata lie, so it is refused.
    """
    actual = getattr(model, "width", None) if hasattr(model, "set_width") else None
    if width is None:
        return None if actual is None else float(actual)
    if float(width) != float(1.0 if actual is None else actual):
        raise ExportError(f"--width {width}: the model runs at width {1.0 if actual is None else actual}; "
                          f"load it at that width (load_for_export(..., width={width}))")
    return float(width)


def _exportable(model: nn.Module, with_postprocess: bool) -> nn.Module:
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
    net = _exportable(model, with_postprocess)
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
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"RetinaFace {model.config.backbone}; see metadata_props for the input contract"
    data = proto.SerializeToString()
    with atomic_write(path, "wb") as handle:
        handle.write(data)
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
    net = _exportable(model, with_postprocess)
    with torch.no_grad(), quiet_torchscript():
        # check_trace would re-run at the same size only; check_parity tests other sizes instead
        traced = torch.jit.trace(net, (_example(1, size),), check_trace=False)
    meta = build_metadata(model, "torchscript", with_postprocess, True, size, width=width)
    meta["exporter"] = "torch.jit.trace"
    with atomic_write(path, "wb") as handle, quiet_torchscript():
        torch.jit.save(traced, handle, _extra_files={TORCHSCRIPT_METADATA_FILE: json.dumps(meta)})
    return meta


def export_model(model: nn.Module, path: PathLike, fmt: str, **kwargs) -> Dict[str, str]:
    """:func:`export_onnx` or :func:`export_torchscript` by ``fmt`` (``"onnx"`` / ``"torchscript"``)."""
    if fmt == "onnx":
        return export_onnx(model, path, **kwargs)
    if fmt == "torchscript":
        kwargs.pop("dynamic", None)  # always size-generic
        for onnx_only in ("opset", "dynamo"):
            kwargs.pop(onnx_only, None)
        return export_torchscript(model, path, **kwargs)
    raise ExportError(f"--format {fmt!r}: choose 'onnx' or 'torchscript'")


# -- parity -------------------------------------------------------------------------------------
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


def load_exported(path: PathLike, threads: Optional[int] = None
                  ) -> Callable[[torch.Tensor], Tuple[torch.Tensor, ...]]:
    """A function running an exported file (ONNX via ONNX Runtime on CPU, or TorchScript)."""
    path = Path(path)
    meta = read_metadata(path)
    if meta.get("file_format") == "torchscript":
        with quiet_torchscript():
            module = torch.jit.load(str(path), map_location="cpu")

        def run_torchscript(images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
            with torch.no_grad():
                return tuple(module(images))
        return run_torchscript
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run_onnx(images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feed = {input_name: images.detach().cpu().float().contiguous().numpy()}
        return tuple(torch.from_numpy(out) for out in session.run(None, feed))
    return run_onnx


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
    with_postprocess = json.loads(meta["with_postprocess"])
    if shapes is None:
        shapes = parity_shapes(json.loads(meta["export_size"]), json.loads(meta["dynamic"]))
    reference = _exportable(model, with_postprocess)
    names = DECODED_OUTPUTS if with_postprocess else RAW_OUTPUTS
    try:
        run = load_exported(path)
    except ExportError:
        raise
    except Exception as exc:  # onnxruntime's errors are not RuntimeErrors
        raise ExportError(f"{path}: cannot be loaded to run it ({_first_line(exc)})") from None
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
                              f"({_first_line(exc)})") from None
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


__all__ = ["DECODED_OUTPUTS", "DecodedRetinaFace", "ExportError", "ParityCase", "ParityReport",
           "RAW_OUTPUTS", "build_metadata", "check_parity", "export_model", "export_onnx",
           "export_torchscript", "load_exported", "load_for_export", "parity_shapes", "pixel_priors",
           "read_metadata"]
