"""Issue 27: real inputs handled as a careful and a hostile user would try them. One test (or more)
per case: concurrent runs into one output, symbolic-link loops, duplicated and wild labels, cut
JPEGs, equal file names, late refusal in eval, tiling that keeps large faces plus the pixel cap,
and progress on big jobs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from retinaface.cli import detect as detect_cli
from retinaface.fileio import CLAIM_FILE, claim_fresh_folder

from conftest import require_real

ROOT = Path(__file__).resolve().parents[1]


def detect(*args):
    return detect_cli.main([str(a) for a in args], prog="detect")


def records(folder):
    return [json.loads(line) for line in (folder / "detections.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def photo(fixture_io):
    return fixture_io["image_bgr"]


def _write_photos(folder: Path, image: np.ndarray, names) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), image)


# -- 1. output folders claimed, not checked ------------------------------------------------------
def test_two_detect_runs_started_together_into_one_output_keep_every_record(tmp_path, photo, legacy_checkpoint):
    small = cv2.resize(photo, (160, 120))
    _write_photos(tmp_path / "a", small, [f"a{i}.jpg" for i in range(3)])
    _write_photos(tmp_path / "b", small, [f"b{i}.jpg" for i in range(2)])
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "retinaface", "detect", "--weights", str(legacy_checkpoint), "--conf", "0.5",
               "--output", str(out)]
    runs = [subprocess.Popen(command + [str(tmp_path / name)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env) for name in ("a", "b")]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in results]
    folders = [Path(stdout.strip().rsplit("results in ", 1)[1].split(";")[0]) for stdout, _ in results]
    assert sorted(folders) == [out, tmp_path / "out2"]  # each said where it wrote, and they differ
    for folder, name, count in zip(folders, ("a", "b"), (3, 2)):
        found = records(folder)
        assert sorted(Path(r["source"]).name for r in found) == [f"{name}{i}.jpg" for i in range(count)]
        assert sorted(p.name for p in folder.glob("*.jpg")) == [f"{name}{i}.jpg" for i in range(count)]
        assert not (folder / CLAIM_FILE).exists()  # released when done


def test_claims_from_many_threads_at_once_give_distinct_folders(tmp_path):
    barrier, got = threading.Barrier(8), []

    def claim():
        barrier.wait()
        got.append(claim_fresh_folder(tmp_path / "run"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(got)) == 8


def test_claims_end_with_their_process_and_leave_no_empty_folders(tmp_path):
    code = ("import sys; from pathlib import Path; from retinaface.fileio import claim_fresh_folder; "
            "kept = claim_fresh_folder(Path(sys.argv[1]) / 'a' / 'run'); (kept / 'log.csv').write_text('x'); "
            "claim_fresh_folder(Path(sys.argv[1]) / 'b' / 'c' / 'run')")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["a", "a/run", "a/run/log.csv"]


def test_a_stale_claim_is_taken_over_by_exactly_one_of_many_processes(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid now names no process: a claim holding it is stale
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / CLAIM_FILE).write_text(f"{dead.pid}\n")
    # each process waits for "go", tries once, says how it went, and lives on until "done" (a claim
    # is released when its process exits, which would let a later one in legitimately)
    # seeing the claim stale is slowed down, so that all of them see it before any takes it over
    code = ("import sys, time; from pathlib import Path; from retinaface import fileio\n"
            "from retinaface.fileio import claim_fresh_folder\n"
            "seen = fileio.claim_holder\n"
            "def slow(folder):\n    holder = seen(folder)\n    time.sleep(0.2 if holder is None else 0)\n"
            "    return holder\n"
            "fileio.claim_holder = slow\n"
            "root = Path(sys.argv[1])\n"
            "while not (root / 'go').exists(): time.sleep(0.001)\n"
            "try:\n    claim_fresh_folder(root / 'run', numbered=False); print('took', flush=True)\n"
            "except FileExistsError:\n    print('refused', flush=True)\n"
            "while not (root / 'done').exists(): time.sleep(0.01)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    runs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(6)]
    (tmp_path / "go").touch()
    answers = [run.stdout.readline().strip() for run in runs]
    (tmp_path / "done").touch()
    for run in runs:
        run.communicate(timeout=60)
    assert sorted(answers) == ["refused"] * 5 + ["took"]


def test_train_default_run_folders_are_claimed_per_run(tmp_path):
    from retinaface.engine.state import RunFolderError, resolve_run_folder

    first = resolve_run_folder(None, str(tmp_path / "train"), None, False)
    second = resolve_run_folder(None, str(tmp_path / "train"), None, False)
    assert (first, second) == (tmp_path / "train", tmp_path / "train2")
    # this process may go on in its own folder (a run, then its resume) ...
    assert resolve_run_folder(str(first), str(tmp_path / "x"), None, False) == first
    # ... but an explicit folder another live run claimed is refused, naming it
    (second / CLAIM_FILE).write_text(f"{os.getppid()}\n")
    with pytest.raises(RunFolderError, match=f"another run \\(pid {os.getppid()}\\)"):
        resolve_run_folder(str(second), str(tmp_path / "x"), None, False)


# -- 2. each input once --------------------------------------------------------------------------
def test_symlink_loop_and_second_link_are_walked_once_with_a_warning(tmp_path, photo, legacy_checkpoint, capsys):
    folder = tmp_path / "loopdir"
    _write_photos(folder, photo, ["base.jpg"])
    (folder / "sub").mkdir()
    os.symlink("..", folder / "sub" / "up")
    os.symlink("base.jpg", folder / "again.jpg")
    assert detect("--weights", legacy_checkpoint, folder, "--output", tmp_path / "out", "--conf", "0.5") == 0
    found = records(tmp_path / "out")
    assert len(found) == 1
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "skipped 2 input(s)" in err


# -- 3. labels: duplicates and landmarks off the image -------------------------------------------
def _label_set(root: Path, lines) -> Path:
    images = root / "train" / "images" / "0--Parade"
    images.mkdir(parents=True)
    for name in ("a", "b"):
        cv2.imwrite(str(images / f"{name}.jpg"), np.full((100, 120, 3), 90, np.uint8))
    (root / "train" / "label.txt").write_text("\n".join(lines) + "\n")
    return root


FACE = "10 10 40 40 20 20 1 40 20 1 30 30 1 22 40 1 38 40 1 0.8"


def test_image_listed_twice_is_refused_naming_both_lines(tmp_path):
    from retinaface.data.labels import load_training_annotations

    root = _label_set(tmp_path, ["# 0--Parade/a.jpg", FACE, "# 0--Parade/b.jpg", FACE, "# 0--Parade/a.jpg", FACE])
    with pytest.raises(ValueError, match=r"label\.txt:5: image 0--Parade/a\.jpg is listed a second time "
                                         r"\(first at line 1\)"):
        load_training_annotations(root)


def test_landmarks_far_off_the_image_are_dropped_for_that_face_with_count_and_line(tmp_path, caplog):
    from retinaface.data.labels import load_training_annotations

    wild = "10 10 40 40 5000 5000 1 40 20 1 30 30 1 22 40 1 38 40 1 0.8"
    negative = "50 50 40 40 -300 -300 1 60 60 1 70 70 1 60 80 1 80 80 1 0.8"
    root = _label_set(tmp_path, ["# 0--Parade/a.jpg", FACE, wild, "# 0--Parade/b.jpg", negative])
    with caplog.at_level("WARNING"):
        annotations, stats = load_training_annotations(root)
    assert [a.has_landmarks.tolist() for a in annotations] == [[True, False], [False]]
    assert (annotations[0].landmarks[1] == -1).all() and annotations[0].labels.tolist() == [1.0, -1.0]
    assert stats.num_landmarks_dropped == 2 and stats.first_landmarks_dropped.endswith("label.txt:3")
    assert "2 face(s) have landmarks outside their image" in caplog.text and "label.txt:3" in caplog.text
    assert stats.num_faces == 3  # the boxes are kept


# -- 4. a JPEG cut short is an unreadable input --------------------------------------------------
def test_truncated_jpeg_counts_as_unreadable_unless_allowed(tmp_path, photo, legacy_checkpoint, capsys):
    ok, encoded = cv2.imencode(".jpg", photo)
    data = encoded.tobytes()
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "cut.jpg").write_bytes(data[:len(data) * 2 // 3])
    (folder / "whole.jpg").write_bytes(data)
    assert detect("--weights", legacy_checkpoint, folder, "--output", tmp_path / "out", "--conf", "0.5") == 1
    err = capsys.readouterr().err
    assert "cut.jpg: decodes only partly" in err and "whole.jpg" not in err
    assert [Path(r["source"]).name for r in records(tmp_path / "out")] == ["whole.jpg"]
    assert detect("--weights", legacy_checkpoint, folder, "--output", tmp_path / "out_p", "--conf", "0.5",
                  "--allow-partial") == 0
    assert len(records(tmp_path / "out_p")) == 2


# -- 5. equal names from different folders: every record names its copy --------------------------
def test_each_record_names_its_source_and_the_copy_written_for_it(tmp_path, photo, legacy_checkpoint):
    folder = tmp_path / "in"
    _write_photos(folder, photo, ["a/x.jpg", "b/x.jpg", "x.jpg", "x.png"])
    # a different picture per source, so a copy can be traced back by its pixels
    for k, name in enumerate(["a/x.jpg", "b/x.jpg", "x.jpg", "x.png"]):
        cv2.imwrite(str(folder / name), np.roll(photo, 40 * k, axis=1))
    assert detect("--weights", legacy_checkpoint, folder, "--output", tmp_path / "out", "--conf", "0.5",
                  "--vis-threshold", "1.0") == 0
    found = records(tmp_path / "out")
    assert len(found) == 4 and len({r["output"] for r in found}) == 4
    for record in found:
        copy = cv2.imread(str(tmp_path / "out" / record["output"]))
        source = cv2.imread(record["source"])
        # nothing drawn at --vis-threshold 1.0: the copy is its source, up to JPEG re-encoding
        assert np.abs(copy.astype(int) - source.astype(int)).mean() < 4


# -- 6. eval refuses a bad val list before any model runs ----------------------------------------
def test_eval_refuses_a_missing_val_image_before_loading_the_model(tmp_path, tiny_synthetic, legacy_checkpoint,
                                                                     monkeypatch, capsys):
    from retinaface import Detector
    from retinaface.cli import eval as eval_cli

    data = tmp_path / "data"
    shutil.copytree(tiny_synthetic / "val", data / "val")
    with open(data / "val" / "wider_val.txt", "a") as handle:
        handle.write("/0--Parade/not_there.jpg\n")
    loaded = []
    monkeypatch.setattr(Detector, "from_checkpoint", classmethod(lambda cls, *a, **k: loaded.append(a)))
    assert eval_cli.main(["--weights", str(legacy_checkpoint), "--data", str(data), "--no-progress"],
                         prog="eval") == 2
    err = capsys.readouterr().err
    assert "not_there.jpg (missing)" in err and "wider_val.txt" in err and len(err.strip().splitlines()) == 1
    assert loaded == []


def test_eval_refuses_val_images_outside_the_ground_truth(tmp_path, tiny_synthetic):
    from retinaface.evaluation.predict import check_val_split
    from retinaface.formats.ground_truth import open_ground_truth

    data = tmp_path / "data"
    shutil.copytree(tiny_synthetic / "val", data / "val")
    listed = (data / "val" / "wider_val.txt").read_text().splitlines()
    event, name = listed[0].strip("/").split("/")
    shutil.copy(data / "val" / "images" / event / name, data / "val" / "images" / event / f"extra_{name}")
    (data / "val" / "wider_val.txt").write_text("\n".join(listed + [f"/{event}/extra_{name}"]) + "\n")
    with pytest.raises(ValueError, match=r"1 of \d+ listed image\(s\) are not in the ground truth"):
        check_val_split(data, open_ground_truth(data / "val" / "ground_truth"))


# -- 7. tiling keeps large faces; the pixel cap ---------------------------------------------------
def _matched(truth: np.ndarray, dets: np.ndarray, iou: float = 0.5) -> int:
    if not len(truth) or not len(dets):
        return 0
    ix = np.maximum(0, np.minimum(truth[:, None, 2], dets[None, :, 2]) - np.maximum(truth[:, None, 0], dets[None, :, 0]))
    iy = np.maximum(0, np.minimum(truth[:, None, 3], dets[None, :, 3]) - np.maximum(truth[:, None, 1], dets[None, :, 1]))
    inter = ix * iy
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return int((inter / (area(truth)[:, None] + area(dets)[None] - inter)).max(axis=1).__ge__(iou).sum())


@pytest.mark.slow
def test_tiling_a_real_photo_upscaled_4x_finds_every_face_the_whole_photo_finds():
    import torch

    import retinaface
    from retinaface.formats.ground_truth import open_ground_truth
    from retinaface.inference.tiling import detect_tiled

    weights = require_real("weights", "mobilenet0.25_Final.pth")
    val = require_real("widerface", "val")
    name = "0_Parade_Parade_0_194"  # five annotated faces of 60-115 px: 240-460 px at 4x, above the overlap
    image = cv2.imread(str(val / "images" / "0--Parade" / f"{name}.jpg"))
    truth = {n: b for _, n, b in open_ground_truth(val / "ground_truth")}[name].astype(np.float64) * 4
    truth[:, 2:] += truth[:, :2]
    big = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_LINEAR)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        detector = retinaface.Detector(retinaface.load_model(weights), conf_threshold=0.5)
        whole = detector.detect(big)
        tiled = detect_tiled(detector, big, size=640, overlap=64)
    finally:
        torch.set_num_threads(threads)
    assert _matched(truth, whole) >= 3  # the whole photo finds most annotated faces
    assert _matched(truth, tiled) >= _matched(truth, whole)


def test_image_over_max_pixels_is_tiled_and_said_so(tmp_path, photo, legacy_checkpoint, capsys):
    folder = tmp_path / "in"
    _write_photos(folder, photo, ["big.jpg"])
    height, width = photo.shape[:2]
    assert detect("--weights", legacy_checkpoint, folder, "--output", tmp_path / "out", "--conf", "0.5",
                  "--max-pixels", str(height * width - 1)) == 0
    captured = capsys.readouterr()
    assert f"big.jpg: {width}x{height}:" in captured.err and "over --max-pixels" in captured.err
    assert "1 image(s) over --max-pixels tiled or downscaled" in captured.out
    assert detect("--weights", legacy_checkpoint, folder, "--output", tmp_path / "out2", "--conf", "0.5") == 0
    assert "max-pixels" not in capsys.readouterr().err  # the default cap leaves a normal photo alone


def test_max_pixels_under_a_resize_policy_downscales(legacy_checkpoint, photo):
    from retinaface import Detector
    from retinaface.inference.detect_files import DetectOptions, ImageDetector, forward_pixels

    detector = Detector.from_checkpoint(legacy_checkpoint, target_size=600, conf_threshold=0.5)
    notes = []
    capped = ImageDetector(detector, DetectOptions(max_pixels=100_000), notes.append)
    capped(photo, "p.jpg")
    assert forward_pixels(detector, *photo.shape[:2]) > 100_000
    assert len(notes) == 1 and "downscaling its long side" in notes[0]


# -- 8. progress on big jobs ---------------------------------------------------------------------
def test_progress_bar_on_a_terminal_and_a_summary_line(tmp_path, photo, legacy_checkpoint):
    pty = pytest.importorskip("pty")
    small = cv2.resize(photo, (96, 64))
    _write_photos(tmp_path / "in", small, [f"p{i:02d}.jpg" for i in range(12)])
    import fcntl
    import struct
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.Popen([sys.executable, "-m", "retinaface", "detect", "--weights", str(legacy_checkpoint),
                            "--conf", "0.5", str(tmp_path / "in"), "--output", str(tmp_path / "out")],
                           stdout=subprocess.PIPE, stderr=terminal, env=env, text=True)
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    stdout, _ = run.communicate(timeout=300)
    os.close(controller)
    shown = b"".join(chunks).decode(errors="replace")
    assert run.returncode == 0
    assert "12/12" in shown and "detect" in shown
    assert "12 frame(s)" in stdout and "results in" in stdout
