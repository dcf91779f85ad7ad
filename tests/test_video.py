"""Threaded video pipeline: every frame in order, batches, annotated output, early stop keeps detections."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from retinaface.inference.video import StopVideo, VideoError, process_video, process_video_sequential


def _write_video(path, frames=20, size=(64, 96)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (size[1], size[0]))
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((size[0], size[1], 3), 10 * i % 250, dtype=np.uint8)
        writer.write(frame)
    writer.release()
    return path


class IndexDetector:
    """Returns one detection per frame whose score encodes the frame's brightness (its index)."""

    def __init__(self):
        self.batches = []

    def _one(self, frame):
        level = float(frame.mean())
        return np.array([[2, 2, 20, 20, 0.9, *([5.0] * 10)], [0, 0, 1, 1, level / 1000, *([0.0] * 10)]],
                        dtype=np.float32)

    def detect(self, frame):
        return self._one(frame)

    def detect_batch(self, frames, batch_size=16):
        self.batches.append(len(frames))
        return [self._one(f) for f in frames]


def _levels(result):
    return [round(float(d[1, 4]) * 1000) for d in result.detections]


def test_pipeline_keeps_every_frame_in_order_and_batches(tmp_path):
    clip = _write_video(tmp_path / "clip.avi")
    detector = IndexDetector()
    out = tmp_path / "annotated.avi"
    result = process_video(detector, clip, out, batch_size=4, progress=False)
    baseline = process_video_sequential(IndexDetector(), clip)
    assert result.frames == baseline.frames == 20 and not result.interrupted
    assert _levels(result) == _levels(baseline)
    assert max(detector.batches) <= 4 and sum(detector.batches) == 20
    capture = cv2.VideoCapture(str(out))
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == 20
    # no temporary file left beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.avi", "clip.avi"]


def test_existing_output_is_never_overwritten(tmp_path):
    clip = _write_video(tmp_path / "clip.avi", frames=3)
    out = tmp_path / "out.avi"
    out.write_bytes(b"mine")
    with pytest.raises(VideoError, match="already exists"):
        process_video(IndexDetector(), clip, out, progress=False)
    assert out.read_bytes() == b"mine"


def test_stop_keeps_every_detection_and_a_playable_video(tmp_path):
    clip = _write_video(tmp_path / "clip.avi", frames=30)
    seen = []

    def on_frame(index, dets):
        seen.append(index)
        if index == 9:
            raise StopVideo  # what Ctrl-C does, from the calling thread

    out = tmp_path / "partial.avi"
    result = process_video(IndexDetector(), clip, out, batch_size=1, progress=False, on_frame=on_frame)
    assert result.interrupted and result.frames == 10 == len(seen)
    assert _levels(result) == _levels(process_video_sequential(IndexDetector(), clip, max_frames=10))
    capture = cv2.VideoCapture(str(out))
    assert capture.isOpened() and capture.read()[0]


def test_unreadable_video_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(VideoError, match="bad.mp4: cannot open"):
        process_video(IndexDetector(), bad, progress=False)


def test_real_detector_gives_the_same_detections_batched(tmp_path):
    torch = pytest.importorskip("torch")
    import retinaface

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 64))
    for _ in range(6):
        writer.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    writer.release()
    detector = retinaface.Detector(retinaface.create_model("mobilenet0.25").eval())
    piped = process_video(detector, path, batch_size=3, progress=False)
    single = process_video_sequential(detector, path)
    assert piped.frames == 6 and sum(len(d) for d in single.detections) > 0
    for a, b in zip(piped.detections, single.detections):
        np.testing.assert_allclose(a, b, atol=1e-3)
