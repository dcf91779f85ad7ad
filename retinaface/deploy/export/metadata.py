"""The contract an exported file carries: names, defaults, metadata written and read back.

Every fact about an exported file that a writer, a runtime and a parity check must agree on is
stated here once: the metadata keys (:func:`build_metadata`, :func:`read_metadata`), the input and
output names, the export defaults, and :class:`ExportError`. This module imports torch only when it
reads a TorchScript file and onnx only when it reads an ONNX file.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

from ...conventions import BGR_MEAN, first_line  # first_line: re-exported for the export modules
from ...fileio import atomic_write
from ...runtime_interface import INPUT_DTYPE, INPUT_LAYOUT, RAW_OUTPUTS
from ...version import __version__

PathLike = Union[str, Path]

EXPORT_FORMAT = "retinaface-export"
EXPORT_FORMAT_VERSION = 1
INPUT_NAME = "input"
DECODED_OUTPUTS = ("boxes", "scores", "landmarks")
TORCHSCRIPT_METADATA_FILE = "retinaface_metadata.json"
DEFAULT_SIZE = (640, 640)
MIN_OPSET = 17
# the coarsest level (stride 32) must have more than one cell, or export specialises on it
MIN_DYNAMIC_SIDE = 33
MAX_DYNAMIC_SIDE = 8192
# which network a file holds; detector files carry no such key (see export_task)
TASK_KEY = "task"
DETECTION_TASK = "detection"

OUTPUT_DESCRIPTIONS = {
    "loc": "(B,P,4) box offsets against the priors, variance-encoded",
    "conf": "(B,P,2) softmax scores, column 1 = face",
    "landms": "(B,P,10) landmark offsets against the priors, variance-encoded",
    "boxes": "(B,P,4) x1,y1,x2,y2 in input pixels (not clipped, before NMS)",
    "scores": "(B,P) face probability",
    "landmarks": "(B,P,10) five x,y points in input pixels",
}


class ExportError(RuntimeError):
    """An export could not be made, read or checked; the message is one line naming the file or argument."""


def provenance_metadata(fmt: str) -> Dict[str, str]:
    """The keys every exported file of this toolkit opens with, whatever network it holds: the
    export format and its version, the toolkit and torch versions, the file format."""
    import torch

    return {"format": EXPORT_FORMAT, "format_version": str(EXPORT_FORMAT_VERSION), "toolkit_version": __version__,
            "torch_version": torch.__version__, "file_format": fmt}


def write_onnx_file(proto: Any, metadata: Dict[str, str], path: PathLike, doc: Optional[str] = None) -> None:
    """Write the ONNX model ``proto`` to ``path`` atomically with ``metadata`` as its only
    ``metadata_props`` (and ``doc`` as its doc string, when given)."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    if doc is not None:
        proto.doc_string = doc
    data = proto.SerializeToString()
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def export_task(metadata: Dict[str, str]) -> str:
    """What network an exported file holds: its ``task`` key (``"landmarks"``), ``"detection"`` when
    absent (detector files, including those written before the key existed)."""
    return metadata.get(TASK_KEY, DETECTION_TASK)


