import json
import subprocess
import sys

import cv2
import numpy as np

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
    assert errors == [f"error: {corrupt}: not a readable image"]
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
    assert result.stderr.strip() == f"error: {bad}: checkpoint file not found"
