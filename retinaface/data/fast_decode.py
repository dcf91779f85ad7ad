"""Cheaper image decoding for training: one read of the file, the size from its header, only the
pixels of the sample's crop, and JPEG decoding at 1/2, 1/4 or 1/8 resolution when the crop will be
shrunk at least that much anyway.

Owns :func:`read_bytes` / :func:`decode_full` (``cv2.imdecode`` of the file's bytes, read in one
call: the same decoder and pixels as ``cv2.imread``, which opens the file twice and feeds libjpeg
through stdio, ~0.1-0.15 ms more per 1024 x 768 JPEG here), :func:`image_size_from_header` / :func:`size_from_header_bytes` (height and width
of a JPEG or PNG without decoding it), :func:`jpeg_info` (a JPEG header's facts: size, frame type, precision, components, EXIF orientation) and :func:`decode_reduced` (``cv2.IMREAD_REDUCED_COLOR_{2,4,8}``,
checked against the header's size), and :func:`decode_region` (one rectangle of a baseline JPEG,
the same pixels as ``cv2.imdecode`` cropped; :func:`region_decodable` says which files qualify).
libjpeg's reduced decoding scales in the DCT domain: reduced pixel ``i`` covers original pixels
``[i * f, (i + 1) * f)``, so a point at continuous coordinate ``u`` of the original lies at ``u / f``
of the reduced image (``retinaface.data.augment`` relies on that to keep the crop geometry exact).
"""
from __future__ import annotations

import functools
import os
import struct
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import cv2
import numpy as np

try:  # the compiled region decoder (setup.py builds it where libjpeg-turbo's headers exist)
    from . import _jpeg_region
except ImportError:  # pragma: no cover - depends on the build machine
    _jpeg_region = None

PathLike = Union[str, "os.PathLike[str]"]

REDUCTION_FACTORS = (8, 4, 2)
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
# start-of-frame markers carry the size: C0..CF except DHT (C4), JPG (C8) and DAC (CC)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_HEADER_BYTES = 1 << 16


def image_size_from_header(path: PathLike) -> Optional[Tuple[int, int]]:
    """``(height, width)`` of a JPEG (from its start-of-frame segment) or PNG (IHDR), reading at most
    64 KiB and decoding nothing; ``None`` for any other format or an unreadable header (the caller
    then decodes the whole file). Raises ``OSError`` when the file cannot be opened."""
    with open(path, "rb") as handle:
        return size_from_header_bytes(handle.read(_HEADER_BYTES))


def size_from_header_bytes(data: bytes) -> Optional[Tuple[int, int]]:
    """:func:`image_size_from_header` on the file's bytes (its first 64 KiB are enough)."""
    data = bytes(data[:_HEADER_BYTES])
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(height), int(width)
    info = jpeg_info(data)
    return (info.height, info.width) if info is not None else None


_EXIF_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class JpegInfo:
    """What the worker needs from a JPEG header: size, frame type, sample precision, number of
    components (1 grey, 3 YCbCr, 4 CMYK / YCCK), the EXIF orientation (``None``: no tag) and each
    component's ``(horizontal, vertical)`` sampling factors (``()`` when the header is cut short)."""

    height: int
    width: int
    marker: int
    precision: int
    components: int
    orientation: Optional[int]
    sampling: Tuple[Tuple[int, int], ...] = ()


