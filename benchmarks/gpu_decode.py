"""Training images decoded and augmented on the training GPU: a benchmark, not part of the package.

It left ``retinaface/data`` (and ``retinaface train`` its ``--decode-device`` flag) because no GPU
measurement has shown it pays; ``benchmarks/gpu_check.py`` (its ``decode`` check) trains with it
beside the CPU pipeline and says whether it helps on the machine it runs on
(:class:`DeviceDecodingTrainer`). Should it pay, it can come back with that measurement.

It owns the split of the training pipeline between DataLoader workers and the main process when
the JPEGs are decoded by ``torchvision.io.decode_jpeg`` on the GPU (nvJPEG):

* workers (:class:`EncodedTrainDataset`) read the file's bytes, take its size from the JPEG
  header (:func:`jpeg_info`) and draw the sample with :meth:`TrainTransform.plan
  <retinaface.data.augment.TrainTransform.plan>` from the same ``(seed, epoch, index)`` generator
  as the CPU pipeline, so crop square, distortion, mirror flag, interpolation and the ``(K, 15)``
  targets are exactly the CPU pipeline's. They also turn the plan into small tables (the
  distortion's 256-entry maps, :func:`distortion_tables`; the resize's taps, :func:`resize_taps`);
* :func:`encoded_collate` packs a batch: the bytes in one tensor, the tables and taps stacked;
* in the main process :class:`DeviceBatchDecoder` decodes the batch's bytes in one
  ``decode_jpeg(list, device=...)`` call and runs crop, photometric distortion, pad, mirror,
  resize and mean subtraction as torch ops on that device, giving the ``(B, 3, S, S)`` float32
  batch the CPU pipeline gives; :class:`DecodingLoader` wraps the DataLoader so the trainer sees
  ordinary ``(images, targets)`` batches.

Everything is device-generic: with ``device="cpu"`` (how the tests run it) torchvision decodes with
libjpeg-turbo, which gives cv2's pixels exactly, so only the float arithmetic below differs.

Files the device path does not take are rendered by the CPU pipeline in the worker instead
(``WiderFaceTrainDataset.__getitem__``, bit for bit): non-JPEG files (PNG, BMP, ...), grayscale and
CMYK / YCCK JPEGs, 12-bit, lossless or arithmetic-coded JPEGs, and JPEGs with an EXIF orientation
(``decode_jpeg`` applies it on the CPU only; ``cv2.imread`` applies it). A JPEG that fails to decode
on the device, or decodes to another size than its header's, is rendered by the CPU pipeline in
the main process (slow, rare, logged once), which also names a file that cannot be read at all.

How the pixels differ from the CPU pipeline (documented, not hidden; ``tests/test_gpu_decode.py``
measures them):

* decoding: on the CPU torchvision's libjpeg-turbo gives cv2's pixels exactly. nvJPEG's IDCT and
  chroma upsampling are not libjpeg-turbo's (no "fancy" upsampling), so colours along sharp edges
  are expected to differ by a few grey levels; not measured yet (no GPU was lent when this was
  written): the GPU check compares the training losses of both settings on the same samples;
* resize: :func:`resize_taps` reproduces ``cv2.resize``'s sample positions and kernels for all five
  interpolations (including ``INTER_AREA``'s two regimes and ``INTER_NEAREST``'s floor rule) in
  float32, where OpenCV uses 11-bit fixed-point weights: nearest, cubic and area (shrinking) agree
  exactly or nearly so, Lanczos-4 and area (enlarging) differ by 1 grey level on a few per cent of
  pixels, and linear on ~12 %, always upwards: OpenCV's vectorised vertical pass truncates twice,
  which makes its linear resize 1/8 grey level darker on average than exact rounding;
* distortion: the lookup tables are the CPU's own (``augment.value_maps``) and BGR->HSV is OpenCV's
  integer arithmetic, bit for bit. HSV->BGR is OpenCV's vectorised float path (fused multiply-add,
  truncation), bit for bit on the columns OpenCV vectorises; OpenCV itself rounds instead on the
  last ``width % 32`` columns of each row (its scalar tail on an AVX2 build), where the CPU pipeline
  is half a grey level brighter on average than here (a few per cent of a real crop's columns).

So the sample distribution is the CPU pipeline's; it is opt-in because it is not bit-identical,
and because it is not always faster: the decode and the per-sample torch ops are issued by the
main process (one thread, between training steps), and nvJPEG may run part of the decoding
(Huffman) on that host thread. ``benchmarks/gpu_check.py`` measures both settings on the machine.
NVIDIA DALI would move the crop into the decoder (ROI decoding) but adds a large dependency and a
second augmentation implementation; torchvision's decoder is already installed. torchvision marks
its image decoders deprecated since 0.29 (in favour of TorchCodec); the call lives in
:meth:`DeviceBatchDecoder._decode` only.
"""
from __future__ import annotations

