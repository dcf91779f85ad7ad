"""Real-time video: threaded decode -> batched detect -> asynchronous annotate + encode.

:func:`process_video` runs three stages at once so that decoding and encoding (OpenCV, which
releases the GIL) overlap the network:

* a decoder thread reads frames into a bounded queue (``queue_size`` frames: memory stays flat);
* the calling thread takes up to ``batch_size`` frames that are already decoded (it never waits to
  fill a batch, so latency stays one frame when decoding is the bottleneck) and runs
  ``detector.detect_batch`` on them;
* a writer thread draws the detections and encodes the annotated video.

Every frame's detections are kept in order in the returned :class:`VideoResult`. Ctrl-C (or an
``on_frame`` callback raising :class:`StopVideo`) stops decoding, lets the writer finish the frames
already detected, closes the video file properly and returns with ``interrupted=True`` — nothing
detected is lost. The annotated video is written to a temporary name beside ``output`` and renamed
into place at the end, and an existing ``output`` is never overwritten.

:func:`process_video_sequential` is the frame-by-frame loop (read, detect, draw, write in turn):
the baseline ``benchmarks/bench_video.py`` prints next to the pipeline.
"""
from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Union

import cv2
import numpy as np
from tqdm import tqdm

from ..conventions import DISPLAY_THRESHOLD
from .visualize import draw_detections

PathLike = Union[str, Path]
Source = Union[str, int, Path]
_END = object()


class VideoError(RuntimeError):
    """A video that cannot be opened or written; one line naming the file."""


class StopVideo(Exception):
    """Raised by an ``on_frame`` callback to stop early (the result keeps what was detected)."""


