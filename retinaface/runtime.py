"""Running exported files: the one place that opens ONNX Runtime sessions.

Owns :func:`open_session` (every ``onnxruntime.InferenceSession`` of the toolkit is made here),
:class:`OnnxRuntimeModel`, a drop-in for the PyTorch network inside :class:`retinaface.Detector`,
and :func:`load_exported`, a plain function running any exported file (ONNX or TorchScript, used by
the parity check). :class:`OnnxRuntimeModel` opens an ``.onnx`` file written by
:mod:`retinaface.export` (raw outputs, i.e. exported without ``with_postprocess``), rebuilds the
:class:`ModelConfig` from the file's metadata, and is called like the torch model: a
``(B, 3, H, W)`` float tensor in, ``(loc, conf, landms)`` tensors out. Pre- and post-processing stay
the Detector's, so both backends share one pipeline.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch

from .checkpoint import load_model
from .config import ModelConfig
from .export.metadata import (EXPORT_FORMAT, RAW_OUTPUTS, ExportedModel, ExportError, first_line, quiet_torchscript,
                              read_metadata)
from .export.writers import export_onnx, load_for_export
from .openvino_backend import load_openvino_model
from .runtime_interface import export_format
from .zoo import file_digest, resolve_weights

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


class OnnxRuntimeModel(ExportedModel):
    """An exported RetinaFace run by ONNX Runtime, usable wherever the Detector expects the model.

    ``providers`` default to ``["CPUExecutionProvider"]``; pass e.g.
    ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` for a GPU build of onnxruntime.
    Outputs are returned on the device of the input tensor. ``eval()``, ``to()`` and ``train(False)``
    are accepted and do nothing (the file is an inference graph); there are no parameters.
    ``fixed_input`` is ``(batch, height, width)`` for a file exported without ``--dynamic`` (the
    Detector letterboxes images into it), ``None`` for a size-generic one.
    """

    runtime_name = "ONNX Runtime"

    def __init__(self, path: PathLike, providers: Optional[Sequence[str]] = None,
                 session_options: Optional[Any] = None) -> None:
        self.path = Path(path)
        self.session = open_session(self.path, providers, session_options)
        self.metadata: Dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("format") != EXPORT_FORMAT:
            raise ExportError(f"{self.path}: no retinaface metadata (export it with tools/export.py)")
        if json.loads(self.metadata.get("with_postprocess", "false")):
            raise ExportError(f"{self.path}: exported with --with-postprocess (boxes/scores/landmarks); "
                              f"the Detector needs the raw outputs, export without it")
        try:
            self.config = ModelConfig.from_dict(json.loads(self.metadata["config"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise ExportError(f"{self.path}: unusable config metadata ({exc})") from None
        self.input_name = self.session.get_inputs()[0].name
        names = [out.name for out in self.session.get_outputs()]
        if tuple(names) != RAW_OUTPUTS:
            raise ExportError(f"{self.path}: outputs are {names}, expected {list(RAW_OUTPUTS)}")
        # static exports have integer dims; dynamic ones have names (strings)
        self._set_input_shape(self.session.get_inputs()[0].shape)
        self.device = torch.device("cpu")

    @property
    def backbone(self) -> str:
        return self.config.backbone

    def __call__(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._check_shape(tuple(images.shape))
        # ORT needs a C-contiguous float32 array (the Detector may hand over channels_last)
        feed = {self.input_name: images.detach().to("cpu", torch.float32).contiguous().numpy()}
        loc, conf, landms = self.session.run(None, feed)
        return tuple(torch.from_numpy(out).to(images.device) for out in (loc, conf, landms))

    def __repr__(self) -> str:
        return (f"OnnxRuntimeModel({str(self.path)!r}, backbone={self.config.backbone!r}, "
                f"providers={self.session.get_providers()})")


def load_onnx_model(path: PathLike, backbone: Optional[str] = None,
                    providers: Optional[Sequence[str]] = None) -> OnnxRuntimeModel:
    """:class:`OnnxRuntimeModel` of ``path``; a given ``backbone`` must be the one the file holds
    (as :func:`retinaface.load_model` insists for this toolkit's checkpoints)."""
    model = OnnxRuntimeModel(path, providers=providers)
    if backbone is not None and backbone != model.config.backbone:
        raise ExportError(f"{path}: ONNX file holds backbone {model.config.backbone!r}, not {backbone!r}")
    return model


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
RUNTIMES = ("auto", "pytorch", "onnxruntime", "openvino")


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
    import tempfile

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

            model = load_for_export(weights, backbone=backbone, width=width)
            export_onnx(model, target, dynamic=True, width=width)
            return target
        except PermissionError:
            continue  # a read-only checkpoint folder: the temporary cache
    raise ExportError(f"{weights}: cannot write an ONNX export beside it or in the temporary folder")


def detector_onnx_model(path: PathLike, threads: Optional[int] = None,
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


def load_runtime_model(weights: PathLike, runtime: str = "auto", backbone: Optional[str] = None,
                       width: Optional[float] = None, device: str = "cpu", threads: Optional[int] = None,
                       providers: Optional[Sequence[str]] = None) -> Any:
    """A Detector-ready model of ``weights`` (a file or a zoo name) on ``runtime`` (see
    :func:`resolve_runtime`).

    A ``.pth`` checkpoint asked to run on ``onnxruntime`` or ``openvino`` is exported first
    (:func:`cached_onnx_export`); ``width`` then selects an adaptive checkpoint's width at export.
    ``threads`` caps the runtime's intra-op threads.
    """
    weights = resolve_weights(weights)  # a zoo name becomes its cached, verified file
    chosen = resolve_runtime(weights, runtime)
    is_onnx = Path(weights).suffix.lower() == ".onnx"
    if chosen == "pytorch":
        return load_model(weights, backbone=backbone, device=device, width=width)
    if is_onnx and width is not None:
        raise ValueError(f"{weights}: --width needs the PyTorch checkpoint; an ONNX file runs at the width "
                         f"it was exported with")
    path = Path(weights) if is_onnx else cached_onnx_export(weights, backbone=backbone, width=width)
    if chosen == "openvino":
        return load_openvino_model(path, backbone=backbone if is_onnx else None, threads=threads)
    model = detector_onnx_model(path, threads=threads, providers=providers)
    if is_onnx and backbone is not None and backbone != model.config.backbone:
        raise ExportError(f"{path}: ONNX file holds backbone {model.config.backbone!r}, not {backbone!r}")
    return model


__all__ = ["OnnxRuntimeModel", "RUNTIMES", "cached_onnx_export", "detector_onnx_model", "load_exported",
           "load_onnx_model", "load_runtime_model", "open_session", "resolve_runtime"]
