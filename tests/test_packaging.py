"""The package behaves like one after a plain (non-editable) install: the ``retinaface`` command
exists and works from a folder outside the checkout, with no help from the repository."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
GT_DIR = REPO / "tests" / "fixtures" / "widerface_ground_truth"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A non-editable install of the checkout into its own folder (torch and friends come from the
    running interpreter's site, so nothing is downloaded)."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", TMPDIR=str(build))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-compile", "--target", str(target), str(REPO)], check=True, env=env, cwd=build,
                   capture_output=True)
    return target


def run_installed(site: Path, args, cwd: Path):
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("PYTHONSAFEPATH", None)
    script = site / "bin" / "retinaface"
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_installed_package_is_the_copy_not_the_checkout(installed, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(installed))
    out = subprocess.run([sys.executable, "-c", "import retinaface; print(retinaface.__file__)"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(out).resolve().is_relative_to(installed.resolve()), out


def test_installed_command_detect_help(installed, tmp_path):
    result = run_installed(installed, ["detect", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--weights" in result.stdout


def test_installed_command_unknown_subcommand_is_one_line(installed, tmp_path):
    result = run_installed(installed, ["nonsense"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == "retinaface: error: unknown command 'nonsense'"


def test_installed_command_evaluates_a_prediction_folder(installed, tmp_path):
    # one perfect prediction file per val image (scores must differ: the official normalization
    # divides by max - min), read by the installed copy
    import scipy.io

    mat = scipy.io.loadmat(GT_DIR / "wider_face_val.mat")
    preds = tmp_path / "preds"
    events = mat["event_list"]
    for e in range(len(events)):
        event = str(events[e][0][0])
        for i, name in enumerate(mat["file_list"][e][0]):
            name = str(name[0][0])
            boxes = np.asarray(mat["face_bbx_list"][e][0][i][0], dtype=float).reshape(-1, 4)
            folder = preds / event
            folder.mkdir(parents=True, exist_ok=True)
            lines = [name, str(len(boxes))] + [f"{x} {y} {w} {h} {0.5 + 0.4 * ((i + k) % 7) / 6:.3f}"
                                               for k, (x, y, w, h) in enumerate(boxes)]
            (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
    result = run_installed(installed, ["eval", "--preds", str(preds), "--gt", str(GT_DIR), "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    import json

    values = json.loads(result.stdout.strip().splitlines()[-1])
    for setting in ("easy", "medium", "hard"):
        assert values[setting] > 0.95, values


# run in the installed copy: which compiled parts it has, and a post-processing result to compare
_COMPILED_STATE = """
import hashlib, numpy as np, torch
from retinaface import postprocess
rng = np.random.default_rng(0)
heads = [torch.from_numpy(rng.uniform(0, 1, (4800, n)).astype(np.float32) ** 4) for n in (4, 2, 10, 4)]
dets = postprocess.PostProcessor()(*heads, (240, 320), 0.75).numpy()
print('kernels', 'built' if postprocess._kernels is not None else 'absent',
      len(dets), hashlib.sha256(dets.tobytes()).hexdigest()[:16], end=' ')
from retinaface.environment import collect_environment  # what `retinaface env` reports
states = {row.name: row.state.replace(' ', '_') for row in collect_environment()}
print(states['detect kernels (C)'])
"""


def _compiled_state(site: Path, cwd: Path) -> str:
    import site as site_module

    # -S: no .pth files, so an editable install of the checkout cannot lend its built modules
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), *site_module.getsitepackages()]))
    env.pop("PYTHONSAFEPATH", None)
    return subprocess.run([sys.executable, "-S", "-c", _COMPILED_STATE], cwd=cwd, env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_installed_package_carries_the_compiled_parts_where_they_build(installed, tmp_path):
    from retinaface.inference import postprocess

    if postprocess._kernels is None:
        pytest.skip("the compiled part does not build on this machine (no C compiler)")
    state = _compiled_state(installed, tmp_path).split()
    assert state[:2] == ["kernels", "built"]
    assert int(state[2]) > 50
    assert state[4:] == ["active"]  # `retinaface env` says what the install holds


def test_install_without_a_c_compiler_goes_on_without_the_compiled_parts(installed, tmp_path):
    """setup.py marks the extension optional: a failed compile leaves a working package that
    post-processes in NumPy / torchvision (the same detections as the kernels give)."""
    import shutil

    target, build, source = tmp_path / "site", tmp_path / "build", tmp_path / "source"
    build.mkdir()
    # the checkout's own files only: no build/ folder or in-place extension from an earlier build
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for name in listed:
        if (REPO / name).is_file() and not name.startswith(("tests/", "docs/", "benchmarks/")):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", TMPDIR=str(build), CC="false", LDSHARED="false")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-compile", "--target", str(target), str(source)], check=True, env=env, cwd=build,
                   capture_output=True)
    assert not list(target.glob("retinaface/_detect_kernels*"))
    without = _compiled_state(target, tmp_path).split()
    assert without[:2] == ["kernels", "absent"]
    assert without[2:4] == _compiled_state(installed, tmp_path).split()[2:4]  # the same detections
    assert without[4:] == ["not_built"]  # `retinaface env` says what the install lacks
