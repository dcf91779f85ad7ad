"""Inputs of the detection command: image files, folders of images, video files and webcams.

``iter_sources`` expands what a user typed into :class:`Source` entries; ``iter_frames`` reads a
source's frames. Unreadable inputs raise :class:`SourceError` naming the input, so a caller can
report it in one line and carry on with the rest.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable, Iterator, List, Sequence, Tuple

import cv2
import numpy as np

# every output folder of a detect run holds this file; walking a folder skips such sub-folders, so a
# second run inside a photo folder does not detect faces in the first run's annotated copies
OUTPUT_MARKER = "detections.jsonl"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


class SourceError(RuntimeError):
    """An input that cannot be read; the message names it."""


@dataclasses.dataclass(frozen=True)
class Source:
    kind: str  # "image", "video" or "webcam"
    location: str  # a path, or a webcam index as text


def iter_sources(inputs: Sequence[str], skip: Iterable[Path] = ()) -> List[Source]:
    """Expand inputs: a folder yields its images and videos (sorted, recursively); a bare integer is a
    webcam index; anything else is a file classified by its suffix (unknown suffixes are tried as
    images). Walking a folder leaves out the folders in ``skip`` and every sub-folder holding
    :data:`OUTPUT_MARKER` (an earlier run's output); an input named explicitly is always taken."""
    skipped = {Path(p).resolve() for p in skip}
    sources: List[Source] = []
    for item in inputs:
        path = Path(item)
        if item.isdigit() and not path.exists():
            sources.append(Source("webcam", item))
        elif path.is_dir():
            for child in _walk(path, skipped):
                suffix = child.suffix.lower()
                if suffix in IMAGE_SUFFIXES:
                    sources.append(Source("image", str(child)))
                elif suffix in VIDEO_SUFFIXES:
                    sources.append(Source("video", str(child)))
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            sources.append(Source("video", item))
        else:
            sources.append(Source("image", item))
    return sources


def _walk(folder: Path, skipped: set) -> List[Path]:
    """Files under ``folder`` (sorted by path), not descending into skipped or output folders."""
    files: List[Path] = []
    for child in folder.iterdir():
        if child.is_dir():
            if child.resolve() in skipped or (child / OUTPUT_MARKER).is_file():
                continue
            files.extend(_walk(child, skipped))
        elif child.is_file():
            files.append(child)
    return sorted(files)


def fresh_output_folder(requested: Path) -> Path:
    """``requested`` if it does not exist or is an empty folder, else the first free numbered
    sibling ``<requested>2``, ``<requested>3``, ... (as ultralytics does): a run never writes into a
    folder that already holds files, so it cannot overwrite anything nor leave stale outputs beside
    its own. ``FileExistsError`` if ``requested`` is an existing file."""
    requested = Path(requested)
    if requested.exists() and not requested.is_dir():
        raise FileExistsError(f"{requested} is an existing file, not a folder")
    if not requested.exists() or not any(requested.iterdir()):
        return requested
    base = requested.resolve() if requested.name in ("", ".", "..") else requested
    number = 2
    while True:
        candidate = base.with_name(f"{base.name}{number}")
        if not candidate.exists() or (candidate.is_dir() and not any(candidate.iterdir())):
            return candidate
        number += 1


class OutputNames:
    """Output files for sources, unique within one run: ``folder/<stem><suffix>`` (``webcam<i>`` for
    a webcam); a name already given (``a.jpg`` and ``a.png``, or ``x.jpg`` in two sub-folders) gets
    ``_2``, ``_3``, ... so that no input overwrites another's output."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._used: set = set()

    def __call__(self, source: Source, suffix: str) -> Path:
        stem = f"webcam{source.location}" if source.kind == "webcam" else Path(source.location).stem
        name, count = f"{stem}{suffix}", 1
        while name in self._used:
            count += 1
            name = f"{stem}_{count}{suffix}"
        self._used.add(name)
        return self.folder / name


def read_image(path: str) -> np.ndarray:
    """A BGR uint8 image, or :class:`SourceError` naming the file."""
    if not Path(path).is_file():
        raise SourceError(f"{path}: no such file")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{path}: not a readable image")
    return image


def iter_frames(source: Source) -> Iterator[Tuple[int, np.ndarray]]:
    """``(frame index, BGR image)`` pairs of a source (one pair for an image)."""
    if source.kind == "image":
        yield 0, read_image(source.location)
        return
    if source.kind == "video" and not Path(source.location).is_file():
        raise SourceError(f"{source.location}: no such file")
    capture = cv2.VideoCapture(int(source.location) if source.kind == "webcam" else source.location)
    if not capture.isOpened():
        raise SourceError(f"{source.location}: cannot open {source.kind}")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield index, frame
            index += 1
        if index == 0:
            raise SourceError(f"{source.location}: no frames could be read")
        expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if source.kind == "video" else 0
        # the container's frame count is an estimate for some formats: a shortfall of a frame or
        # two (or 1 %) is not taken for damage
        if index < expected - max(2, expected // 100):
            # decoding failed mid-way (a truncated or damaged file); the frames read were yielded
            raise SourceError(f"{source.location}: stopped after {index} of {expected} frames "
                              f"(truncated or damaged video)")
    finally:
        capture.release()


def video_fps(path: str, default: float = 25.0) -> float:
    capture = cv2.VideoCapture(path)
    fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    capture.release()
    return fps if fps and fps > 0 else default


def detections_record(source: str, frame: int, detections: np.ndarray) -> str:
    """One JSON line: the source, the frame index and its faces (box, score, landmarks)."""
    faces = [{"box": [round(float(v), 2) for v in det[:4]], "score": round(float(det[4]), 5),
              "landmarks": [[round(float(det[5 + 2 * k]), 2), round(float(det[6 + 2 * k]), 2)]
                            for k in range(5)]}
             for det in detections]
    return json.dumps({"source": source, "frame": frame, "faces": faces})
