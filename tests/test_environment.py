"""``retinaface env``: the report names the state of the optional parts as this process uses them."""
from __future__ import annotations

import json

from retinaface.inference import postprocess, transform
from retinaface.cli import main
from retinaface.environment import collect_environment


def _states() -> dict:
    return {row.name: row.state for row in collect_environment()}


def test_env_reports_the_kernels_as_this_install_has_them(capsys):
    assert main(["env", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out.strip().splitlines()[-1])}
    kernels_built = postprocess._kernels is not None
    assert rows["detect kernels (C)"]["state"] == ("active" if kernels_built else "not built")
    assert rows["detect kernels (C)"]["available"] is kernels_built
    import cv2
    import torch

    assert rows["torch"]["state"] == torch.__version__ and rows["OpenCV"]["state"] == cv2.__version__
    assert rows["CUDA"]["available"] is torch.cuda.is_available()


def test_env_reports_parts_the_process_runs_without(monkeypatch):
    monkeypatch.setattr(postprocess, "_kernels", None)
    monkeypatch.setattr(transform, "_kernels", None)
    states = _states()
    assert states["detect kernels (C)"] == "not built"


def test_env_text_report_has_one_aligned_row_per_part(capsys):
    assert main(["env"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0].strip() for line in lines] == [row.name for row in collect_environment()]
