"""Image decoding for training: one read of the file, its size from the header, and JPEG decoding at
1/2, 1/4 or 1/8 resolution when the crop will be shrunk at least that much anyway.

Owns :func:`read_bytes` / :func:`decode_full` (``cv2.imdecode`` of the file's bytes, read in one
call: the same decoder and pixels as ``cv2.imread``, which opens the file twice and feeds libjpeg
through stdio, ~0.1-0.15 ms more per 1024 x 768 JPEG here), :func:`image_size` (the project's one
header reader: ``(width, height)`` of any image Pillow identifies, without decoding its pixels) and
:func:`decode_reduced` (``cv2.IMREAD_REDUCED_COLOR_{2,4,8}``, checked against the header's size).
libjpeg's reduced decoding scales in the DCT domain: reduced pixel ``i`` covers original pixels
``[i * f, (i + 1) * f)``, so a point at continuous coordinate ``u`` of the original lies at ``u / f``
of the reduced image (``retinaface.data.augment`` relies on that to keep the crop geometry exact).

A compiled decoder of a JPEG's crop region lived here until 0.x; a training epoch on real WIDER
photos ran no faster with it (on / off 0.989 images/s at the default two workers, data loading
~1 % of the step time: benchmarks/bench_region_decode_epoch.py at commit fded74b), so it went.
"""
from __future__ import annotations

import io
import os
import struct
from typing import Optional, Tuple, Union

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

PathLike = Union[str, "os.PathLike[str]"]

REDUCTION_FACTORS = (8, 4, 2)
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def image_size(source: Union[PathLike, bytes]) -> Optional[Tuple[int, int]]:
    """``(width, height)`` from the header of an image file (a path) or of its bytes, decoding no
    pixels (Pillow's lazy open): the size as stored, before any EXIF rotation. ``None`` when the
    header is not one Pillow identifies or is damaged; raises ``OSError`` when a path cannot be opened."""
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
    try:
        with Image.open(handle) as image:
            width, height = image.size
    except (UnidentifiedImageError, SyntaxError, ValueError, EOFError, struct.error):
        return None
    except OSError:
        if not isinstance(handle, io.BytesIO) and not os.path.isfile(handle):
            raise
        return None  # Pillow reports some damaged headers as OSError
    return (int(width), int(height)) if width > 0 and height > 0 else None


def reduction_factor(side: float, output_size: int) -> int:
    """Largest ``f`` in (8, 4, 2) with ``side / f >= output_size`` (the crop is still shrunk, or
    kept, after decoding at ``1/f``), else 1."""
    for f in REDUCTION_FACTORS:
        if side >= f * output_size:
            return f
    return 1


def decode_reduced(source: Union[PathLike, bytes], factor: int, height: int, width: int) -> Optional[np.ndarray]:
    """The file (a path, or its bytes from :func:`read_bytes`) decoded at ``1/factor`` (uint8 BGR,
    ``ceil(height / f) x ceil(width / f)``), or ``None`` when the decoded size is not that (e.g. an
    EXIF rotation swapped the sides, or the header lied): the caller then falls back to a full decode."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        image = cv2.imdecode(np.frombuffer(source, np.uint8), _REDUCED_FLAGS[factor])
    else:
        image = cv2.imread(os.fspath(source), _REDUCED_FLAGS[factor])
    if image is None or image.ndim != 3:
        return None
    expected = (-(-height // factor), -(-width // factor))
    return image if image.shape[:2] == expected else None




def _unreadable(path: PathLike) -> OSError:
    reason = "file not found" if not os.path.exists(path) else "not a readable image"
    return OSError(f"cannot read image {path}: {reason}")


def read_bytes(path: PathLike) -> bytes:
    """The whole file; raises ``OSError`` naming it when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise _unreadable(path) from error


def decode_full(data: bytes, path: PathLike) -> np.ndarray:
    """``data`` (the bytes of the file ``path``) decoded as ``cv2.imread(path)`` would: uint8 BGR
    HxWx3, EXIF orientation applied. ``cv2.imdecode`` runs the same decoder on the bytes in memory;
    a format it cannot take from memory falls back to ``cv2.imread``. Raises ``OSError`` naming the
    file when neither can read it."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise _unreadable(path)
    return image


def read_full(path: PathLike) -> np.ndarray:
    """``cv2.imread(path)`` as uint8 BGR HxWx3 (same pixels, read once: :func:`decode_full`);
    raises ``OSError`` naming the file when it cannot."""
    return decode_full(read_bytes(path), path)
