"""Recognition data: training sets of aligned crops and verification pairs.

* :class:`FaceFolderDataset` -- one folder per identity of aligned crops (CASIA-WebFace, VGGFace2
  and the built-in synthetic set's layout).
* :class:`RecordIODataset` -- insightface's MXNet ``.rec`` + ``.idx`` training sets, without mxnet
  (:mod:`~retinaface.recognition.recordio`).
* :func:`read_lfw_pairs` -- LFW's ``pairs.txt`` over an image folder; :func:`load_verification_bin`
  -- insightface's ``.bin`` verification sets (lfw, cfp_fp, agedb_30), read with a restricted
  unpickler that can build only bytes, lists, tuples, bools, ints and None -- never code.
* :class:`VerificationPairs` -- either of them, as images or paths plus ``issame``.

Datasets return ``(image, label)`` with ``image`` the BGR uint8 crop, or ``transform(image)``.
They are plain map-style datasets (``__len__`` / ``__getitem__``, no torch import here), ready for
``torch.utils.data.DataLoader`` with workers. Malformed inputs raise :class:`RecognitionDataError`
naming the file and the line or offset.
"""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .recordio import RecordIOError, RecordIOReader

PathLike = Union[str, "os.PathLike[str]"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class RecognitionDataError(ValueError):
    """Malformed or missing recognition data; the message names the file and line or offset."""


def _decode(data: bytes, where: str) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if len(data) else None
    if image is None:
        raise RecognitionDataError(f"{where}: not a decodable image ({len(data)} bytes)")
    return image


def read_image(path: PathLike) -> np.ndarray:
    """BGR uint8 image at ``path``; a clear error when it is missing or unreadable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecognitionDataError(f"{path}: no such image") from None
    except OSError as error:
        raise RecognitionDataError(f"{path}: cannot read ({error.strerror})") from None
    return _decode(data, str(path))


# ---------------------------------------------------------------------------------------------
class FaceFolderDataset:
    """``root/<identity>/<image>``: one folder per identity, sorted names give labels ``0 .. C-1``.

    ``classes`` lists identity names, ``samples`` ``(path, label)`` pairs in sorted order,
    ``targets`` the labels. Items: ``(image or transform(image), label)``.
    """

    def __init__(self, root: PathLike, transform: Optional[Callable[[np.ndarray], Any]] = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise RecognitionDataError(f"{self.root}: no such folder")
        self.transform = transform
        wanted = tuple(e.lower() for e in extensions)
        self.classes: List[str] = []
        self.samples: List[Tuple[str, int]] = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in wanted)
            if not images:
                continue  # an identity without images has no label
            label = len(self.classes)
            self.classes.append(folder.name)
            self.samples += [(str(p), label) for p in images]
        if not self.samples:
            raise RecognitionDataError(f"{self.root}: no identity folders with images "
                                       f"({', '.join(wanted)}) found")
        self.targets: List[int] = [label for _, label in self.samples]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        path, label = self.samples[index]
        image = read_image(path)
        return (image if self.transform is None else self.transform(image)), label


class RecordIODataset:
    """insightface's ``train.rec`` + ``train.idx`` (MS1MV2, Glint360K, ...) without mxnet.

    When record 0 is insightface's header (``flag > 0``, labels ``(a, b)``), images are keys
    ``1 .. a-1`` and ``num_classes = b - a``; otherwise every record is an image and
    ``num_classes`` is ``max label + 1`` (found by reading every header, on first use). Each item is
    ``(image or transform(image), int label)``; files are opened once per DataLoader worker.
    """

    def __init__(self, rec_path: PathLike, idx_path: Optional[PathLike] = None,
                 transform: Optional[Callable[[np.ndarray], Any]] = None) -> None:
        try:
            self.reader = RecordIOReader(rec_path, idx_path)
        except RecordIOError as error:
            raise RecognitionDataError(str(error)) from None
        self.transform = transform
        self.rec_path = self.reader.rec_path
        self._num_classes: Optional[int] = None
        self.image_keys: List[int] = sorted(self.reader.keys)
        if self.image_keys:
            header, payload = self._record(self.image_keys[0])
            # insightface's header record: key 0, extra labels, no image
            if header.flag > 0 and self.image_keys[0] == 0 and not payload:
                first, end = int(header.label[0]), int(header.label[1]) if header.flag > 1 else int(header.label[0])
                self.image_keys = [k for k in self.image_keys if 1 <= k < first]
                if header.flag > 1:
                    self._num_classes = end - first
        if not self.image_keys:
            raise RecognitionDataError(f"{self.rec_path}: no image records")
        self.reader.close()  # workers open their own handles

    def _record(self, key: int):
        try:
            return self.reader.read_image_record(key)
        except RecordIOError as error:
            raise RecognitionDataError(str(error)) from None

    @staticmethod
    def _label(header) -> int:
        return int(header.label[0]) if header.flag > 0 else int(header.label)

    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            self._num_classes = max(self._label(self._record(k)[0]) for k in self.image_keys) + 1
        return self._num_classes

    def __len__(self) -> int:
        return len(self.image_keys)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        key = self.image_keys[index]
        header, payload = self._record(key)
        image = _decode(payload, f"{self.rec_path}: key {key} at offset {self.reader.offsets[key]}")
        return (image if self.transform is None else self.transform(image)), self._label(header)


# ---------------------------------------------------------------------------------------------
def _lfw_path(root: Path, name: str, number: str, where: str, ext: str) -> str:
    try:
        index = int(number)
    except ValueError:
        raise RecognitionDataError(f"{where}: image number {number!r} is not an integer") from None
    if index < 0:
        raise RecognitionDataError(f"{where}: image number {index} is negative")
    return str(root / name / f"{name}_{index:04d}.{ext}")


def _parse_lfw_pairs(pairs_txt: PathLike, image_root: PathLike, ext: str = "jpg",
                     check_files: bool = True) -> Tuple[List[Tuple[str, str, bool]], Optional[np.ndarray]]:
    """``(pairs, fold index per pair or None)`` of an LFW pairs file (see :func:`read_lfw_pairs`)."""
    pairs_txt, root = Path(pairs_txt), Path(image_root)
    try:
        lines = pairs_txt.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        raise RecognitionDataError(f"{pairs_txt}: no such pairs file") from None
    numbered = [(n, line.split()) for n, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise RecognitionDataError(f"{pairs_txt}: empty pairs file")
    folds, per_fold = 1, None
    first_line, header = numbered[0]
    if all(token.isdigit() for token in header) and len(header) in (1, 2):
        folds, per_fold = (1, int(header[0])) if len(header) == 1 else (int(header[0]), int(header[1]))
        numbered = numbered[1:]
    pairs: List[Tuple[str, str, bool]] = []
    for number, tokens in numbered:
        where = f"{pairs_txt}:{number}"
        if len(tokens) == 3:
            a = _lfw_path(root, tokens[0], tokens[1], where, ext)
            b = _lfw_path(root, tokens[0], tokens[2], where, ext)
            same = True
        elif len(tokens) == 4:
            a = _lfw_path(root, tokens[0], tokens[1], where, ext)
            b = _lfw_path(root, tokens[2], tokens[3], where, ext)
            same = False
        else:
            raise RecognitionDataError(f"{where}: expected 'name n1 n2' or 'name1 n1 name2 n2', "
                                       f"got {len(tokens)} fields")
        if check_files:
            for path in (a, b):
                if not os.path.isfile(path):
                    raise RecognitionDataError(f"{where}: image {path} does not exist")
        pairs.append((a, b, same))
    fold_index = None
    if per_fold is not None:
        expected = folds * 2 * per_fold
        if len(pairs) != expected:
            raise RecognitionDataError(f"{pairs_txt}:{first_line}: header announces {folds} fold(s) of {per_fold} "
                                       f"same + {per_fold} different pairs ({expected}), the file has {len(pairs)}")
        fold_index = np.repeat(np.arange(folds), 2 * per_fold)
    return pairs, fold_index


def read_lfw_pairs(pairs_txt: PathLike, image_root: PathLike, ext: str = "jpg",
                   check_files: bool = True) -> List[Tuple[str, str, bool]]:
    """``[(path_a, path_b, same)]`` from LFW's ``pairs.txt``: an optional header ``folds n`` (or
    ``n``), then ``name n1 n2`` (same person) or ``name1 n1 name2 n2`` (different) lines; images are
    ``image_root/<name>/<name>_<NNNN>.<ext>``. Errors name the file and line (a wrong field count, a
    non-integer number, a missing image, a header that disagrees with the number of lines)."""
    return _parse_lfw_pairs(pairs_txt, image_root, ext, check_files)[0]


class _SafeUnpickler(pickle.Unpickler):
    """Builds only what pickle makes without globals (bytes, str, lists, tuples, dicts, bools,
    ints, floats, None); the one global admitted is ``_codecs.encode`` with latin-1, which
    protocol-2 pickles use for bytes. Anything else -- every way to run code -- is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise pickle.UnpicklingError(f"refuses the global {module}.{name}: a verification .bin holds only "
                                     "bytes, lists, tuples and bools")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding.lower().replace("-", "") not in ("latin1", "iso88591") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refuses _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def load_verification_bin(path: PathLike) -> Tuple[List[np.ndarray], np.ndarray]:
    """``(images, issame)`` of an insightface verification ``.bin``: ``2 P`` BGR uint8 images in
    pair order (``a0, b0, a1, b1, ...``) and ``issame`` bool ``(P,)``.

    The file is a pickle of ``(list of encoded images, list of bools)``, read with a restricted
    unpickler (module doc). Errors name the file and the byte offset or image index.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecognitionDataError(f"{path}: no such verification file") from None
    stream = io.BytesIO(raw)
    try:
        content = _SafeUnpickler(stream, encoding="bytes").load()
    except Exception as error:  # pickle raises many types on damaged input
        raise RecognitionDataError(f"{path}: offset {stream.tell()}: not a verification .bin "
                                   f"({type(error).__name__}: {error})") from None
    if not (isinstance(content, (tuple, list)) and len(content) == 2):
        raise RecognitionDataError(f"{path}: expected a pickled (images, issame) pair, got {type(content).__name__}")
    bins, issame = content
    if not isinstance(bins, (list, tuple)) or not all(isinstance(b, (bytes, bytearray)) for b in bins):
        raise RecognitionDataError(f"{path}: the first element must be a list of encoded images (bytes)")
    if not isinstance(issame, (list, tuple)) or not all(isinstance(s, (bool, int)) for s in issame):
        raise RecognitionDataError(f"{path}: the second element must be a list of bools")
    if len(bins) != 2 * len(issame):
        raise RecognitionDataError(f"{path}: {len(bins)} images for {len(issame)} pairs (needs {2 * len(issame)})")
    images = [_decode(bytes(b), f"{path}: image {i} (pair {i // 2})") for i, b in enumerate(bins)]
    return images, np.asarray(issame, dtype=bool)


@dataclasses.dataclass
class VerificationPairs:
    """Verification pairs ``k = 0 .. P-1``: ``issame (P,)`` bool, and either ``images`` (``2 P``
    decoded BGR crops in pair order) or ``paths`` (``P`` ``(path_a, path_b)``). ``folds (P,)`` is the
    fold of each pair when the source defines folds (LFW's header), else ``None``."""

    issame: np.ndarray
    images: Optional[List[np.ndarray]] = None
    paths: Optional[List[Tuple[str, str]]] = None
    folds: Optional[np.ndarray] = None
    name: str = ""

    def __post_init__(self) -> None:
        self.issame = np.asarray(self.issame, dtype=bool)
        if (self.images is None) == (self.paths is None):
            raise ValueError("VerificationPairs needs exactly one of images or paths")
        count = len(self.images) // 2 if self.images is not None else len(self.paths)
        if count != len(self.issame) or (self.images is not None and len(self.images) % 2):
            raise ValueError(f"{count} pairs of images for {len(self.issame)} issame labels")

    def __len__(self) -> int:
        return len(self.issame)

    def pair(self, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The two BGR uint8 images of pair ``k``."""
        if self.images is not None:
            return self.images[2 * k], self.images[2 * k + 1]
        a, b = self.paths[k]
        return read_image(a), read_image(b)

    @classmethod
    def from_bin(cls, path: PathLike) -> "VerificationPairs":
        images, issame = load_verification_bin(path)
        return cls(issame, images=images, name=Path(path).stem)

    @classmethod
    def from_lfw(cls, pairs_txt: PathLike, image_root: PathLike, ext: str = "jpg") -> "VerificationPairs":
        pairs, folds = _parse_lfw_pairs(pairs_txt, image_root, ext)
        return cls(np.array([s for _, _, s in pairs], dtype=bool), paths=[(a, b) for a, b, _ in pairs],
                   folds=folds, name=Path(pairs_txt).parent.name or "pairs")

    @classmethod
    def from_synthetic(cls, root: PathLike) -> "VerificationPairs":
        """The held-out pairs of a set written by :func:`~retinaface.recognition.synthetic.generate_synthetic_identities`."""
        root = Path(root)
        return cls.from_lfw(root / "pairs.txt", root / "test")

    @classmethod
    def load(cls, path: PathLike) -> "VerificationPairs":
        """A ``.bin`` file, a ``pairs.txt`` (images beside it), or a synthetic-set folder."""
        path = Path(path)
        if path.is_dir():
            if (path / "pairs.txt").is_file() and (path / "test").is_dir():
                return cls.from_synthetic(path)
            raise RecognitionDataError(f"{path}: a folder of verification pairs needs pairs.txt and test/")
        if path.suffix == ".bin":
            return cls.from_bin(path)
        if path.suffix == ".txt":
            return cls.from_lfw(path, path.parent)
        raise RecognitionDataError(f"{path}: unknown verification file (expected a .bin, a pairs .txt or a folder)")


__all__ = ["FaceFolderDataset", "RecognitionDataError", "RecordIODataset", "VerificationPairs",
           "load_verification_bin", "read_image", "read_lfw_pairs"]