import functools
import logging
import struct
import warnings
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from torch.utils.data import DataLoader, DistributedSampler

from retinaface.data.augment import Distortion, SamplePlan, TrainTransform, _hue_lut, _lut, value_maps
from retinaface.data.dataset import LoaderWrapper, WiderFaceTrainDataset, sample_rng, worker_init_fn
from retinaface.data.fast_decode import read_bytes
from retinaface.data.labels import ImageAnnotation, load_training_annotations
from retinaface.engine.builders import TrainData, data_root, loader_options
from retinaface.engine.trainer import Trainer

logger = logging.getLogger(__name__)

# start-of-frame markers carry the size: C0..CF except DHT (C4), JPG (C8) and DAC (CC)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


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


DECODE_DEVICES = ("cpu", "cuda")

# SOF0 baseline, SOF1 extended sequential, SOF2 progressive (Huffman-coded, what nvJPEG takes);
# the others (lossless, arithmetic coding, hierarchical) go to the CPU pipeline
_DEVICE_SOF = frozenset((0xC0, 0xC1, 0xC2))


def device_decodable(info: Optional[JpegInfo]) -> bool:
    """Whether the device path gives this file's ``cv2.imread`` image: an 8-bit three-component
    Huffman JPEG (header facts: :func:`jpeg_info`) without an EXIF
    rotation or mirror."""
    return (info is not None and info.marker in _DEVICE_SOF and info.precision == 8 and info.components == 3
            and info.orientation in (None, 1))


