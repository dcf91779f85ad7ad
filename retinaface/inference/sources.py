"""Inputs of the detection command: image files, folders of images, video files and webcams.

``iter_sources`` expands what a user typed into :class:`Source` entries; ``iter_frames`` reads a
source's frames. Unreadable inputs raise :class:`SourceError` naming the input, so a caller can
report it in one line and carry on with the rest.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..fileio import claim_fresh_folder

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


@dataclasses.dataclass
class SourceList:
    """What the inputs expand to: each file once (``sources``), and the entries left out because
    they name a file or folder already taken (``repeated``: ``(path, the path it repeats)``; a
    symbolic link looping back to a folder above it is one of them)."""

    sources: List[Source]
    repeated: List[Tuple[str, str]]


def iter_sources(inputs: Sequence[str], skip: Iterable[Path] = ()) -> List[Source]:
    """:func:`collect_sources`' sources (the repeats left out silently)."""
    return collect_sources(inputs, skip).sources


def collect_sources(inputs: Sequence[str], skip: Iterable[Path] = ()) -> SourceList:
    """Expand inputs: a folder yields its images and videos (sorted, recursively); a bare integer is a
    webcam index; anything else is a file classified by its suffix (unknown suffixes are tried as
    images). Walking a folder leaves out the folders in ``skip`` and every sub-folder holding
    :data:`OUTPUT_MARKER` (an earlier run's output); an input named explicitly is always taken.

    Each file and folder is taken once, by its real path (symbolic links resolved): a second link
    to a file, a file named twice, or a link back to a folder above it (a loop that would otherwise
    be walked until the path length limit) is left out and listed in ``repeated``."""
    skipped = {Path(p).resolve() for p in skip}
    taken: Dict[str, str] = {}   # real path -> the path it was first taken as
    out = SourceList([], [])

    def take(kind: str, location: str) -> None:
        real = os.path.realpath(location)
        if real in taken:
            out.repeated.append((location, taken[real]))
            return
        taken[real] = location
        out.sources.append(Source(kind, location))

    for item in inputs:
        path = Path(item)
        if item.isdigit() and not path.exists():
            out.sources.append(Source("webcam", item))
        elif path.is_dir():
            for child in _walk(path, skipped, taken, out.repeated):
                suffix = child.suffix.lower()
                if suffix in IMAGE_SUFFIXES:
                    take("image", str(child))
                elif suffix in VIDEO_SUFFIXES:
                    take("video", str(child))
        elif not path.exists():
            out.sources.append(Source("video" if path.suffix.lower() in VIDEO_SUFFIXES else "image", item))
        else:
            take("video" if path.suffix.lower() in VIDEO_SUFFIXES else "image", item)
    return out


def _walk(folder: Path, skipped: set, taken: Dict[str, str], repeated: List[Tuple[str, str]]) -> List[Path]:
    """Files under ``folder`` (sorted by path), not descending into skipped or output folders, nor
    into a folder already walked under another path (recorded in ``repeated``)."""
    real = os.path.realpath(folder)
    if real in taken:
        repeated.append((str(folder), taken[real]))
        return []
    taken[real] = str(folder)
    files: List[Path] = []
    for child in sorted(folder.iterdir()):
        if child.is_dir():
            if child.resolve() in skipped or (child / OUTPUT_MARKER).is_file():
                continue
            files.extend(_walk(child, skipped, taken, repeated))
        elif child.is_file():
            files.append(child)
    return sorted(files)


def claim_output_folder(requested: Path) -> Path:
    """The output folder of a run, claimed for this process alone (:func:`retinaface.fileio.claim_fresh_folder`):
    ``requested`` if it does not exist or holds nothing, else the first free numbered sibling
    ``<requested>2``, ``<requested>3``, ... Two runs started at once into one folder each get their
    own. ``FileExistsError`` if ``requested`` is an existing file. Release it with
    :func:`retinaface.fileio.release_claim` once the run has written its files."""
    requested = Path(requested)
    if requested.exists() and not requested.is_dir():
        raise FileExistsError(f"{requested} is an existing file, not a folder")
    return claim_fresh_folder(requested)


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


