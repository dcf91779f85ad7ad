"""``retinaface eval --preds`` (and ``tools/widerface_eval.py --preds``): the protocol flag, mistakes
that would look like results, one-line errors for impossible flags, and an import that loads no
torch, torchvision, timm or OpenCV."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retinaface.cli.eval import main
from retinaface.formats import WiderGroundTruth, save_ground_truth

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("easy", "medium", "hard")


@pytest.fixture()
def gt_dir(tmp_path) -> Path:
    # Two overlapping faces per image (the spec's [0 0 9 9] and [2 0 9 9]), both counted.
    faces = np.array([[0, 0, 9, 9], [2, 0, 9, 9]], np.int32)
    names = ["a", "b", "c"]
    gt = WiderGroundTruth(["0--E"], [names], [[faces] * 3], {s: [[np.array([1, 2])] * 3] for s in SETTINGS})
    save_ground_truth(gt, tmp_path / "gt")
    return tmp_path / "gt"


def write_preds(root: Path, names=("a", "b", "c")) -> Path:
    for name in names:
        (root / "0--E").mkdir(parents=True, exist_ok=True)
        # the first face box after the second: official matches the first qualifying face
        (root / "0--E" / f"{name}.txt").write_text(f"{name}\n3\n2 0 9 9 0.9\n0 0 9 9 0.8\n500 500 9 9 0.1\n")
    return root


def run_main(capsys, *argv):
    code = main([str(a) for a in argv], prog="retinaface eval")
    out, err = capsys.readouterr()
    return code, out, err


def test_protocol_flag_changes_the_arithmetic_and_is_reported(tmp_path, gt_dir, capsys):
    preds = write_preds(tmp_path / "preds")
    code, out, err = run_main(capsys, "--preds", preds, "--gt", gt_dir, "--json")
    assert code == 0, err
    official = json.loads(out)
    code, out, _ = run_main(capsys, "--preds", preds, "--gt", gt_dir, "--json", "--protocol", "python-port")
    port = json.loads(out)
    assert official["protocol"] == "official" and port["protocol"] == "python-port"
    assert official["hard"] == pytest.approx(0.5) and port["hard"] == pytest.approx(1.0)
    code, out, _ = run_main(capsys, "--preds", preds, "--gt", gt_dir)
    assert out.strip().endswith("(official protocol)")


def test_folder_one_level_too_high_is_an_error_naming_the_expected_place(tmp_path, gt_dir, capsys):
    write_preds(tmp_path / "preds" / "run1")
    code, _, err = run_main(capsys, "--preds", tmp_path / "preds", "--gt", gt_dir)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no prediction file matches" in err and "0--E/a.txt" in err and "run1" in err


def test_more_than_half_missing_needs_allow_missing(tmp_path, gt_dir, capsys):
    preds = write_preds(tmp_path / "preds", names=("a",))
    code, _, err = run_main(capsys, "--preds", preds, "--gt", gt_dir)
    assert code == 2 and "2 of 3" in err and "--allow-missing" in err
    code, out, err = run_main(capsys, "--preds", preds, "--gt", gt_dir, "--allow-missing", "--json")
    assert code == 0 and json.loads(out)["missing_images"] == 2
    assert "warning: 2 of 3 images have no prediction file" in err and "0--E/b.txt" in err


def test_warnings_name_the_files_whose_count_line_disagrees(tmp_path, gt_dir, capsys):
    preds = write_preds(tmp_path / "preds")
    (preds / "0--E" / "b.txt").write_text("b\n5\n2 0 9 9 0.9\n")
    for protocol in ("official", "python-port"):
        code, out, err = run_main(capsys, "--preds", preds, "--gt", gt_dir, "--protocol", protocol)
        assert code == 0 and str(preds / "0--E" / "b.txt") in err and "count line" in err
    assert "Invalid format" in err or "Invalid format" in run_main(capsys, "--preds", preds, "--gt", gt_dir)[2]


@pytest.mark.parametrize("flags,named", [
    (["--target-size", "0"], "--target-size"),
    (["--target-size", "-5"], "--target-size"),
    (["--max-size", "1"], "--max-size"),
    (["--multiscale", "500", "0"], "--multiscale"),
    (["--conf", "1.5"], "--conf"),
    (["--nms", "0"], "--nms"),
    (["--width", "0"], "--width"),
    (["--batch-size", "0"], "--batch-size"),
    (["--workers", "-1"], "--workers"),
    (["--protocol", "matlab"], "--protocol"),
])
def test_impossible_numeric_flags_are_refused_with_the_allowed_range(tmp_path, capsys, flags, named):
    with pytest.raises(SystemExit) as exc:
        main(["--weights", str(tmp_path / "w.pth"), "--data", str(tmp_path), *flags], prog="retinaface eval")
    err = capsys.readouterr().err
    assert exc.value.code == 2 and named in err and "Traceback" not in err
    if named != "--protocol":
        assert "allowed range" in err


def test_plot_into_a_folder_and_model_flags_with_preds_are_refused(tmp_path, gt_dir, capsys):
    preds = write_preds(tmp_path / "preds")
    code, _, err = run_main(capsys, "--preds", preds, "--gt", gt_dir, "--plot", tmp_path)
    assert code == 2 and "--plot" in err and "is a folder" in err
    with pytest.raises(SystemExit):
        main(["--preds", str(preds), "--gt", str(gt_dir), "--target-size", "640"])
    assert "--target-size applies to --weights" in capsys.readouterr().err


def test_preds_path_loads_no_heavy_module_and_the_tool_shim_works(tmp_path, gt_dir):
    preds = write_preds(tmp_path / "preds")
    code = (
        "import json, sys\n"
        "import retinaface.evaluation\n"
        "from retinaface.cli import run_command\n"
        f"rc = run_command('eval', ['--preds', {str(preds)!r}, '--gt', {str(gt_dir)!r}, '--json'])\n"
        "heavy = [m for m in ('torch', 'torchvision', 'timm', 'cv2') if m in sys.modules]\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"rc": 0, "heavy": []}
    assert json.loads(lines[-2])["protocol"] == "official"
    tool = subprocess.run([sys.executable, str(ROOT / "tools" / "widerface_eval.py"), "--preds", str(preds),
                           "--gt", str(gt_dir), "--protocol", "python-port"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert tool.returncode == 0, tool.stderr
    assert tool.stdout.strip() == "easy: 1.0000  medium: 1.0000  hard: 1.0000  (python-port protocol)"
