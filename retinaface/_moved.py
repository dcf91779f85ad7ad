"""Old import paths of modules that moved into layer folders in 0.x (``retinaface.detector`` is
now ``retinaface.inference.detector``): importing an old path warns once and gives the module at
its new place, the same module object, so patches and ``isinstance`` checks see one module. The
aliases go in the next release. Imports only the standard library.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Dict, Optional

# old path (after "retinaface.") -> new path; a moved package's sub-modules follow it
MOVED: Dict[str, str] = {
    "transform": "inference.transform",
    "postprocess": "inference.postprocess",
    "detector": "inference.detector",
    "tta": "inference.tta",
    "tiling": "inference.tiling",
    "video": "inference.video",
    "sources": "inference.sources",
    "detect_files": "inference.detect_files",
    "embed_files": "inference.embed_files",
    "align": "inference.align",
    "visualize": "inference.visualize",
    "profiling": "inference.profiling",
    "export": "deploy.export",
    "runtime": "deploy.runtime",
    "openvino_backend": "deploy.openvino_backend",
    "quantize": "deploy.quantize",
    "parity": "deploy.parity",
    "fusion": "deploy.fusion",
    "batch_norm": "deploy.batch_norm",
    "matching": "engine.matching",
    "loss": "engine.loss",
}


def new_name(fullname: str) -> Optional[str]:
    """The new dotted name of ``fullname`` if it lies under a moved path, else ``None``."""
    root, _, rest = fullname.partition(".")
    if root != "retinaface" or not rest:
        return None
    for old, new in MOVED.items():
        if rest == old or rest.startswith(old + "."):
            return f"{root}.{new}{rest[len(old):]}"
    return None


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def create_module(self, spec):
        warnings.warn(f"{self.old} moved to {self.new}; the old path goes in the next release",
                      DeprecationWarning, stacklevel=4)
        return importlib.import_module(self.new)

    def exec_module(self, module) -> None:
        # the module is the one at its new place, already executed; keep its own spec and name
        sys.modules[self.old] = module


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves the old import paths in :data:`MOVED` to the modules at their new places."""

    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedModuleLoader(fullname, new))


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
