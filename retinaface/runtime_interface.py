"""What a detector network offers the :class:`~retinaface.inference.detector.Detector`, whoever runs it,
what a dense-landmark model offers it (:class:`LandmarkModel`), and the one table of export formats.

:class:`RuntimeModel` is the declared interface: the PyTorch network
(:class:`~retinaface.models.retinaface.RetinaFace`), an ONNX file under ONNX Runtime
(:class:`~retinaface.deploy.runtime.OnnxRuntimeModel`) and an ONNX / IR file under OpenVINO
(:class:`~retinaface.deploy.openvino_backend.OpenVinoModel`) implement it. Any other ``nn.Module`` (a
width-switchable or fused wrapper, a ``torch.compile`` result) runs as PyTorch does:
:func:`runtime_traits` gives it :data:`PYTORCH_TRAITS`.

:data:`EXPORT_FORMATS` is the one place an export format is registered: its writer, the loader that
runs a written file and the parity check that compares it with PyTorch. ``retinaface export
--format``, :func:`retinaface.deploy.export.writers.export_model` and :func:`retinaface.deploy.runtime.load_exported`
all look formats up here. Entries name their functions as ``"module:function"`` so this module (and
``retinaface export --help``) imports nothing heavy.

Imports only the standard library: every layer may use it.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Dict, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

# the Detector's input to a model: (B, 3, H, W) float32, BGR minus the mean (conventions.BGR_MEAN)
INPUT_LAYOUT = "NCHW"
INPUT_DTYPE = "float32"
# raw outputs (loc, conf, landms); files exported with the decoding in the graph give DECODED ones
RAW_OUTPUTS: Tuple[str, ...] = ("loc", "conf", "landms")
# the runtimes a detector runs on (retinaface.deploy.runtime.resolve_runtime: "auto" picks by file type)
RUNTIMES: Tuple[str, ...] = ("auto", "pytorch", "onnxruntime", "openvino")
# the runtime columns of the deployment benchmark matrix (retinaface.benchmark_matrix)
MATRIX_RUNTIMES: Tuple[str, ...] = ("pytorch", "pytorch-fused", "onnxruntime", "onnxruntime-int8", "openvino",
                                    "openvino-int8")


@runtime_checkable
class RuntimeModel(Protocol):
    """A detector network as the Detector uses it.

    * ``input_layout`` / ``input_dtype``: what ``__call__`` takes (``"NCHW"``, ``"float32"``: BGR
      minus the mean);
    * ``fixed_input``: ``(batch, height, width)`` when the network takes one size only (an ONNX file
      exported without ``--dynamic``: the Detector letterboxes images into it and splits batches),
      ``None`` for any size;
    * ``outputs``: the names of what ``__call__`` returns, ``("loc", "conf", "landms")``;
    * ``takes_uint8``: whether :meth:`forward_uint8` takes ``(B, H, W, 3)`` uint8 BGR images and
      does the float conversion and the mean itself (the Detector then builds no float batch);
      a model without that path raises ``NotImplementedError`` there;
    * ``config``: the :class:`~retinaface.config.ModelConfig` the priors are built from.
    """

    input_layout: str
    input_dtype: str
    fixed_input: Optional[Tuple[int, int, int]]
    outputs: Tuple[str, ...]
    takes_uint8: bool
    config: Any

    def __call__(self, images: Any) -> Tuple[Any, Any, Any]: ...

    def forward_uint8(self, images: Any, mean: Sequence[float]) -> Tuple[Any, Any, Any]: ...


@dataclasses.dataclass(frozen=True)
class RuntimeTraits:
    """The declared members of a :class:`RuntimeModel` the Detector plans with."""

    input_layout: str = INPUT_LAYOUT
    input_dtype: str = INPUT_DTYPE
    fixed_input: Optional[Tuple[int, int, int]] = None
    outputs: Tuple[str, ...] = RAW_OUTPUTS
    takes_uint8: bool = False


# how PyTorch runs any nn.Module: float32 NCHW at any size, no uint8 door
PYTORCH_TRAITS = RuntimeTraits()


def runtime_traits(model: Any) -> RuntimeTraits:
    """``model``'s declared members when it implements :class:`RuntimeModel`, else PyTorch's."""
    if not isinstance(model, RuntimeModel):
        return PYTORCH_TRAITS
    fixed = model.fixed_input
    return RuntimeTraits(str(model.input_layout), str(model.input_dtype),
                         None if fixed is None else (int(fixed[0]), int(fixed[1]), int(fixed[2])),
                         tuple(model.outputs), bool(model.takes_uint8))


@runtime_checkable
class LandmarkModel(Protocol):
    """A dense-landmark model as :meth:`~retinaface.inference.detector.Detector.detect_and_landmark`
    and ``retinaface detect --landmarks`` use it (the networks of
    :func:`retinaface.landmarks.load_landmark_model` implement it; the detector's layer lies below
    ``landmarks``, so it knows the model by this interface only):

    * ``num_points``: K, the points per face;
    * ``scheme``: the name of the point layout (``"ibug68"``, ``"wflw98"``, ...) or ``None``;
    * ``landmarks_in_boxes(image, boxes, batch_size)``: ``(N, K, 2)`` points in the pixels of a BGR
      uint8 image for the faces in ``boxes`` (``(N, >= 4)`` rows ``x1 y1 x2 y2 ...``).
    """

    num_points: int
    scheme: Optional[str]

    def landmarks_in_boxes(self, image: Any, boxes: Any, batch_size: int = 64) -> Any: ...


FunctionRef = Union[str, Callable[..., Any]]


def resolve(ref: FunctionRef) -> Callable[..., Any]:
    """A function from ``"package.module:name"`` (imported on first use) or the function itself."""
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """One export format: what writes it, what runs a written file, what compares it with PyTorch.

    * ``writer(model, path, **options) -> metadata dict``: writes atomically and records the
      metadata of :func:`retinaface.deploy.export.metadata.build_metadata` (``options``: ``size``,
      ``with_postprocess``, ``width`` and the format's own ``options``);
    * ``loader(path, threads=None) -> run``: ``run((B, 3, H, W) float tensor)`` gives the file's
      outputs as CPU tensors;
    * ``parity(model, path, atol=...) -> ParityReport``: ``report.passed`` and ``report.lines()``.
    """

    name: str
    suffix: str
    description: str
    writer: FunctionRef
    loader: FunctionRef
    parity: FunctionRef
    options: Tuple[str, ...] = ()  # writer options only this format takes (the others are dropped)

    def write(self, model: Any, path: Any, **options: Any) -> Dict[str, str]:
        mine = {k: v for k, v in options.items() if k in _COMMON_OPTIONS or k in self.options}
        return resolve(self.writer)(model, path, **mine)

    def load(self, path: Any, threads: Optional[int] = None) -> Callable[[Any], Tuple[Any, ...]]:
        return resolve(self.loader)(path, threads=threads)

    def check(self, model: Any, path: Any, **kwargs: Any) -> Any:
        return resolve(self.parity)(model, path, **kwargs)


_COMMON_OPTIONS = ("size", "with_postprocess", "width")

EXPORT_FORMATS: Dict[str, ExportFormat] = {}


def register_export_format(fmt: ExportFormat) -> ExportFormat:
    """Add ``fmt`` to :data:`EXPORT_FORMATS` (a name is registered once)."""
    if fmt.name in EXPORT_FORMATS:
        raise ValueError(f"export format {fmt.name!r} is registered already")
    EXPORT_FORMATS[fmt.name] = fmt
    return fmt


def export_format(name: str) -> ExportFormat:
    """The registered format ``name``; ``ValueError`` naming the choices otherwise."""
    try:
        return EXPORT_FORMATS[name]
    except KeyError:
        raise ValueError(f"--format {name!r}: choose one of {', '.join(EXPORT_FORMATS)}") from None


register_export_format(ExportFormat(
    "onnx", ".onnx", "ONNX (ONNX Runtime, OpenVINO, TensorRT ...)",
    writer="retinaface.deploy.export.writers:export_onnx", loader="retinaface.deploy.runtime:run_onnx_file",
    parity="retinaface.deploy.parity:check_parity", options=("dynamic", "opset", "dynamo")))
register_export_format(ExportFormat(
    "torchscript", ".pt", "TorchScript (libtorch, size-generic)",
    writer="retinaface.deploy.export.writers:export_torchscript", loader="retinaface.deploy.runtime:run_torchscript_file",
    parity="retinaface.deploy.parity:check_parity"))
