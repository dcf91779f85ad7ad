"""Running exported files: the one place that opens ONNX Runtime sessions.

Owns :func:`load_runtime`, the door to a Detector-ready model of any file this toolkit runs (a
checkpoint or a TorchScript export on PyTorch, an ``.onnx`` file on ONNX Runtime or OpenVINO, a
checkpoint exported to ONNX once for those runtimes), :func:`open_session` (every
``onnxruntime.InferenceSession`` of the toolkit is made here), :class:`OnnxRuntimeModel` and
:class:`TorchScriptModel`, drop-ins for the PyTorch network inside :class:`retinaface.Detector`,
and :func:`load_exported`, a plain function running any exported file (ONNX or TorchScript, used by
the parity check). :class:`OnnxRuntimeModel` opens an ``.onnx`` file written by
:mod:`retinaface.deploy.export` (raw outputs, i.e. exported without ``with_postprocess``), rebuilds the
:class:`ModelConfig` from the file's metadata, and is called like the torch model: a
``(B, 3, H, W)`` float tensor in, ``(loc, conf, landms)`` tensors out. Pre- and post-processing stay
the Detector's, so both backends share one pipeline.
"""
from __future__ import annotations

import json
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch

from ..checkpoint import load_model
from ..config import ModelConfig
from .export.metadata import (DETECTION_TASK, EXPORT_FORMAT, TORCHSCRIPT_METADATA_FILE, ExportedModel,
                              ExportError, export_task, first_line, is_torchscript_file, quiet_torchscript,
                              read_metadata)
from .export.writers import export_onnx
from .openvino_backend import OpenVinoModel
from ..runtime_interface import RUNTIMES, RuntimeModel, export_format
from ..zoo import file_digest, resolve_weights

PathLike = Union[str, Path]


