"""Face embedding over what a user names (image files, folders, videos), into one output folder, and
the search of query faces in a gallery: the loops ``retinaface embed`` and ``retinaface identify``
run, here so that they can be called (and tested) without the commands, which only parse flags and
report.

:func:`embed_inputs` writes ``embeddings.jsonl`` (one line per image or video frame: its faces'
box, score, landmarks and the rows of their embeddings) and ``<input stem>.npy`` per input (the
``(N, D)`` float32 embeddings of its faces in the order of the JSON lines), and with ``crops`` each
aligned crop as ``<stem>_f<frame>_<i>.jpg``; every file atomically. :func:`identify_inputs` yields
each query face with its :class:`~retinaface.recognition.gallery.SearchResult`.

The analyzer is a :class:`~retinaface.recognition.analyzer.FaceAnalyzer` (``analyze(image)`` ->
faces with ``embedding``, ``crop`` and ``to_dict()``; ``embedding_size``), the gallery a
:class:`~retinaface.recognition.gallery.Gallery` (``search(embeddings, top_k, unknown_threshold)``);
both are taken as they are, so this module does not load the recognition package.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence

import cv2
import numpy as np

from ..fileio import atomic_write
from .sources import OutputNames, Source, SourceError, iter_frames

OUTPUT_FILE = "embeddings.jsonl"

# warn(message): an input that could not be read fully (the run goes on with the others)
Warn = Callable[[str], None]


@dataclasses.dataclass
class EmbedSummary:
    """What :func:`embed_inputs` did: faces embedded (those of inputs whose ``.npy`` was written),
    inputs given, the inputs that failed (their messages) and the JSON-lines file."""

    faces: int = 0
    inputs: int = 0
    failures: List[str] = dataclasses.field(default_factory=list)
    output: Optional[Path] = None


def embed_inputs(analyzer: Any, sources: Sequence[Source], folder: Path, crops: bool = False,
                 warn: Optional[Warn] = None) -> EmbedSummary:
    """Detect, align and embed every face of ``sources`` into ``folder`` (created; see the module
    docstring for its files). An input that fails midway keeps the faces read before the failure
    (its ``.npy`` holds them); one that fails before any face is left out. ``warn`` receives each
    failure's message."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = OutputNames(folder)
    summary = EmbedSummary(inputs=len(sources))
    lines: List[str] = []
    for source in sources:
        npy_path = names(source, ".npy")
        embeddings: List[np.ndarray] = []
        rows = 0
        try:
            for frame, image in iter_frames(source):
                faces = analyzer.analyze(image)
                record = {"source": source.location, "frame": frame, "embeddings": npy_path.name,
                          "rows": [rows, rows + len(faces)], "faces": [f.to_dict() for f in faces]}
                lines.append(json.dumps(record))
                for i, face in enumerate(faces):
                    embeddings.append(face.embedding)
                    if crops:
                        _write_jpeg(folder / f"{npy_path.stem}_f{frame}_{i}.jpg", face.crop)
                rows += len(faces)
        except SourceError as exc:
            summary.failures.append(str(exc))
            if warn is not None:
                warn(str(exc))
            if not embeddings:
                continue
        dim = analyzer.embedding_size
        array = np.stack(embeddings).astype(np.float32) if embeddings else np.zeros((0, dim), np.float32)
        with atomic_write(npy_path, "wb") as handle:
            np.save(handle, array)
        summary.faces += rows
    summary.output = folder / OUTPUT_FILE
    with atomic_write(summary.output) as handle:
        handle.write("\n".join(lines) + ("\n" if lines else ""))
    return summary


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    ok, buffer = cv2.imencode(".jpg", image)
    if not ok:
        raise OSError(f"{path}: OpenCV cannot encode this crop as JPEG")
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.tobytes())


@dataclasses.dataclass(frozen=True)
class IdentifiedFace:
    """One query face: where it was (source, frame, index in the frame), the face and its ranking."""

    source: Source
    frame: int
    index: int
    face: Any
    result: Any

    def to_dict(self) -> dict:
        """The JSON record ``retinaface identify --json`` prints."""
        return {"source": self.source.location, "frame": self.frame, "face": self.index, **self.face.to_dict(),
                **self.result.to_dict()}


def identify_inputs(analyzer: Any, gallery: Any, sources: Sequence[Source], top_k: int = 5,
                    unknown_threshold: Optional[float] = None,
                    warn: Optional[Warn] = None) -> Iterator[IdentifiedFace]:
    """Every face of ``sources`` (images, video frames) with its ``top_k`` gallery matches, in
    order; a best score below ``unknown_threshold`` is ``"unknown"``. An input that cannot be read
    is passed to ``warn`` and skipped."""
    for source in sources:
        try:
            for frame, image in iter_frames(source):
                faces = analyzer.analyze(image)
                if not faces:
                    continue
                results = gallery.search(np.stack([f.embedding for f in faces]), top_k=top_k,
                                         unknown_threshold=unknown_threshold)
                for i, (face, result) in enumerate(zip(faces, results)):
                    yield IdentifiedFace(source, frame, i, face, result)
        except SourceError as exc:
            if warn is not None:
                warn(str(exc))


__all__ = ["EmbedSummary", "IdentifiedFace", "OUTPUT_FILE", "embed_inputs", "identify_inputs"]
