"""ONNX export of embedding networks, with a parity check on ONNX Runtime.

:func:`export_embedder_onnx` writes the network (input ``"input"`` ``(B, 3, H, W)`` float32,
:func:`~retinaface.recognition.preprocess`'s normalization, output ``"embedding"`` ``(B, D)``,
*not* normalized, as the PyTorch model) atomically, with the embedder config and width as ONNX
metadata, and by default runs :func:`check_onnx_parity`: random crops through both runtimes at
batch 1 and 3 (a dynamic batch) must give embeddings within ``atol`` (default 1e-4 after L2
normalization, i.e. cosine similarity 1 - 5e-9) of each other. A channel-prioritised embedder is
exported at its current width.
"""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..fileio import atomic_write
from ..deploy.runtime import open_session
from .models import EmbedderConfig

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
DEFAULT_OPSET = 17


class ParityError(RuntimeError):
    """The exported file does not compute what the PyTorch model computes."""


@dataclasses.dataclass
class ParityReport:
    batches: Sequence[int]
    max_abs_diff: float     # of the L2-normalized embeddings
    min_cosine: float
    atol: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol

    def summary(self) -> str:
        return (f"parity on batches {list(self.batches)}: max |diff| {self.max_abs_diff:.2e} (normalized), "
                f"min cosine {self.min_cosine:.8f}, tolerance {self.atol:g}: {'ok' if self.ok else 'FAILED'}")


def _input_size(model: nn.Module) -> Sequence[int]:
    config = getattr(model, "config", None)
    size = getattr(config, "input_size", None) or getattr(model, "input_size", None) or (112, 112)
    return tuple(int(v) for v in size)


def _metadata(model: nn.Module) -> Dict[str, str]:
    config = getattr(model, "config", None)
    meta = {"producer": "retinaface", "kind": "face-embedder", "normalized_output": "false",
            "input": "RGB (pixel - 127.5) / 128, NCHW"}
    if config is not None and hasattr(config, "to_dict"):
        meta["embedder_config"] = json.dumps(config.to_dict())
    meta["width"] = str(float(getattr(model, "width", 1.0)))
    return meta


def export_embedder_onnx(model: nn.Module, path: Union[str, Path], dynamic_batch: bool = True,
                         opset: int = DEFAULT_OPSET, check: bool = True, atol: float = 1e-4,
                         overwrite: bool = False) -> Optional[ParityReport]:
    """Write ``model`` to ``path`` as ONNX (atomically); returns the parity report when ``check``.

    Refuses an existing ``path`` unless ``overwrite``. Raises :class:`ParityError` (and leaves no
    file) when the check fails.
    """
    import onnx

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another name or pass overwrite=True")
    was_training = model.training
    model = model.eval()
    height, width = _input_size(model)
    example = torch.zeros(1, 3, height, width)
    buffer = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    try:
        with torch.no_grad():
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                              do_constant_folding=True)
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in _metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    report = None
    if check:
        report = check_onnx_parity(model, data, batches=(1, 3) if dynamic_batch else (1,), atol=atol)
        if not report.ok:
            raise ParityError(f"{path}: {report.summary()}")
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return report


def check_onnx_parity(model: nn.Module, onnx_model: Union[bytes, str, Path], batches: Sequence[int] = (1, 3),
                      atol: float = 1e-4, seed: int = 0) -> ParityReport:
    """Compare ``model`` with the ONNX file (or its bytes) on random inputs of each batch size."""
    session = open_session(onnx_model)
    height, width = _input_size(model)
    rng = np.random.default_rng(seed)
    worst, min_cos = 0.0, 1.0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for batch in batches:
            x = rng.uniform(-1.0, 1.0, size=(batch, 3, height, width)).astype(np.float32)
            with torch.no_grad():
                ref = model(torch.from_numpy(x).to(device)).float().cpu().numpy()
            got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
            if got.shape != ref.shape:
                raise ParityError(f"ONNX output shape {got.shape} differs from PyTorch's {ref.shape}")
            if not np.isfinite(got).all():
                raise ParityError("ONNX output holds NaN or infinity")
            ref_n = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
            got_n = got / np.maximum(np.linalg.norm(got, axis=1, keepdims=True), 1e-12)
            worst = max(worst, float(np.abs(ref_n - got_n).max()))
            min_cos = min(min_cos, float((ref_n * got_n).sum(axis=1).min()))
    finally:
        model.train(was_training)
    return ParityReport(tuple(batches), worst, min_cos, atol)


class OnnxEmbedder:
    """An exported embedder on ONNX Runtime with the PyTorch module's call signature
    (``(B, 3, H, W)`` tensor -> ``(B, D)`` tensor), usable by :class:`FaceAnalyzer`."""

    def __init__(self, path: Union[str, Path], providers: Optional[Sequence[str]] = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        self.session = open_session(self.path, providers=providers)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.device = torch.device("cpu")
        self.training = False
        self.config = None
        if "embedder_config" in meta:
            self.config = EmbedderConfig.from_dict(json.loads(meta["embedder_config"]))

    def eval(self) -> "OnnxEmbedder":
        return self

    def to(self, device) -> "OnnxEmbedder":
        return self

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: batch.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(out)
