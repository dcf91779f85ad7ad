"""Modules that moved into the layer folders (``inference/``, ``deploy/``, ``engine/``) keep their
old import paths for one release: the old path warns and gives the module at its new place."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from retinaface import _moved


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_every_moved_module_exists_at_its_new_place(old):
    module = importlib.import_module(f"retinaface.{_moved.MOVED[old]}")
    assert module.__name__ == f"retinaface.{_moved.MOVED[old]}"


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-W", "default::DeprecationWarning", "-c", code], capture_output=True,
                          text=True, check=True).stderr


def test_an_old_path_warns_and_is_the_same_module_object():
    # a fresh interpreter: the warning fires on the first import of the old name only
    err = _run("""
import retinaface.detector as old
from retinaface.inference import detector as new
assert old is new and old.Detector is new.Detector
from retinaface.export.writers import export_model          # a moved package's sub-module
from retinaface.deploy.export import writers
assert export_model is writers.export_model
import retinaface.runtime
retinaface.runtime.MARK = 1                                 # a patch through the old name ...
from retinaface.deploy import runtime
assert runtime.MARK == 1                                    # ... is seen at the new one
""")
    assert "retinaface.detector moved to retinaface.inference.detector" in err
    assert "retinaface.export.writers moved to retinaface.deploy.export.writers" in err


def test_names_that_never_existed_still_fail():
    assert _moved.new_name("retinaface.detectors") is None
    assert _moved.new_name("retinaface.inference.detector") is None
    assert _moved.new_name("retinaface.export.writers") == "retinaface.deploy.export.writers"
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("retinaface.no_such_module")
