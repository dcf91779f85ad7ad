"""Face search: a gallery of known people and cosine-similarity top-k queries.

A gallery folder holds one sub-folder per person with one or more images of that person
(photos, in which the most confident face is used, or aligned 112 x 112 crops with
``aligned=True``). Each person is represented by the normalized mean of their images' L2-normalized
embeddings (insightface's "template" averaging); a query embedding is compared with every person by
cosine similarity. :meth:`Gallery.search` returns the top-k people with scores and marks the query
"unknown" when the best score is below ``unknown_threshold``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..fileio import atomic_write

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
UNKNOWN = "unknown"


def list_images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclasses.dataclass
class Match:
    """One ranked gallery entry for a query."""

    name: str
    score: float


@dataclasses.dataclass
class SearchResult:
    """``identity`` is the best match's name, or ``"unknown"`` when its score is below the threshold."""

    identity: str
    score: float
    matches: List[Match]

    def to_dict(self) -> dict:
        return {"identity": self.identity, "score": round(float(self.score), 5),
                "matches": [{"name": m.name, "score": round(float(m.score), 5)} for m in self.matches]}


class Gallery:
    """People's names and one unit-norm template embedding each (``templates (P, D)``); ``counts``
    says how many images went into each template and ``skipped`` lists images without a usable face."""

    def __init__(self, names: Sequence[str], templates: np.ndarray, counts: Optional[Sequence[int]] = None,
                 skipped: Optional[List[Tuple[str, str]]] = None) -> None:
        templates = np.asarray(templates, dtype=np.float32)
        if templates.ndim != 2 or len(names) != len(templates):
            raise ValueError(f"{len(names)} names for templates of shape {templates.shape}")
        if len(set(names)) != len(names):
            raise ValueError("gallery names must be unique")
        self.names = list(names)
        self.templates = normalize_rows(templates) if len(templates) else templates
        self.counts = list(counts) if counts is not None else [1] * len(self.names)
        self.skipped = list(skipped or [])

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_embeddings(cls, embeddings: Dict[str, np.ndarray]) -> "Gallery":
        """``{name: (n, D) embeddings}`` -> one template per name (mean of the normalized rows)."""
        names, templates, counts = [], [], []
        for name, emb in embeddings.items():
            emb = normalize_rows(np.atleast_2d(emb))
            if len(emb) == 0:
                continue
            names.append(name)
            templates.append(emb.mean(axis=0))
            counts.append(len(emb))
        dim = templates[0].shape[0] if templates else 0
        return cls(names, np.stack(templates) if templates else np.zeros((0, dim), np.float32), counts)

    @classmethod
    def from_folder(cls, root: Union[str, Path], analyzer, aligned: bool = False) -> "Gallery":
        """Embed every image under ``root/<person>/``. Photos use their most confident face
        (``analyzer`` is a :class:`~retinaface.recognition.analyzer.FaceAnalyzer`); ``aligned``
        images are crops given straight to the embedder (resized to the crop size if needed).
        Unreadable images and photos without a face are recorded in ``skipped``; a person left
        with no image is an error naming the folder."""
        import cv2

        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"--gallery: {root} is not a folder")
        people = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not people:
            raise ValueError(f"--gallery: {root} has no person folders (expected {root}/<name>/<image>.jpg)")
        embeddings: Dict[str, np.ndarray] = {}
        skipped: List[Tuple[str, str]] = []
        size = analyzer.crop_size
        for person in people:
            paths = list_images(person)
            crops = []
            for path in paths:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is None:
                    skipped.append((str(path), "cannot be read as an image"))
                    continue
                if aligned:
                    if image.shape[:2] != (size, size):
                        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
                    crops.append(image)
                    continue
                faces = analyzer.select(analyzer.detector.detect(image))
                if len(faces) == 0:
                    skipped.append((str(path), "no face found"))
                    continue
                crops.append(analyzer.align(image, faces[:1])[0])  # detections are sorted by score
            if not crops:
                raise ValueError(f"--gallery: {person} has no usable image "
                                 f"({len(paths)} image files, {'none readable' if aligned else 'no face found'})")
            embeddings[person.name] = analyzer.embed(np.stack(crops))
        gallery = cls.from_embeddings(embeddings)
        gallery.skipped = skipped
        return gallery

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Cosine similarities ``(Q, P)`` of query embeddings ``(Q, D)`` with every person."""
        queries = normalize_rows(np.atleast_2d(queries))
        if queries.shape[1] != self.templates.shape[1]:
            raise ValueError(f"query embeddings have {queries.shape[1]} dimensions, the gallery "
                             f"{self.templates.shape[1]}")
        return queries @ self.templates.T

    def search(self, queries: np.ndarray, top_k: int = 5, unknown_threshold: Optional[float] = None
               ) -> List[SearchResult]:
        """The ``top_k`` best people per query (highest score first; ties in name order)."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        sims = self.scores(queries)
        results = []
        for row in sims:
            order = sorted(range(len(row)), key=lambda j: (-row[j], self.names[j]))[:top_k]
            matches = [Match(self.names[j], float(row[j])) for j in order]
            best = matches[0] if matches else Match(UNKNOWN, -1.0)
            identity = best.name
            if unknown_threshold is not None and best.score < unknown_threshold:
                identity = UNKNOWN
            results.append(SearchResult(identity, best.score, matches))
        return results

    def save(self, path: Union[str, Path]) -> None:
        """Names, templates and counts as an ``.npz`` written atomically (no pickles)."""
        with atomic_write(path, "wb") as handle:
            np.savez(handle, names=np.array(self.names, dtype=str), templates=self.templates,
                     counts=np.array(self.counts, dtype=np.int64))

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Gallery":
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls([str(n) for n in data["names"]], data["templates"], data["counts"].tolist())
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: not a gallery file written by Gallery.save ({exc})") from None
