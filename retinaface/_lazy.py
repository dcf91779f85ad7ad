"""PEP 562 lazy names for a package whose public names live in its sub-modules: the package imports
nothing heavy until a name is first used. Imports only the standard library.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Dict, List, Tuple


def lazy_names(package: str, names: Dict[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, where ``names`` maps each public name to the
    sub-module (relative to ``package``) that defines it. A name, once resolved, is stored in the
    package's namespace, so later look-ups skip ``__getattr__``."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