# --------------------------------------------------------------------------- what workers compute
@functools.lru_cache(maxsize=1024)   # crop sides repeat (five scales of a few image sizes)
def resize_taps(src: int, dst: int, interpolation: int) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`_resize_taps`, cached; the arrays are read-only (they are shared)."""
    taps = _resize_taps(int(src), int(dst), int(interpolation))
    for array in taps:
        array.setflags(write=False)
    return taps


def _resize_taps(src: int, dst: int, interpolation: int) -> Tuple[np.ndarray, np.ndarray]:
    """``cv2.resize``'s 1-D resampling from ``src`` to ``dst`` pixels as taps: output pixel ``i`` is
    ``sum_t weight[i, t] * input[index[i, t]]``. Returns ``(index (dst, T) int64, weight (dst, T)
    float32)``; indices are clamped to the image, which is OpenCV's border rule for resize.

    The sample positions and kernels are OpenCV's (``imgproc/src/resize.cpp``): linear, cubic
    (A = -0.75) and Lanczos-4 sample at ``(i + 0.5) * src / dst - 0.5``; nearest takes
    ``floor(i * src / dst)``; area averages the input cell ``[i, i + 1) * src / dst`` when shrinking
    and uses OpenCV's "area" variant of linear interpolation when enlarging. Equal sizes copy."""
    i = np.arange(dst, dtype=np.float64)
    # OpenCV's own doubles: the inverse of dst / src is not always src / dst to the last bit, and
    # sample positions that land on whole pixels (area enlarging, nearest) floor differently
    inv_scale = dst / src
    scale = 1.0 / inv_scale
    if src == dst:
        return i.astype(np.int64)[:, None], np.ones((dst, 1), np.float32)
    if interpolation == cv2.INTER_NEAREST:
        index = np.minimum(np.floor(i * scale).astype(np.int64), src - 1)
        return index[:, None], np.ones((dst, 1), np.float32)
    if interpolation == cv2.INTER_AREA and scale > 1:
        return _area_taps(src, dst, scale)
    if interpolation == cv2.INTER_AREA:          # enlarging: linear with OpenCV's area coefficients
        left = np.floor(i * scale)
        frac = ((i + 1) - (left + 1) * inv_scale).astype(np.float32).astype(np.float64)
        frac = np.where(frac <= 0, 0.0, frac - np.floor(frac))
        weights = np.stack([1 - frac, frac], axis=1)
        first = left
    else:
        pos = ((i + 0.5) * scale - 0.5).astype(np.float32).astype(np.float64)
        left = np.floor(pos)
        frac = pos - left
        if interpolation == cv2.INTER_LINEAR:
            weights = np.stack([1 - frac, frac], axis=1)
            first = left
        elif interpolation == cv2.INTER_CUBIC:
            a = -0.75
            x = frac
            w0 = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
            w1 = ((a + 2) * x - (a + 3)) * x * x + 1
            w2 = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1
            weights = np.stack([w0, w1, w2, 1 - w0 - w1 - w2], axis=1)
            first = left - 1
        elif interpolation == cv2.INTER_LANCZOS4:
            d = frac[:, None] + 3 - np.arange(8)[None, :]
            weights = np.sinc(d) * np.sinc(d / 4)
            weights /= weights.sum(axis=1, keepdims=True)
            first = left - 3
        else:
            raise ValueError(f"unsupported interpolation {interpolation}")
    index = first[:, None].astype(np.int64) + np.arange(weights.shape[1])[None, :]
    return np.clip(index, 0, src - 1), weights.astype(np.float32)


def _area_taps(src: int, dst: int, scale: float) -> Tuple[np.ndarray, np.ndarray]:
    """Shrinking with INTER_AREA: OpenCV's ``computeResizeAreaTab`` (each output pixel the mean of
    its input cell, partial pixels at the cell's ends weighted by their overlap)."""
    rows: List[List[Tuple[int, float]]] = []
    for i in range(dst):
        start = i * scale
        end = start + scale
        cell = min(scale, src - start)
        first, last = int(np.ceil(start)), int(np.floor(end))
        last = min(last, src - 1)
        first = min(first, last)
        taps = []
        if first - start > 1e-3:
            taps.append((first - 1, (first - start) / cell))
        taps += [(s, 1.0 / cell) for s in range(first, last)]
        if end - last > 1e-3:
            taps.append((last, min(end - last, 1.0, cell) / cell))
        rows.append(taps)
    width = max(len(r) for r in rows)
    index = np.zeros((dst, width), np.int64)
    weight = np.zeros((dst, width), np.float32)
    for i, taps in enumerate(rows):
        for t, (s, w) in enumerate(taps):
            index[i, t], weight[i, t] = s, w
    return index, weight


# Rows of the per-sample distortion tables (each a 256-entry uint8 map, identity when unused).
_BEFORE, _SATURATION, _HUE, _AFTER = range(4)
_IDENTITY = np.arange(256, dtype=np.uint8)