@dataclasses.dataclass
class VideoResult:
    """Detections of every processed frame (``detections[i]``: ``(N, 15)`` of frame ``i``), timing and
    whether the run was interrupted before the end of the video."""

    detections: List[np.ndarray]
    seconds: float
    interrupted: bool = False
    output: Optional[Path] = None
    fps_in: float = 0.0
    expected_frames: int = 0  # the container's frame count (an estimate for some formats; 0: unknown)

    @property
    def frames(self) -> int:
        return len(self.detections)

    @property
    def fps(self) -> float:
        """Frames per second end to end (decode, detect, draw, encode)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def open_capture(source: Source):
    """An opened ``cv2.VideoCapture`` of a file or a webcam index; ``VideoError`` if it cannot open."""
    capture = cv2.VideoCapture(int(source) if isinstance(source, int) else str(source))
    if not capture.isOpened():
        raise VideoError(f"{source}: cannot open this video")
    return capture


class _Writer:
    """Annotates and encodes frames in its own thread; writes to a temporary file, renamed at close."""

    def __init__(self, output: Optional[Path], fps: float, draw_threshold: float, queue_size: int) -> None:
        self.output = output
        self.fps = fps
        self.draw_threshold = draw_threshold
        self.queue: "queue.Queue" = queue.Queue(maxsize=queue_size)
        self.error: Optional[BaseException] = None
        self._writer = None
        self._temp: Optional[Path] = None
        self.thread = threading.Thread(target=self._run, name="retinaface-video-writer", daemon=True)
        self.thread.start()

    def put(self, frame: np.ndarray, dets: np.ndarray) -> None:
        if self.error is not None:
            raise VideoError(f"{self.output}: cannot write the video ({self.error})")
        self.queue.put((frame, dets))

    def _open(self, frame: np.ndarray) -> None:
        assert self.output is not None
        self._temp = self.output.with_name(f".{self.output.stem}.{os.getpid()}.tmp{self.output.suffix}")
        fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.output.suffix.lower() in (".mp4", ".m4v", ".mov")
                                          else "MJPG"))
        height, width = frame.shape[:2]
        self._writer = cv2.VideoWriter(str(self._temp), fourcc, self.fps, (width, height))
        if not self._writer.isOpened():
            raise VideoError(f"{self.output}: OpenCV cannot encode this format")

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _END:
                return
            if self.output is None or self.error is not None:
                continue  # drain, so the producer never blocks
            frame, dets = item
            try:
                if self._writer is None:
                    self._open(frame)
                self._writer.write(draw_detections(frame, dets, vis_threshold=self.draw_threshold))
            except BaseException as exc:  # reported to the producer by put() / close()
                self.error = exc

    def close(self, keep: bool = True) -> Optional[Path]:
        """Finish every queued frame, close the file and move it into place (``keep``) or delete it."""
        self.queue.put(_END)
        self.thread.join()
        if self._writer is not None:
            self._writer.release()
        if self._temp is None or not self._temp.exists():
            return None
        if self.error is not None or not keep:
            self._temp.unlink()
            if self.error is not None:
                raise VideoError(f"{self.output}: cannot write the video ({self.error})")
            return None
        if self.output.exists():  # appeared meanwhile: still never overwrite
            self._temp.unlink()
            raise VideoError(f"{self.output}: appeared while the video was processed; not overwritten")
        os.replace(self._temp, self.output)
        return self.output


def _check_output(output: Optional[PathLike]) -> Optional[Path]:
    if output is None:
        return None
    output = Path(output)
    if output.exists():
        raise VideoError(f"{output}: already exists; choose another output (nothing is overwritten)")
    if not output.parent.is_dir():
        raise VideoError(f"{output}: folder {output.parent} does not exist")
    return output


def process_video(detector: Any, source: Source, output: Optional[PathLike] = None, batch_size: int = 4,
                  queue_size: int = 16, draw_threshold: float = DISPLAY_THRESHOLD,
                  progress: bool = True, max_frames: Optional[int] = None,
                  on_frame: Optional[Callable[[int, np.ndarray], None]] = None,
                  detect: Optional[Callable[[List[np.ndarray]], List[np.ndarray]]] = None) -> VideoResult:
    """Detect faces in every frame of ``source`` (a video file or a webcam index) with the
    threaded pipeline; write the annotated video to ``output`` if given (must not exist).

    ``detect`` replaces ``detector.detect_batch`` (e.g. tiled detection); ``on_frame(index,
    detections)`` is called in frame order from the calling thread as soon as a frame is detected
    (it may raise :class:`StopVideo`). ``max_frames`` stops after that many frames. The progress
    bar (tqdm, on stderr) shows frames per second.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    output = _check_output(output)
    capture = open_capture(source)
    fps_in = capture.get(5) or 25.0  # cv2.CAP_PROP_FPS
    total = int(capture.get(7)) if not isinstance(source, int) else 0  # CAP_PROP_FRAME_COUNT
    if max_frames is not None:
        total = min(total, max_frames) if total > 0 else max_frames
    detect = detect or (lambda frames: detector.detect_batch(frames, batch_size=len(frames)))

    frames_q: "queue.Queue" = queue.Queue(maxsize=queue_size)
    stop = threading.Event()
    decode_error: List[BaseException] = []

    def decode() -> None:
        count = 0
        try:
            while not stop.is_set() and (max_frames is None or count < max_frames):
                ok, frame = capture.read()
                if not ok:
                    break
                count += 1
                while not stop.is_set():
                    try:
                        frames_q.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:
            decode_error.append(exc)
        finally:
            frames_q.put(_END)

    writer = _Writer(output, fps_in, draw_threshold, queue_size) if output is not None else None
    decoder = threading.Thread(target=decode, name="retinaface-video-decoder", daemon=True)
    detections: List[np.ndarray] = []
    interrupted = False
    start = time.perf_counter()
    decoder.start()
    bar = tqdm(total=total or None, desc=str(source), unit="frame", disable=not progress, leave=False)
    try:
        finished = False
        while not finished:
            batch = [frames_q.get()]
            # take what is already decoded, up to a batch: never wait to fill one
            while len(batch) < batch_size and batch[-1] is not _END:
                try:
                    batch.append(frames_q.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is _END:
                finished = True
                batch.pop()
            if not batch:
                break
            results = detect(batch)
            for frame, dets in zip(batch, results):
                detections.append(dets)
                if writer is not None:
                    writer.put(frame, dets)
                if on_frame is not None:
                    on_frame(len(detections) - 1, dets)
            bar.update(len(batch))
            elapsed = time.perf_counter() - start
            bar.set_postfix_str(f"{len(detections) / elapsed:.1f} FPS" if elapsed > 0 else "")
    except (KeyboardInterrupt, StopVideo):
        interrupted = True
    finally:
        stop.set()
        # unblock the decoder if it waits on a full queue, then let it end
        while decoder.is_alive():
            try:
                frames_q.get_nowait()
            except queue.Empty:
                decoder.join(0.05)
        capture.release()
        bar.close()
        written = writer.close(keep=True) if writer is not None else None
    if decode_error:
        raise VideoError(f"{source}: decoding failed ({decode_error[0]})")
    return VideoResult(detections, time.perf_counter() - start, interrupted, written, fps_in, total)


def process_video_sequential(detector: Any, source: Source, output: Optional[PathLike] = None,
                             draw_threshold: float = DISPLAY_THRESHOLD,
                             max_frames: Optional[int] = None) -> VideoResult:
    """The frame-by-frame loop (read, detect, draw, write, one after the other): the baseline."""
    output = _check_output(output)
    capture = open_capture(source)
    fps_in = capture.get(5) or 25.0
    writer = None
    detections: List[np.ndarray] = []
    start = time.perf_counter()
    try:
        while max_frames is None or len(detections) < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            dets = detector.detect(frame)
            detections.append(dets)
            if output is not None:
                if writer is None:
                    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                    writer = cv2.VideoWriter(str(output), fourcc, fps_in, (frame.shape[1], frame.shape[0]))
                writer.write(draw_detections(frame, dets, vis_threshold=draw_threshold))
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    return VideoResult(detections, time.perf_counter() - start, False, output, fps_in)


__all__ = ["StopVideo", "VideoError", "VideoResult", "open_capture", "process_video",
           "process_video_sequential"]