def build_metadata(model: Any, fmt: str, with_postprocess: bool, dynamic: bool,
                   size: Sequence[int], opset: Optional[int] = None,
                   width: Optional[float] = None) -> Dict[str, str]:
    """The input contract and provenance recorded in an exported file (string keys and values).

    ``model`` is the exported network (its ``config`` is recorded); ``size`` ``(H, W)`` is the
    export size, the fixed input of a non-dynamic file.
    """
    config = model.config
    outputs = DECODED_OUTPUTS if with_postprocess else RAW_OUTPUTS
    meta = {
        **provenance_metadata(fmt),
        "backbone": config.backbone,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "input_name": INPUT_NAME,
        "input_layout": INPUT_LAYOUT,
        "input_dtype": INPUT_DTYPE,
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


def is_torchscript_file(path: PathLike) -> bool:
    """TorchScript files are zip archives; ONNX files are bare protobuf."""
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence torch's "torch.jit.* is deprecated" notices: TorchScript output is asked for on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def read_metadata(path: PathLike) -> Dict[str, str]:
    """The metadata :func:`build_metadata` wrote into an ``.onnx`` or TorchScript file."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: file not found")
    if is_torchscript_file(path):
        import torch

        extra = {TORCHSCRIPT_METADATA_FILE: ""}
        try:
            with quiet_torchscript():
                torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:
            raise ExportError(f"{path}: not a loadable TorchScript file ({first_line(exc)})") from None
        if not extra[TORCHSCRIPT_METADATA_FILE]:
            raise ExportError(f"{path}: TorchScript file without {TORCHSCRIPT_METADATA_FILE} "
                              f"(not exported by retinaface)")
        return json.loads(extra[TORCHSCRIPT_METADATA_FILE])
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"{path}: not a readable ONNX file ({first_line(exc)})") from None
    return {prop.key: prop.value for prop in proto.metadata_props}


class ExportedModel:
    """What a model run by another runtime (ONNX Runtime, OpenVINO) offers the Detector in place
    of an ``nn.Module``: the :class:`~retinaface.runtime_interface.RuntimeModel` members (a call on
    a ``(B, 3, H, W)`` float32 batch, ``fixed_input`` from the file's input shape, no uint8 door
    unless a subclass has one) and the ``nn.Module`` look-alikes the Detector uses (``eval()``,
    ``to()`` and ``train(False)`` accepted and doing nothing: the file is an inference graph).
    Subclasses set ``path``, ``config`` and ``runtime_name``, call :meth:`_set_input_shape` and
    implement ``__call__``.
    """

    input_layout = INPUT_LAYOUT
    input_dtype = INPUT_DTYPE
    outputs = RAW_OUTPUTS
    takes_uint8 = False
    config: Any
    training = False
    runtime_name = "external runtime"
    path: Path
    input_shape: Tuple[Any, ...] = ()
    # (batch, height, width) of a file exported without --dynamic (the Detector letterboxes images
    # into it); None for a size-generic file
    fixed_input: Optional[Tuple[int, int, int]] = None

    def _set_input_shape(self, dims: Sequence[Any]) -> None:
        """Record the file's input dims: integers where static, anything else (a name, None) where dynamic."""
        self.input_shape = tuple(dims)
        static = len(dims) == 4 and all(isinstance(d, int) for d in (dims[0], dims[2], dims[3]))
        self.fixed_input = (int(dims[0]), int(dims[2]), int(dims[3])) if static else None

    def _check_shape(self, shape: Tuple[int, ...]) -> None:
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"{self.path.name}: expected a (B, 3, H, W) input, got {shape}")
        if any(isinstance(dim, int) and shape[i] != dim for i, dim in enumerate(self.input_shape)):
            raise ValueError(f"{self.path.name}: fixed input shape {self.input_shape} (exported without "
                             f"--dynamic), got {shape}; re-export with --dynamic or resize to it")

    def forward(self, images: Any) -> Any:
        return self(images)

    def forward_uint8(self, images: Any, mean: Sequence[float]) -> Any:
        raise NotImplementedError(f"{self.path.name}: {self.runtime_name} takes float32 batches only")

    def eval(self) -> "ExportedModel":
        return self

    def train(self, mode: bool = True) -> "ExportedModel":
        if mode:
            raise RuntimeError(f"{self.path.name}: an {self.runtime_name} model cannot be trained")
        return self

    def to(self, *args: Any, **kwargs: Any) -> "ExportedModel":
        return self


__all__ = ["DECODED_OUTPUTS", "DEFAULT_SIZE", "DETECTION_TASK", "EXPORT_FORMAT", "EXPORT_FORMAT_VERSION", "ExportError",
           "ExportedModel", "TASK_KEY", "export_task", "provenance_metadata",
           "INPUT_NAME", "MAX_DYNAMIC_SIDE", "MIN_DYNAMIC_SIDE", "MIN_OPSET", "OUTPUT_DESCRIPTIONS",
           "RAW_OUTPUTS", "TORCHSCRIPT_METADATA_FILE", "build_metadata", "first_line",
           "is_torchscript_file", "quiet_torchscript", "read_metadata"]