def _exif_orientation(segment: bytes) -> Optional[int]:
    """The Orientation tag of an APP1 segment's payload (``Exif\\0\\0`` + TIFF), or ``None``; a
    malformed TIFF gives 0 (unknown), which sends the file to the CPU pipeline."""
    if not segment.startswith(b"Exif\x00\x00"):
        return None
    tiff = segment[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 0
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 0
    (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
    for k in range(count):
        entry = tiff[ifd + 2 + 12 * k: ifd + 14 + 12 * k]
        if len(entry) < 12:
            return 0
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag == _EXIF_ORIENTATION_TAG:
            return int(struct.unpack(order + "H", entry[8:10])[0]) if kind == 3 else 0
    return None


def jpeg_info(data: bytes) -> Optional[JpegInfo]:
    """The header facts of a JPEG's bytes (size, frame type, precision, components, EXIF
    orientation), or ``None`` when ``data`` is not a JPEG with a readable frame header. Walks the
    segments up to the frame header, decoding nothing."""
    if data[:2] != b"\xff\xd8":
        return None
    orientation = None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:                               # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:     # stand-alone markers
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker == 0xE1 and orientation is None:
            orientation = _exif_orientation(bytes(data[pos + 4:pos + 2 + length]))
        if marker in _SOF_MARKERS:
            if pos + 10 > len(data):
                return None
            precision, height, width, components = struct.unpack(">BHHB", data[pos + 4:pos + 10])
            if height == 0 or width == 0:
                return None
            table = data[pos + 10:pos + 10 + 3 * components]
            # each component: id, (H << 4) | V, quantisation table
            sampling = tuple((b >> 4, b & 15) for b in table[1::3]) if len(table) == 3 * components else ()
            return JpegInfo(int(height), int(width), int(marker), int(precision), int(components), orientation,
                            sampling)
        if marker == 0xDA:                               # scan before any frame header
            return None
        pos += 2 + length
    return None


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


# baseline and extended sequential Huffman frames: decoded row by row, so rows above a rectangle can
# be skipped and decoding stops below it (progressive and arithmetic-coded files decode whole)
_REGION_MARKERS = frozenset({0xC0, 0xC1})
# the chroma layouts the region decoder is tested on (4:4:4, 4:2:2, 4:4:0, 4:2:0, 4:1:1: luma
# factors, chroma at 1x1; tests/test_region_decode.py); any other layout is decoded whole
_REGION_SAMPLINGS = frozenset({((1, 1), (1, 1), (1, 1)), ((2, 1), (1, 1), (1, 1)), ((1, 2), (1, 1), (1, 1)),
                               ((2, 2), (1, 1), (1, 1)), ((4, 1), (1, 1), (1, 1))})


def region_decodable(info: Optional[JpegInfo]) -> bool:
    """Whether :func:`decode_region` may serve a JPEG with this header: 8-bit, three components in
    a tested chroma layout, baseline or extended sequential, no EXIF rotation (``cv2.imdecode``
    would rotate the image), and the region decoder built and agreeing with OpenCV here
    (:func:`region_decoder_available`). Grey, CMYK, RGB-coded, progressive, rotated or unusually
    subsampled files are decoded whole."""
    return (info is not None and info.marker in _REGION_MARKERS and info.precision == 8
            and info.components == 3 and info.sampling in _REGION_SAMPLINGS
            and info.orientation in (None, 1) and region_decoder_available())


def decode_region(data: bytes, x: int, y: int, width: int, height: int) -> Optional[np.ndarray]:
    """Pixels ``[y:y + height, x:x + width]`` of the JPEG ``data`` as a uint8 BGR view, equal to the
    same slice of ``cv2.imdecode(data)``, or ``None`` when the region decoder is not available or
    libjpeg reports an error or a warning (the caller then decodes the whole file with OpenCV).

    libjpeg-turbo skips the rows above the rectangle (entropy decoding only), transforms only the
    columns it needs and stops after its last row. Like a slice of the full image, the result is a
    view whose rows are longer than ``width`` (unless it spans the image's width), so OpenCV walks
    it row by row as it walks that slice."""
    return _decode_region(data, x, y, width, height) if region_decoder_available() else None


def _decode_region(data: bytes, x: int, y: int, width: int, height: int) -> Optional[np.ndarray]:
    try:
        buffer, row_width, x_offset = _jpeg_region.decode_region(data, int(x), int(y), int(width), int(height))
    except ValueError:
        return None
    rows = np.frombuffer(buffer, np.uint8, count=int(height) * row_width * 3).reshape(int(height), row_width, 3)
    return rows[:, x_offset:x_offset + int(width)]


# rectangles of the self-check: the image edges, iMCU boundaries (16 px) and odd offsets
_PROBE_RECTS = ((0, 0, 131, 77), (0, 0, 40, 30), (16, 16, 48, 32), (17, 5, 61, 61), (90, 40, 41, 37),
                (32, 0, 1, 77), (3, 60, 128, 17), (15, 33, 17, 1))


@functools.lru_cache(maxsize=None)
def region_decoder_available() -> bool:
    """Whether the compiled region decoder is built and, on probe JPEGs encoded here with 4:2:0,
    4:2:2 and 4:4:4 chroma, gives exactly ``cv2.imdecode``'s pixels for every probe rectangle.
    Checked once per process (a few milliseconds); if it disagrees (another libjpeg-turbo behind
    OpenCV), it warns once and training decodes whole images, as without it."""
    if _jpeg_region is None:
        return False
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (77, 131, 3), dtype=np.uint8), (5, 5), 1.5)
    for sampling in (cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
                     cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444):
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling])
        full = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        data = encoded.tobytes()
        for x, y, w, h in _PROBE_RECTS:
            region = _decode_region(data, x, y, w, h)
            if region is None or not np.array_equal(region, full[y:y + h, x:x + w]):
                warnings.warn("retinaface: the region JPEG decoder disagrees with OpenCV's decoder here "
                              "(another libjpeg-turbo?); training decodes whole images instead", RuntimeWarning)
                return False
    return True


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
