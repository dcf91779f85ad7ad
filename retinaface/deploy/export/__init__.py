"""Deployment export: ONNX and TorchScript files of a RetinaFace model.

* :mod:`retinaface.deploy.export.metadata`: the file contract (input/output names, recorded metadata,
  :class:`ExportError`), shared with :mod:`retinaface.deploy.runtime` and :mod:`retinaface.deploy.parity`;
* :mod:`retinaface.deploy.export.writers`: :func:`export_onnx`, :func:`export_torchscript`,
  :func:`export_model` (the model comes from :func:`retinaface.load_model`).

The in-graph decoding (``with_postprocess``) is :class:`retinaface.inference.postprocess.DecodedRetinaFace`;
its priors are :func:`retinaface.priors.pixel_priors`; running a written file is
:func:`retinaface.deploy.runtime.load_exported`; comparing it with PyTorch is
:func:`retinaface.deploy.parity.check_parity`.
"""
from __future__ import annotations

import importlib
from typing import Any

# name -> submodule; loaded on first use, so importing the light metadata module (command-line
# argument checks, the runtime) does not pull in torch's exporters
_LAZY = {name: "metadata" for name in ("DECODED_OUTPUTS", "DEFAULT_SIZE", "EXPORT_FORMAT", "ExportError",
                                       "MIN_OPSET", "RAW_OUTPUTS", "build_metadata", "read_metadata")}
_LAZY.update({name: "writers" for name in ("export_model", "export_onnx", "export_torchscript")})
# deprecated names, importable for one release (they warn when called)
_DEPRECATED = {"load_for_export": "writers"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name) or _DEPRECATED.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