def distortion_tables(d: Optional[Distortion]) -> Tuple[np.ndarray, Tuple[bool, bool, bool, bool]]:
    """Step 2 (``augment.apply_distortion``) as four 256-entry uint8 maps and which of them apply:
    the brightness / contrast maps before and after the HSV steps (``augment.value_maps``), the
    saturation map and the hue map (``augment._lut``, ``augment._hue_lut``): the CPU's own tables."""
    tables = np.tile(_IDENTITY, (4, 1))
    if d is None:
        return tables, (False, False, False, False)
    before, after = value_maps(d)
    maps = {_BEFORE: before, _AFTER: after,
            _SATURATION: None if d.saturation is None else _lut(alpha=d.saturation),
            _HUE: None if d.hue is None else _hue_lut(d.hue)}
    for row, table in maps.items():
        if table is not None:
            tables[row] = table
    return tables, tuple(maps[row] is not None for row in range(4))


# --------------------------------------------------------------------------- torch ops (any device)
# OpenCV's uint8 BGR->HSV divides through tables in 12-bit fixed point (color_hsv.simd.hpp)
_HSV_SHIFT = 12
_SDIV = np.array([0] + [round((255 << _HSV_SHIFT) / v) for v in range(1, 256)], np.int32)
_HDIV = np.array([0] + [round((180 << _HSV_SHIFT) / (6.0 * v)) for v in range(1, 256)], np.int32)
# which of (v, v(1-s), v(1-s f), v(1-s(1-f))) is b, g, r in each hue sector (OpenCV's sector_data)
_SECTORS = np.array([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]], np.int64)


@functools.lru_cache(maxsize=None)
def _hsv_constants(device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # copied to each device once: a copy from pageable memory per sample would make the host wait
    # for the GPU's queue (the training step) every time
    return tuple(torch.as_tensor(t, device=device) for t in (_SDIV, _HDIV, _SECTORS))


def bgr_to_hsv(image: torch.Tensor) -> torch.Tensor:
    """``cv2.cvtColor(COLOR_BGR2HSV)`` of a uint8 ``(3, H, W)`` BGR tensor: uint8 ``(3, H, W)``,
    H in 0..179, with OpenCV's integer arithmetic (bit for bit)."""
    b, g, r = image.to(torch.int32).unbind(0)
    v = torch.maximum(torch.maximum(b, g), r)
    diff = v - torch.minimum(torch.minimum(b, g), r)
    half = 1 << (_HSV_SHIFT - 1)
    sdiv, hdiv, _ = _hsv_constants(image.device)
    s = (diff * sdiv[v] + half) >> _HSV_SHIFT
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * hdiv[diff] + half) >> _HSV_SHIFT
    h = torch.where(h < 0, h + 180, h)
    return torch.stack([h, s, v]).to(torch.uint8)


def hsv_to_bgr(hsv: torch.Tensor) -> torch.Tensor:
    """``cv2.cvtColor(COLOR_HSV2BGR)`` of a uint8 ``(3, H, W)`` HSV tensor (H in 0..179): OpenCV's
    float32 formula (``HSV2RGB_native``) as its vectorised uint8 path evaluates it (``1 - s * f``
    fused into one rounding, the result truncated), bit for bit with OpenCV 5.0 on x86."""
    h, s, v = hsv.to(torch.float32).unbind(0)
    s = s * np.float32(1 / 255)
    v = v * np.float32(1 / 255)
    h = h * np.float32(6 / 180)
    sector = torch.floor(h)
    f = h - sector

    def fused(t: torch.Tensor) -> torch.Tensor:   # 1 - s * t rounded once, as a fused multiply-add
        return (1 - s.to(torch.float64) * t.to(torch.float64)).to(torch.float32)

    tab = torch.stack([v, v * (1 - s), v * fused(f), v * fused(1 - f)]) * 255   # (4, H, W)
    pick = _hsv_constants(hsv.device)[2][sector.to(torch.int64).clamp_(0, 5)]  # (H, W, 3)
    bgr = torch.gather(tab, 0, pick.permute(2, 0, 1))
    return bgr.floor_().clamp_(0, 255).to(torch.uint8)


