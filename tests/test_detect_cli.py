import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT


def run_detect(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "detect.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_detect_cli_on_images_video_and_a_corrupt_file(tmp_path, fixture_io, legacy_checkpoint):
    image = fixture_io["image_bgr"]
    folder = tmp_path / "inputs"
    folder.mkdir()
    cv2.imwrite(str(folder / "face.png"), image)
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5,
                             (image.shape[1], image.shape[0]))
    for _ in range(3):
        writer.write(image)
    writer.release()
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    result = run_detect("--weights", legacy_checkpoint, folder, tmp_path / "clip.avi", corrupt,
                        "--output", out, "--conf", "0.5")
    assert result.returncode == 1  # one input failed, the others still ran
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == [f"tools/detect.py: error: {corrupt}: not a readable image"]
    annotated = cv2.imread(str(out / "face.jpg"))
    assert annotated is not None and annotated.shape == image.shape
    assert np.abs(annotated.astype(int) - image.astype(int)).sum() > 0  # something was drawn
    assert (out / "clip.mp4").stat().st_size > 0
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert [(r["source"].endswith("face.png"), r["frame"]) for r in records[:1]] == [(True, 0)]
    assert [r["frame"] for r in records[1:]] == [0, 1, 2]
    faces = records[0]["faces"]
    assert faces and all(f["score"] > 0.5 for f in faces)
    assert len(faces[0]["box"]) == 4 and len(faces[0]["landmarks"]) == 5


def test_detect_cli_bad_weights_is_one_line(tmp_path):
    bad = tmp_path / "nothing.pth"
    result = run_detect("--weights", bad, tmp_path, "--output", tmp_path / "o")
    assert result.returncode == 2
    assert result.stderr.strip() == f"tools/detect.py: error: {bad}: checkpoint file not found"
    assert not (tmp_path / "o").exists()  # nothing left behind by a run that did not start


def write_video(path, image, frames, fourcc="MJPG"):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 5, (image.shape[1], image.shape[0]))
    for _ in range(frames):
        writer.write(image)
    writer.release()


def test_detect_cli_same_names_in_subfolders_and_spaces_do_not_overwrite(tmp_path, fixture_io, legacy_checkpoint):
    image = fixture_io["image_bgr"]
    folder = tmp_path / "my photos"
    for sub in ("day one", "day two"):
        (folder / sub).mkdir(parents=True)
        cv2.imwrite(str(folder / sub / "a face.jpg"), image)
    cv2.imwrite(str(folder / "a face.png"), image)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = run_detect("--weights", legacy_checkpoint, folder, "--output", out, "--conf", "0.5")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.jpg")) == ["a face.jpg", "a face_2.jpg", "a face_3.jpg"]
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert len(records) == 3


def test_detect_cli_video_failing_mid_way_is_reported(tmp_path, fixture_io, legacy_checkpoint):
    image = np.ascontiguousarray(fixture_io["image_bgr"][:120, :160])
    whole = tmp_path / "whole.avi"
    write_video(whole, image, 20)
    data = whole.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[:len(data) // 2])  # the header still promises 20 frames
    write_video(whole, image, 2)
    out = tmp_path / "out"
    result = run_detect("--weights", legacy_checkpoint, cut, whole, "--output", out, "--conf", "0.5")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("tools/detect.py: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"tools/detect.py: error: {cut}: stopped after ")
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    read_from_cut = [r["frame"] for r in records if r["source"] == str(cut)]
    assert 0 < len(read_from_cut) < 20 and read_from_cut == list(range(len(read_from_cut)))
    assert [r["frame"] for r in records if r["source"] == str(whole)] == [0, 1]
    assert (out / "cut.mp4").stat().st_size > 0 and (out / "whole.mp4").stat().st_size > 0


def test_detect_cli_interrupt_keeps_results_so_far(tmp_path, fixture_io, legacy_checkpoint, monkeypatch):
    # a webcam run ends with Ctrl-C: the detections written until then must survive
    from retinaface import Detector
    from retinaface.cli import detect as tool

    video = tmp_path / "clip.avi"
    write_video(video, fixture_io["image_bgr"], 5)
    original, calls = Detector.detect, []

    def interrupted_detect(self, image):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, image)

    monkeypatch.setattr(Detector, "detect", interrupted_detect)
    out = tmp_path / "out"
    try:
        code = tool.main(["--weights", str(legacy_checkpoint), str(video), "--output", str(out), "--conf", "0.5"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped retinaface detect and discarded the detections written so far")
    assert code == 130
    records = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1]
    assert (out / "clip.mp4").stat().st_size > 0


def test_detect_help_needs_neither_torch_nor_onnxruntime():
    # onnxruntime made unimportable: --help must still work, and load nothing heavy
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from retinaface.cli import run_command\n"
            "assert run_command('detect', ['--help']) == 0\n"
            "heavy = sorted(m for m in ('torch', 'cv2', 'onnxruntime', 'timm') if sys.modules.get(m))\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "output folder policy" in result.stdout and "--max-size" in result.stdout