def open_session(path: Union[PathLike, bytes], providers: Optional[Sequence[str]] = None,
                 session_options: Optional[Any] = None, threads: Optional[int] = None) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``path``; ``ExportError`` naming the file if it cannot
    be opened. ``providers`` default to ``["CPUExecutionProvider"]``; ``threads`` sets the intra-op
    thread count (on a fresh ``SessionOptions`` when none are given)."""
    import onnxruntime as ort

    if isinstance(path, bytes):  # an in-memory model (a parity check before the file is written)
        source, name = path, "in-memory ONNX model"
    else:
        path = Path(path)
        if not path.is_file():
            raise ExportError(f"{path}: ONNX file not found")
        source, name = str(path), str(path)
    if threads:
        session_options = session_options or ort.SessionOptions()
        session_options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(source, session_options, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # onnxruntime's errors are not RuntimeErrors
        raise ExportError(f"{name}: ONNX Runtime cannot open it ({first_line(exc)})") from None


class OnnxSessionModel(ExportedModel):
    """An exported file of this toolkit run by ONNX Runtime, whatever network it holds: the session
    and the file's metadata (:meth:`_open`), the output names checked against the class's
    ``outputs`` and the input shape read from the file (:meth:`_bind_io`, after the subclass has
    read its facts from the metadata, so a file of another kind is named as such), and one batch
    run (:meth:`_run`: a C-contiguous float32 feed, outputs back on the input's device)."""

    runtime_name = "ONNX Runtime"

    def _open(self, path: PathLike, providers: Optional[Sequence[str]] = None, session_options: Optional[Any] = None,
              threads: Optional[int] = None) -> None:
        self.path = Path(path)
        self.session = open_session(self.path, providers, session_options, threads=threads)
        self.metadata: Dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    def _bind_io(self) -> None:
        self.input_name = self.session.get_inputs()[0].name
        names = [out.name for out in self.session.get_outputs()]
        if tuple(names) != tuple(self.outputs):
            raise ExportError(f"{self.path}: outputs are {names}, expected {list(self.outputs)}")
        # static exports have integer dims; dynamic ones have names (strings)
        self._set_input_shape(self.session.get_inputs()[0].shape)
        self.device = torch.device("cpu")

    def _run(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self._check_shape(tuple(images.shape))
        # ORT needs a C-contiguous float32 array (the Detector may hand over channels_last)
        feed = {self.input_name: images.detach().to("cpu", torch.float32).contiguous().numpy()}
        return tuple(torch.from_numpy(out).to(images.device) for out in self.session.run(None, feed))


class OnnxRuntimeModel(OnnxSessionModel):
    """An exported RetinaFace run by ONNX Runtime, usable wherever the Detector expects the model.

    ``providers`` default to ``["CPUExecutionProvider"]``; pass e.g.
    ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` for a GPU build of onnxruntime.
    Outputs are returned on the device of the input tensor. ``eval()``, ``to()`` and ``train(False)``
    are accepted and do nothing (the file is an inference graph); there are no parameters.
    ``fixed_input`` is ``(batch, height, width)`` for a file exported without ``--dynamic`` (the
    Detector letterboxes images into it), ``None`` for a size-generic one.
    """

    def __init__(self, path: PathLike, providers: Optional[Sequence[str]] = None,
                 session_options: Optional[Any] = None) -> None:
        self._open(path, providers, session_options)
        self.config = _export_config(self.path, self.metadata)
        self._bind_io()

    @property
    def backbone(self) -> str:
        return self.config.backbone

    def __call__(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._run(images)

    def __repr__(self) -> str:
        return (f"OnnxRuntimeModel({str(self.path)!r}, backbone={self.config.backbone!r}, "
                f"providers={self.session.get_providers()})")


def _export_config(path: Path, metadata: Dict[str, str]) -> ModelConfig:
    """The :class:`ModelConfig` an exported file of raw outputs records; ``ExportError`` naming the
    file when it is not this toolkit's or holds decoded outputs."""
    if metadata.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path}: no retinaface metadata (export it with `retinaface export`)")
    if export_task(metadata) != DETECTION_TASK:
        raise ExportError(f"{path}: a {export_task(metadata)} network, not a face detector (run it with "
                          f"retinaface.landmarks or `retinaface eval-landmarks --weights`)")
    if json.loads(metadata.get("with_postprocess", "false")):
        raise ExportError(f"{path}: exported with --with-postprocess (boxes/scores/landmarks); "
                          f"the Detector needs the raw outputs, export without it")
    try:
        return ModelConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise ExportError(f"{path}: unusable config metadata ({exc})") from None


class TorchScriptModel(ExportedModel):
    """A TorchScript file written by :mod:`retinaface.deploy.export` (raw outputs), run by PyTorch wherever
    the Detector expects the model. Traced exports take any batch and size (``fixed_input`` is
    None); ``device`` is where the module runs (outputs come back on the input's device)."""

    runtime_name = "TorchScript"

    def __init__(self, path: PathLike, device: Union[str, torch.device] = "cpu") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"{self.path}: TorchScript file not found")
        self.device = torch.device(device)
        extra = {TORCHSCRIPT_METADATA_FILE: ""}
        try:
            with quiet_torchscript():
                self.module = torch.jit.load(str(self.path), map_location=self.device, _extra_files=extra)
        except Exception as exc:  # torch's loader raises several types for a damaged or foreign file
            raise ExportError(f"{self.path}: not a loadable TorchScript file ({first_line(exc)})") from None
        try:
            self.metadata: Dict[str, str] = json.loads(extra[TORCHSCRIPT_METADATA_FILE] or "{}")
        except ValueError:
            raise ExportError(f"{self.path}: unreadable {TORCHSCRIPT_METADATA_FILE}") from None
        self.config = _export_config(self.path, self.metadata)
        self.module.eval()

    @property
    def backbone(self) -> str:
        return self.config.backbone

    def __call__(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._check_shape(tuple(images.shape))
        with torch.no_grad():
            outputs = self.module(images.to(self.device, torch.float32))
        return tuple(out.to(images.device) for out in outputs)

    def __repr__(self) -> str:
        return f"TorchScriptModel({str(self.path)!r}, backbone={self.config.backbone!r}, device={str(self.device)!r})"


def is_torchscript_export(path: PathLike) -> bool:
    """Whether ``path`` is a TorchScript file carrying this toolkit's export metadata (a zip archive
    holding ``extra/retinaface_metadata.json``; a ``torch.save`` checkpoint is a zip archive too,
    without it). Reads the archive's index only."""
    try:
        if not is_torchscript_file(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(f"extra/{TORCHSCRIPT_METADATA_FILE}") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False



def load_exported(path: PathLike, threads: Optional[int] = None
                  ) -> Callable[[torch.Tensor], Tuple[torch.Tensor, ...]]:
    """A function running an exported file with the loader
    :data:`~retinaface.runtime_interface.EXPORT_FORMATS` registers for the format its metadata
    names: a ``(B, 3, H, W)`` float tensor in, the file's outputs as CPU tensors out."""
    path = Path(path)
    fmt = read_metadata(path).get("file_format", "onnx")
    try:
        registered = export_format(fmt)
    except ValueError:
        raise ExportError(f"{path}: written in format {fmt!r}, which this toolkit does not register") from None
    return registered.load(path, threads=threads)


def run_torchscript_file(path: PathLike, threads: Optional[int] = None
                         ) -> Callable[[torch.Tensor], Tuple[torch.Tensor, ...]]:
    """The loader of the ``torchscript`` format (``threads`` is torch's own setting: unused)."""
    with quiet_torchscript():
        module = torch.jit.load(str(path), map_location="cpu")

    def run_torchscript(images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        with torch.no_grad():
            return tuple(module(images))
    return run_torchscript


def run_onnx_file(path: PathLike, threads: Optional[int] = None
                  ) -> Callable[[torch.Tensor], Tuple[torch.Tensor, ...]]:
    """The loader of the ``onnx`` format: ONNX Runtime on the CPU."""
    session = open_session(path, threads=threads)
    input_name = session.get_inputs()[0].name

    def run_onnx(images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feed = {input_name: images.detach().cpu().float().contiguous().numpy()}
        return tuple(torch.from_numpy(out) for out in session.run(None, feed))
    return run_onnx


# -- runtime selection ---------------------------------------------------------------------------


def resolve_runtime(weights: PathLike, runtime: str = "auto") -> str:
    """The runtime ``runtime`` means for ``weights``: ``auto`` is ONNX Runtime for an ``.onnx`` file
    (the fastest correct path measured here) and PyTorch otherwise."""
    if runtime not in RUNTIMES:
        raise ValueError(f"--runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    is_onnx = Path(weights).suffix.lower() == ".onnx"
    if runtime == "auto":
        return "onnxruntime" if is_onnx else "pytorch"
    if runtime == "pytorch" and is_onnx:
        raise ValueError(f"{weights}: an ONNX file cannot run on PyTorch; use --runtime onnxruntime or openvino")
    return runtime


def cached_onnx_export(weights: PathLike, backbone: Optional[str] = None, width: Optional[float] = None,
                       cache_dir: Optional[PathLike] = None) -> Path:
    """A dynamic-shape ONNX export of checkpoint ``weights``, made once and kept beside it.

    The file is ``.<name>.<sha256 of the checkpoint, 16 hex>[-w<width>].onnx`` in the checkpoint's
    folder (or ``cache_dir``; a temporary folder when neither is writable), so a changed checkpoint
    gets a fresh export and an unchanged one is reused. Written atomically.
    """
    weights = Path(weights)
    if not weights.is_file():
        raise ExportError(f"{weights}: checkpoint file not found")
    tag = f"-w{width:g}" if width is not None else ""
    name = f".{weights.stem}.{file_digest(weights)[:16]}{tag}.onnx"
    folders = [Path(cache_dir)] if cache_dir is not None else [weights.parent]
    folders.append(Path(tempfile.gettempdir()) / "retinaface-onnx-cache")
    for folder in folders:
        target = folder / name
        if target.is_file():
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
            model = load_model(weights, backbone=backbone, width=width)
            export_onnx(model, target, dynamic=True, width=width)
            return target
        except PermissionError:
            continue  # a read-only checkpoint folder: the temporary cache
    raise ExportError(f"{weights}: cannot write an ONNX export beside it or in the temporary folder")


def _detector_onnx_model(path: PathLike, threads: Optional[int] = None,
                        providers: Optional[Sequence[str]] = None) -> OnnxRuntimeModel:
    """:class:`OnnxRuntimeModel` of an ``.onnx`` file set up for detection: ``threads`` intra-op
    threads, and workers that do not spin after a run (they would slow the post-processing that
    follows; measured: docs/edge.md)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return OnnxRuntimeModel(path, providers=providers, session_options=options)


def load_runtime(path: PathLike, runtime: str = "auto", backbone: Optional[str] = None,
                 width: Optional[float] = None, device: str = "cpu", threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None) -> RuntimeModel:
    """A Detector-ready model of ``path`` (a checkpoint, an ``.onnx`` or TorchScript export, or a
    zoo name) on ``runtime`` (see :func:`resolve_runtime`): the model :func:`retinaface.load_model`
    loads, a :class:`TorchScriptModel`, an :class:`OnnxRuntimeModel` or an
    :class:`~retinaface.deploy.openvino_backend.OpenVinoModel`. A given ``backbone`` must be the one an
    exported file holds.

    A ``.pth`` checkpoint asked to run on ``onnxruntime`` or ``openvino`` is exported first
    (:func:`cached_onnx_export`); ``width`` then selects an adaptive checkpoint's width at export.
    ``threads`` caps the runtime's intra-op threads; ``providers`` are ONNX Runtime's.
    """
    weights = resolve_weights(path)  # a zoo name becomes its cached, verified file
    chosen = resolve_runtime(weights, runtime)
    is_onnx = Path(weights).suffix.lower() == ".onnx"
    exported = is_onnx or is_torchscript_export(weights)
    if exported and width is not None:
        raise ValueError(f"{weights}: --width needs the PyTorch checkpoint; an exported file runs at the width "
                         f"it was exported with")
    if not is_onnx and exported:
        if chosen != "pytorch":
            raise ValueError(f"{weights}: a TorchScript file runs on PyTorch only, not {chosen}")
        model: Any = TorchScriptModel(weights, device=device)
    elif chosen == "pytorch":
        return load_model(weights, backbone=backbone, device=device, width=width)
    else:
        onnx_path = Path(weights) if is_onnx else cached_onnx_export(weights, backbone=backbone, width=width)
        if chosen == "openvino":
            model = OpenVinoModel(onnx_path, threads=threads)
        else:
            model = _detector_onnx_model(onnx_path, threads=threads, providers=providers)
    if exported and backbone is not None and backbone != model.config.backbone:
        raise ExportError(f"{weights}: exported file holds backbone {model.config.backbone!r}, not {backbone!r}")
    return model


def load_runtime_model(weights: PathLike, runtime: str = "auto", backbone: Optional[str] = None,
                       width: Optional[float] = None, device: str = "cpu", threads: Optional[int] = None,
                       providers: Optional[Sequence[str]] = None) -> RuntimeModel:
    """Deprecated alias of :func:`load_runtime`, kept for one release."""
    warnings.warn("retinaface.deploy.runtime.load_runtime_model is deprecated; use retinaface.load_runtime",
                  DeprecationWarning, stacklevel=2)
    return load_runtime(weights, runtime, backbone=backbone, width=width, device=device, threads=threads,
                        providers=providers)


def load_onnx_model(path: PathLike, backbone: Optional[str] = None,
                    providers: Optional[Sequence[str]] = None) -> OnnxRuntimeModel:
    """Deprecated: ``load_runtime(path, "onnxruntime", backbone=..., providers=...)``, kept for one
    release."""
    warnings.warn("retinaface.deploy.runtime.load_onnx_model is deprecated; use "
                  "retinaface.load_runtime(path, 'onnxruntime')", DeprecationWarning, stacklevel=2)
    return load_runtime(path, "onnxruntime", backbone=backbone, providers=providers)


__all__ = ["OnnxRuntimeModel", "RUNTIMES", "TorchScriptModel", "cached_onnx_export", "is_torchscript_export",
           "load_exported", "load_runtime", "open_session", "resolve_runtime"]