def apply_distortion_tables(image: torch.Tensor, tables: torch.Tensor, used: Sequence[bool]) -> torch.Tensor:
    """Step 2 on a uint8 ``(3, H, W)`` BGR tensor with the maps of :func:`distortion_tables`
    (``tables`` a uint8 ``(4, 256)`` tensor on the image's device)."""
    if used[_BEFORE]:
        image = tables[_BEFORE][image.to(torch.int64)]
    if used[_SATURATION] or used[_HUE]:
        h, s, v = bgr_to_hsv(image).unbind(0)
        if used[_SATURATION]:
            s = tables[_SATURATION][s.to(torch.int64)]
        if used[_HUE]:
            h = tables[_HUE][h.to(torch.int64)]
        image = hsv_to_bgr(torch.stack([h, s, v]))
    if used[_AFTER]:
        image = tables[_AFTER][image.to(torch.int64)]
    return image


def resample(image: torch.Tensor, rows: Tuple[torch.Tensor, torch.Tensor],
             cols: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``(3, H, W)`` -> ``(3, S, S)`` float32 through the taps of :func:`resize_taps` (``rows``
    for the height, ``cols`` for the width), then rounded and clipped to uint8's range, as
    ``cv2.resize`` of a uint8 image stores it. Separable, float32 throughout (gathers and sums, no
    matrix product, so TF32 settings cannot touch it)."""
    image = image.to(torch.float32)
    (ri, rw), (ci, cw) = rows, cols
    c, _, width = image.shape
    out_h, taps_h = ri.shape
    out_w, taps_w = ci.shape
    tmp = image.index_select(1, ri.reshape(-1)).view(c, out_h, taps_h, width)
    tmp = (tmp * rw.view(1, out_h, taps_h, 1)).sum(2)                                  # (3, S, W)
    out = tmp.index_select(2, ci.reshape(-1)).view(c, out_h, out_w, taps_w)
    out = (out * cw.view(1, 1, out_w, taps_w)).sum(3)                                  # (3, S, S)
    # OpenCV's fixed-point paths round half up
    return torch.floor_(out.add_(0.5)).clamp_(0, 255)


# --------------------------------------------------------------------------- data set and batch
@dataclass
class EncodedSample:
    """One training sample as a worker hands it over: either the JPEG's bytes and the device
    path's tables (``data`` set), or the CPU pipeline's finished image (``image`` set)."""

    index: int
    targets: torch.Tensor
    data: Optional[np.ndarray] = None          # uint8 file bytes
    image: Optional[torch.Tensor] = None       # (3, S, S) float32 from the CPU pipeline
    size: Tuple[int, int] = (0, 0)             # header height, width
    crop: Optional[Tuple[int, int, int, int]] = None
    tables: Optional[np.ndarray] = None        # (4, 256) uint8
    used: Tuple[bool, bool, bool, bool] = (False, False, False, False)
    rows: Optional[Tuple[np.ndarray, np.ndarray]] = None
    cols: Optional[Tuple[np.ndarray, np.ndarray]] = None


class EncodedTrainDataset(WiderFaceTrainDataset):
    """:class:`~retinaface.data.dataset.WiderFaceTrainDataset` whose items are
    :class:`EncodedSample`: the file's bytes and every draw of the sample, the pixels left to
    :class:`DeviceBatchDecoder`. The transform must be a :class:`TrainTransform` (its ``plan`` makes
    the draws); ``reduced_decode`` is a CPU-decoder option and plays no part here."""

    def __init__(self, annotations: Sequence[ImageAnnotation], transform: Optional[TrainTransform] = None,
                 seed: int = 0) -> None:
        super().__init__(annotations, transform, seed)
        if not isinstance(self.transform, TrainTransform):
            raise TypeError(f"decoding on the device needs a TrainTransform (it draws each sample from the "
                            f"image size), got {type(self.transform).__name__}")

    def cpu_item(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The CPU pipeline's ``(image, targets)`` for ``index`` (the fallback)."""
        return WiderFaceTrainDataset.__getitem__(self, index)

    def __getitem__(self, index: int) -> EncodedSample:
        index = int(index)
        if index < 0:
            index += len(self)
        ann = self.annotations[index]
        data = read_bytes(ann.path)
        info = jpeg_info(data)
        if not device_decodable(info):
            image, targets = self.cpu_item(index)
            return EncodedSample(index, targets, image=image)
        plan = self.transform.plan(info.height, info.width, ann.boxes, ann.landmarks, ann.labels,
                                   sample_rng(self.seed, self.epoch, index))
        return self._encode(index, np.frombuffer(data, np.uint8), info, plan)

    def _encode(self, index: int, data: np.ndarray, info: JpegInfo, plan: SamplePlan) -> EncodedSample:
        size = self.transform.image_size
        crop = None if plan.crop_roi is None else tuple(int(v) for v in plan.crop_roi)
        tables, used = distortion_tables(plan.distortion)
        rows = resize_taps(plan.canvas, size, plan.interpolation)   # the canvas is square
        # step 4 before step 5, as on the CPU: resizing the mirrored canvas reads column canvas - 1 - x
        cols = (plan.canvas - 1 - rows[0], rows[1]) if plan.flip else rows
        targets = torch.from_numpy(np.ascontiguousarray(plan.targets, dtype=np.float32))
        return EncodedSample(index, targets, data=data, size=(info.height, info.width), crop=crop, tables=tables,
                             used=used, rows=rows, cols=cols)


def _stack_taps(taps: Sequence[Optional[Tuple[np.ndarray, np.ndarray]]], size: int
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-sample taps padded to the batch's widest (index 0, weight 0) as ``(B, S, T)`` tensors."""
    width = max([t[0].shape[1] for t in taps if t is not None], default=1)
    index = np.zeros((len(taps), size, width), np.int64)
    weight = np.zeros((len(taps), size, width), np.float32)
    for b, t in enumerate(taps):
        if t is not None:
            index[b, :, :t[0].shape[1]], weight[b, :, :t[1].shape[1]] = t
    return torch.from_numpy(index), torch.from_numpy(weight)


class EncodedBatch:
    """A collated batch of :class:`EncodedSample` (the DataLoader pins its tensors through
    :meth:`pin_memory`): the encoded samples' bytes in one tensor (``offsets`` into it), their
    distortion tables and resize taps stacked, and the CPU-rendered samples' images."""

    def __init__(self, samples: Sequence[EncodedSample], size: int) -> None:
        self.size = size
        self.indices = [s.index for s in samples]
        self.crops = [s.crop for s in samples]
        self.sizes = [s.size for s in samples]
        self.used = [s.used for s in samples]
        self.encoded = [s.data is not None for s in samples]
        chunks = [s.data for s in samples if s.data is not None]
        self.offsets = np.cumsum([0] + [len(c) for c in chunks]).tolist()
        self.data = torch.from_numpy(np.concatenate(chunks) if chunks else np.zeros(0, np.uint8))
        self.tables = torch.from_numpy(np.stack([s.tables if s.tables is not None else np.tile(_IDENTITY, (4, 1))
                                                 for s in samples]))
        self.rows = _stack_taps([s.rows for s in samples], size)
        self.cols = _stack_taps([s.cols for s in samples], size)
        self.images = {b: s.image for b, s in enumerate(samples) if s.image is not None}

    def __len__(self) -> int:
        return len(self.indices)

    def pin_memory(self) -> "EncodedBatch":
        # the bytes stay pageable: decode_jpeg reads them on the host
        self.tables = self.tables.pin_memory()
        self.rows = tuple(t.pin_memory() for t in self.rows)
        self.cols = tuple(t.pin_memory() for t in self.cols)
        self.images = {b: t.pin_memory() for b, t in self.images.items()}
        return self


def encoded_collate(batch: Sequence[EncodedSample]) -> Tuple[EncodedBatch, List[torch.Tensor]]:
    """:func:`~retinaface.data.dataset.detection_collate` for :class:`EncodedSample` items:
    ``(EncodedBatch, [targets (K_i, 15), ...])``."""
    if not batch:
        raise ValueError("encoded_collate: empty batch")
    sizes = {s.rows[0].shape[0] if s.rows is not None else s.image.shape[-1] for s in batch}
    if len(sizes) != 1:
        raise ValueError(f"encoded_collate: samples of different output sizes {sorted(sizes)}")
    return EncodedBatch(batch, sizes.pop()), [s.targets.reshape(-1, 15) for s in batch]


# --------------------------------------------------------------------------- the main process
def check_decode_device(decode_device: str, device: Union[str, torch.device]) -> None:
    """Raise a one-line ``ValueError`` unless ``decode_device`` can be used with the training
    ``device`` (``"auto"`` stands for CUDA when it is available): ``cuda`` needs CUDA training."""
    if decode_device not in DECODE_DEVICES:
        raise ValueError(f"decode device {decode_device!r} is not one of {', '.join(DECODE_DEVICES)}")
    if decode_device == "cpu":
        return
    if not torch.cuda.is_available():
        raise ValueError("GPU JPEG decoding: CUDA is not available on this machine")
    kind = str(device) if not isinstance(device, torch.device) else device.type
    if kind != "auto" and not kind.startswith("cuda"):
        raise ValueError(f"GPU JPEG decoding: the training device is {device}, not a CUDA device; "
                         f"decode on the GPU only when training on it (--device cuda)")


class DeviceBatchDecoder:
    """Turns an :class:`EncodedBatch` into the ``(B, 3, S, S)`` float32 batch on ``device``.

    ``dataset`` is the :class:`EncodedTrainDataset` the batch came from (its transform gives the
    mean; its CPU pipeline renders the samples the device cannot decode)."""

    def __init__(self, dataset: EncodedTrainDataset, device: Union[str, torch.device]) -> None:
        self.dataset = dataset
        self.device = torch.device(device)
        transform = dataset.transform
        self.size = transform.image_size
        self.mean = torch.tensor(transform.rgb_mean, dtype=torch.float32, device=self.device).view(3, 1, 1)
        # pad_to_square's fill: the mean stored in the image's type (uint8 truncates)
        self.fill = torch.from_numpy(np.asarray(transform.rgb_mean, dtype=np.uint8)).to(self.device).view(3, 1, 1)
        self._warned = False

    def _decode(self, chunks: List[torch.Tensor]) -> List[Optional[torch.Tensor]]:
        """``(3, H, W)`` uint8 RGB per chunk (``None`` where it does not decode): one batched
        call, one call per image when the batch as a whole fails."""
        from torchvision.io import ImageReadMode, decode_jpeg

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # torchvision >= 0.29 (see module docstring)
            try:
                return list(decode_jpeg(chunks, mode=ImageReadMode.RGB, device=self.device))
            except (RuntimeError, TypeError):   # one bad file, or a torchvision without batched decoding
                out: List[Optional[torch.Tensor]] = []
                for chunk in chunks:
                    try:
                        out.append(decode_jpeg(chunk, mode=ImageReadMode.RGB, device=self.device))
                    except RuntimeError:
                        out.append(None)
                return out

    def _fallback(self, index: int, why: str) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self._warned:
            logger.warning("--decode-device: %s (%s); such files are decoded on the CPU",
                           why, self.dataset.annotations[index].path)
            self._warned = True
        return self.dataset.cpu_item(index)

    def render(self, image: torch.Tensor, batch: EncodedBatch, b: int, tables: torch.Tensor,
               rows: Tuple[torch.Tensor, torch.Tensor], cols: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Sample ``b`` of ``batch`` from its decoded RGB image: ``(3, S, S)`` float32 minus the mean."""
        crop = batch.crops[b]
        if crop is not None:
            x1, y1, x2, y2 = crop
            image = image[:, y1:y2, x1:x2]
        image = image.flip(0)   # RGB -> BGR (a copy of the crop only)
        if any(batch.used[b]):
            image = apply_distortion_tables(image, tables[b], batch.used[b])
        if crop is None:   # step 3: the image at the top-left of a square of the mean colour
            height, width = image.shape[1:]
            side = max(height, width)
            canvas = self.fill.expand(3, side, side).clone()
            canvas[:, :height, :width] = image
            image = canvas
        return resample(image, (rows[0][b], rows[1][b]), (cols[0][b], cols[1][b])) - self.mean

    def __call__(self, batch: EncodedBatch, targets: List[torch.Tensor]
                 ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        device = self.device
        out = torch.empty((len(batch), 3, self.size, self.size), dtype=torch.float32, device=device)
        offsets = batch.offsets
        chunks = [batch.data[offsets[k]:offsets[k + 1]] for k in range(len(offsets) - 1)]
        decoded = iter(self._decode(chunks) if chunks else [])
        tables = batch.tables.to(device, non_blocking=True)
        rows = tuple(t.to(device, non_blocking=True) for t in batch.rows)
        cols = tuple(t.to(device, non_blocking=True) for t in batch.cols)
        targets = list(targets)
        for b in range(len(batch)):
            if not batch.encoded[b]:
                out[b].copy_(batch.images[b], non_blocking=True)
                continue
            image = next(decoded)
            if image is None or tuple(image.shape[1:]) != batch.sizes[b]:
                why = ("the JPEG does not decode on the device" if image is None
                       else "the decoded size is not the header's")
                chw, targets[b] = self._fallback(batch.indices[b], why)
                out[b].copy_(chw)
                continue
            out[b] = self.render(image, batch, b, tables, rows, cols)
        return out, targets


class DecodingLoader(LoaderWrapper):
    """A DataLoader over an :class:`EncodedTrainDataset` whose batches come out decoded: iterating
    gives ``(images (B, 3, S, S) on the decoder's device, [targets, ...])`` like a plain training
    loader; ``len`` and the other attributes are the DataLoader's."""

    def __init__(self, loader: torch.utils.data.DataLoader, decoder: DeviceBatchDecoder) -> None:
        super().__init__(loader)
        self.decoder = decoder

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, List[torch.Tensor]]]:
        for batch, targets in self.loader:
            yield self.decoder(batch, targets)


def device_decoding_data(cfg, dist, device: torch.device, check_device: bool = True) -> TrainData:
    """:func:`retinaface.engine.builders.build_data` with the JPEGs decoded and augmented on
    ``device``: the workers read bytes and draw the samples, the main process decodes."""
    if check_device:
        check_decode_device("cuda", device)
    root = data_root(cfg, dist)
    annotations, stats = load_training_annotations(root, check=True, skip_bad=cfg.skip_bad)
    if not annotations:
        raise ValueError(f"{root}: no training images")
    dataset = EncodedTrainDataset(annotations, TrainTransform(cfg.image_size), seed=cfg.seed)
    sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                 seed=cfg.seed)
    loader = DataLoader(dataset, batch_size=max(1, cfg.batch_size // dist.world_size), sampler=sampler,
                        collate_fn=encoded_collate, worker_init_fn=worker_init_fn, drop_last=False,
                        **loader_options(cfg, device))
    loader = DecodingLoader(loader, DeviceBatchDecoder(dataset, device))
    steps = min(len(loader), cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else len(loader)
    return TrainData(root, dataset, sampler, loader, steps, getattr(stats, "num_skipped_bad", 0))


class DeviceDecodingTrainer(Trainer):
    """The :class:`~retinaface.engine.trainer.Trainer` fed by :func:`device_decoding_data`
    (``check_device=False`` lets the tests run the same path on the CPU)."""

    def __init__(self, *args, check_device: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.check_device = check_device

    def build_training_data(self) -> TrainData:
        return device_decoding_data(self.config, self.dist, self.device, self.check_device)