def read_image(path: str, allow_partial: bool = False) -> np.ndarray:
    """A BGR uint8 image, or :class:`SourceError` naming the file. A JPEG whose data ends before
    its last scan (a cut download or copy) is refused too, unless ``allow_partial``: OpenCV would
    return the decodable top part with grey below and no signal but a libjpeg line on stderr."""
    if not Path(path).is_file():
        raise SourceError(f"{path}: no such file")
    try:
        with open(path, "rb") as handle:  # read once: the same bytes are decoded and checked
            data = handle.read()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    # cv2.imdecode runs cv2.imread's decoder (EXIF orientation too); a format it cannot take from
    # memory is read from the file
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None and data:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{path}: not a readable image")
    if not allow_partial:
        problem = jpeg_incomplete(data)
        if problem:
            raise SourceError(f"{path}: {problem} (--allow-partial detects on the decodable part)")
    return image


def jpeg_incomplete(data: bytes) -> Optional[str]:
    """Why the JPEG ``data`` decodes only partly, or ``None`` (complete, or not a JPEG).

    The decoder's own signal: Pillow's libjpeg decoder, fed the data with truncated images not
    allowed, raises when the entropy-coded data ends before the image does. It decodes at 1/8
    scale (libjpeg scales in the DCT, after reading every coefficient), about half a full
    decode's time."""
    if not data.startswith(b"\xff\xd8"):
        return None
    from PIL import Image, ImageFile  # Pillow only for a JPEG's completeness check: most runs read none

    if ImageFile.LOAD_TRUNCATED_IMAGES:  # set process-wide by some other library: check ourselves
        return None if data.rstrip(b"\x00").endswith(b"\xff\xd9") else "JPEG data ends before the image does"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft(None, (max(1, image.size[0] // 8), max(1, image.size[1] // 8)))
            image.load()
    except OSError as exc:  # "image file is truncated (...)", or a broken stream
        return f"decodes only partly ({exc})"
    except Exception as exc:  # noqa: BLE001 - Pillow raises several types for damaged data
        return f"decodes only partly ({type(exc).__name__}: {exc})"
    return None


def iter_frames(source: Source, allow_partial: bool = False) -> Iterator[Tuple[int, np.ndarray]]:
    """``(frame index, BGR image)`` pairs of a source (one pair for an image; ``allow_partial``:
    see :func:`read_image`)."""
    if source.kind == "image":
        yield 0, read_image(source.location, allow_partial)
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


def dense_landmark_fields(points: Optional[np.ndarray] = None, pose: Optional[Sequence[float]] = None
                          ) -> Dict[str, object]:
    """The JSON fields of one face's dense landmarks: ``landmarks_dense`` (``[[x, y], ...]``, pixels,
    2 decimals) and ``head_pose`` (``{"yaw", "pitch", "roll"}``, degrees, 2 decimals); each only
    when given."""
    fields: Dict[str, object] = {}
    if points is not None:
        fields["landmarks_dense"] = [[round(float(x), 2), round(float(y), 2)] for x, y in np.asarray(points)]
    if pose is not None:
        fields["head_pose"] = {name: round(float(v), 2) for name, v in zip(("yaw", "pitch", "roll"), pose)}
    return fields


def detections_record(source: str, frame: int, detections: np.ndarray, output: Optional[str] = None,
                      crops: Optional[Sequence[str]] = None,
                      dense: Optional[Sequence[Optional[Dict[str, object]]]] = None) -> str:
    """One JSON line: the source, the frame index and its faces (box, score, landmarks); with
    ``output``, the annotated copy written for it, with ``crops`` its aligned face crops, and with
    ``dense`` (one entry per row of ``detections``) each face's :func:`dense_landmark_fields`
    (``None``: none for that face)."""
    faces = [{"box": [round(float(v), 2) for v in det[:4]], "score": round(float(det[4]), 5),
              "landmarks": [[round(float(det[5 + 2 * k]), 2), round(float(det[6 + 2 * k]), 2)]
                            for k in range(5)]}
             for det in detections]
    if dense is not None:
        if len(dense) != len(faces):
            raise ValueError(f"dense fields for {len(dense)} faces, the frame has {len(faces)}")
        for face, fields in zip(faces, dense):
            face.update(fields or {})
    record = {"source": source, "frame": frame, "faces": faces}
    if output is not None:
        record["output"] = output
    if crops is not None:
        record["crops"] = list(crops)
    return json.dumps(record)
