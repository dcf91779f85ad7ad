"""Checkpoint files of embedding networks: :func:`save_embedder` and :func:`load_embedder`.

A checkpoint holds only tensors and plain values: ``{"format": "retinaface-embedder",
"format_version": 1, "config": embedder config dict, "model": state dict, ...}`` (a training run's
``last.pth`` / ``best.pth`` / ``epoch_NNN.pth`` add its training state and the loss head);
:func:`load_embedder` rebuilds the network with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import nn

from ..checkpoint import CheckpointError, read_checkpoint, unwrap_model
from ..fileio import atomic_torch_save
from .adaptive_embedder import build_adaptive_embedder
from .models import create_embedder

EMBEDDER_FORMAT = "retinaface-embedder"
EMBEDDER_FORMAT_VERSION = 1


def build_embedder_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Deprecated: ``create_embedder(config)`` builds the network an embedder config describes."""
    warnings.warn("build_embedder_from_config(config) is deprecated; use create_embedder(config)",
                  DeprecationWarning, stacklevel=2)
    return create_embedder(config)


def embedder_config_dict(model: nn.Module) -> Dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"{type(model).__name__} has no .config: not an embedder of this toolkit")
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def save_embedder(model: nn.Module, path: Union[str, Path], **extra: Any) -> None:
    """Write ``model`` (config + weights) and ``extra`` plain entries atomically to ``path``."""
    model = unwrap_model(model)
    payload = {"format": EMBEDDER_FORMAT, "format_version": EMBEDDER_FORMAT_VERSION,
               "config": embedder_config_dict(model), "model": model.state_dict()}
    if getattr(model, "adaptive_spec", None):
        payload["adaptive"] = model.adaptive_spec  # plain data: pruned shapes and width slicing
    payload.update(extra)
    atomic_torch_save(payload, path)


def load_embedder(path: Union[str, Path], device: Union[str, torch.device] = "cpu",
                  width: Optional[float] = None) -> nn.Module:
    """An embedding network from a checkpoint of :func:`save_embedder` (or a trainer's
    ``last.pth`` / ``best.pth``), in eval mode. ``width`` runs a channel-prioritised checkpoint at
    that level. Errors (:class:`retinaface.checkpoint.CheckpointError`) name the file."""
    data = read_checkpoint(path)
    if data.get("format") != EMBEDDER_FORMAT:
        hint = " (a detector checkpoint: use it as --detector)" if data.get("format") == "retinaface" else ""
        raise CheckpointError(f"{path}: not a face-embedding checkpoint{hint}")
    if int(data.get("format_version", 0)) > EMBEDDER_FORMAT_VERSION:
        raise CheckpointError(f"{path}: embedder format version {data['format_version']} is newer than this "
                              f"toolkit understands")
    if not isinstance(data.get("config"), dict) or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{path}: embedder checkpoint without its config or model entry")
    try:
        if data.get("adaptive"):
            model = build_adaptive_embedder(data["config"], data["adaptive"])
        else:
            model = create_embedder(data["config"])
        missing, unexpected = model.load_state_dict(data["model"], strict=False)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the network its config describes: "
                              f"{str(exc).splitlines()[0]}") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(f"{path}: {len(missing)} missing / {len(unexpected)} unexpected weights "
                              f"(e.g. {(missing + unexpected)[:3]})")
    if width is not None:
        if hasattr(model, "set_width"):
            model.set_width(width)
        elif float(width) != 1.0:
            raise CheckpointError(f"{path}: width {width} needs a channel-prioritised embedder; this one "
                                  f"runs at width 1.0 only")
    return model.to(device).eval()
