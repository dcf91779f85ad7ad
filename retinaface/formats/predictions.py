"""WIDER FACE prediction folders: reading them under each evaluation protocol's rules, and writing.

A prediction folder holds ``<event>/<image>.txt`` per image: line 1 the image name, line 2 the
number of boxes, then ``x y w h score`` lines (extra tokens allowed, numbers may be floats). The two
evaluation programs read such a folder differently (``shared/specs/widerface_eval.md``):

* ``official`` (the MATLAB ``read_pred.m``): for every ground-truth image it opens
  ``<folder>/<event>/<image>.txt`` (line 1 is not used); it reads exactly ``count`` physical lines
  after line 2 and ignores the rest. Fewer lines than the count, a blank or short line among them,
  a token that is not a number, or an unreadable count make the whole image "Invalid format": no
  detections. A count of 0 (or an empty or negative count) means no detections.
* ``python-port`` (``widerface_evaluate/evaluation.py``): it reads every ``<event>/*.txt`` and keys
  it by the name on line 1 (last path component, ``.jpg`` removed); it ignores the count and reads
  every later non-blank line; a malformed line is an error.

Both keep the file order here: the official program's sort by score is part of the metric
(:func:`retinaface.evaluation.evaluate`), which applies it to in-memory predictions too. Under both,
a missing file means no detections, and files whose count line disagrees with their lines are
reported. Non-finite numbers in the first five columns are refused under both (``path:line``).
This module needs numpy only.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np

from ..conventions import DEFAULT_EVAL_PROTOCOL, EVAL_PROTOCOLS
from ..fileio import atomic_write
from .ground_truth import WiderGroundTruth

PathLike = Union[str, "os.PathLike[str]"]
Predictions = Mapping[tuple, np.ndarray]


class MissingPredictionsWarning(UserWarning):
    """Some ground-truth images have no prediction file (they count as images without detections)."""


class PredictionCountWarning(UserWarning):
    """The count line of some prediction files disagrees with the number of box lines they hold."""


class InvalidPredictionWarning(UserWarning):
    """Official protocol: some prediction files are "Invalid format" (their image has no detections)."""


def check_protocol(protocol: str) -> str:
    """``protocol`` if it is one of :data:`retinaface.conventions.EVAL_PROTOCOLS`, else ``ValueError``."""
    if protocol not in EVAL_PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; expected one of {', '.join(EVAL_PROTOCOLS)}")
    return protocol


@dataclass
class PredictionFolder:
    """What reading a folder gave: ``predictions[(event, image)]`` is ``(N, 5)`` float64
    ``x y w h score`` in file order (official: the first ``count`` lines, ``(0, 5)`` for an invalid
    file). ``missing`` lists the ground-truth images without a file (only known when read against a
    ground truth), ``invalid`` the official "Invalid format" files as ``"path:line: why"``,
    ``count_mismatch`` the files whose count line disagrees with their box lines."""

    root: Path
    protocol: str
    predictions: dict = field(default_factory=dict)
    missing: list = field(default_factory=list)
    invalid: list = field(default_factory=list)
    count_mismatch: list = field(default_factory=list)

    def warn(self, num_images: Optional[int] = None, stacklevel: int = 2) -> None:
        """One warning per kind of problem, naming the first files concerned."""
        def some(items: list) -> str:
            return ", ".join(str(i) for i in items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")

        if self.count_mismatch:
            rule = ("extra lines are ignored, too few lines make the file invalid" if self.protocol == "official"
                    else "all box lines are used")
            warnings.warn(f"{len(self.count_mismatch)} prediction file(s) hold a different number of box lines "
                          f"than their count line says ({self.protocol} protocol: {rule}): "
                          f"{some(self.count_mismatch)}", PredictionCountWarning, stacklevel=stacklevel + 1)
        if self.invalid:
            warnings.warn(f"{len(self.invalid)} prediction file(s) are 'Invalid format' under the official "
                          f"protocol; their images count as having no detections: {some(self.invalid)}",
                          InvalidPredictionWarning, stacklevel=stacklevel + 1)
        if self.missing:
            total = f" of {num_images}" if num_images is not None else ""
            shown = [self.root / e / f"{n}.txt" for e, n in self.missing]
            warnings.warn(f"{len(self.missing)}{total} images have no prediction file; they count as images "
                          f"without detections (e.g. {some(shown)})", MissingPredictionsWarning,
                          stacklevel=stacklevel + 1)


# ============================================================================ parsing
def _image_name(line: str) -> str:
    """Line 1 of a prediction file -> image name: last path component, trailing '.jpg' removed."""
    name = line.strip().replace("\\", "/").rsplit("/", 1)[-1]
    return name[:-4] if name.lower().endswith(".jpg") else name


def _split_lines12(data: bytes) -> tuple[bytes, Optional[bytes], bytes]:
    """-> (line 1, line 2 or None when the file has one line, the bytes after line 2)."""
    first_nl = data.find(b"\n")
    if first_nl < 0:
        return data, None, b""
    second_nl = data.find(b"\n", first_nl + 1)
    if second_nl < 0:
        rest = data[first_nl + 1:]
        # "name\n" has one line: the line feed that ends line 1 starts no line 2
        return data[:first_nl], (rest if rest else None), b""
    return data[:first_nl], data[first_nl + 1:second_nl], data[second_nl + 1:]


def _physical_lines(body: bytes) -> int:
    """Number of lines of ``body`` (a last line without a line feed counts)."""
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


def _port_header(path: Path, data: bytes) -> tuple[str, Optional[int], bytes]:
    """Port: -> (image name from line 1, count from line 2 or None, the bytes from line 3 on)."""
    head, count_line, body = _split_lines12(data)
    try:
        name = _image_name(head.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}:1: image name is not valid UTF-8") from None
    if not name:
        raise ValueError(f"{path}:1: expected the image name, found "
                         + ("an empty file" if not data.strip() else "an empty line"))
    if count_line is None:
        return name, None, b""
    count_text = count_line.strip()
    if not count_text:
        if body.strip():
            raise ValueError(f"{path}:2: expected the number of detections, found an empty line")
        return name, None, b""
    try:
        count = int(count_text)
    except ValueError:
        shown = count_text.decode("utf-8", "replace")
        hint = " (a box line? the count line is missing)" if len(shown.split()) >= 5 else ""
        raise ValueError(f"{path}:2: expected the number of detections, got {shown!r}{hint}") from None
    return name, count, body


def _parse_body_slow(path: Path, body: bytes, first_lineno: int) -> np.ndarray:
    """Port: line-by-line parse of every non-blank box line; ``ValueError("path:line: ...")`` on the
    first bad one."""
    rows = []
    for offset, raw in enumerate(body.split(b"\n")):
        tokens = raw.split()
        if not tokens:
            continue  # blank lines are skipped
        lineno = first_lineno + offset
        shown = raw.strip().decode("utf-8", "replace")
        if len(tokens) < 5:
            raise ValueError(f"{path}:{lineno}: expected 'x y w h score', got {shown!r}")
        try:
            values = [float(t) for t in tokens[:5]]
        except ValueError:
            raise ValueError(f"{path}:{lineno}: not a number in {shown!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{path}:{lineno}: non-finite value in {shown!r}")
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


# The bytes bytes.split() splits ASCII text on, as a lookup table.
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True


def _parse_bodies_fast(bodies: list) -> Optional[list]:
    """Parse all box sections at once; None when any of them is not in the plain layout (every
    non-blank line exactly five finite numbers) so that the caller falls back to a per-file parse.
    Blank lines pass (callers that care compare row and line counts)."""
    if not bodies:
        return []
    lines = [_physical_lines(b) for b in bodies]
    buf = b"\n".join(bodies) + b"\n"
    # numpy's C text reader splits on Unicode whitespace too; only plain ASCII goes through it, so
    # that it splits exactly where bytes.split() (the per-line parse) does.
    if sum(lines) and buf.isascii() and len(buf.translate(None, b"\x1c\x1d\x1e\x1f")) == len(buf):
        # About twice as fast as np.fromstring, and exact (correctly rounded). It skips blank
        # lines, so the rows split by line counts only when it found no blank line.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = np.loadtxt(io.BytesIO(buf), dtype=np.float64, delimiter=None, comments=None, ndmin=2,
                                    encoding="latin-1")
        except ValueError:
            return None
        if values.shape[1] != 5 or not np.all(np.isfinite(values)):
            return None
        if len(values) == sum(lines):
            return np.split(values, np.cumsum(lines)[:-1])
    return _parse_bodies_tokens(bodies)


def _parse_bodies_tokens(bodies: list) -> Optional[list]:
    """:func:`_parse_bodies_fast` for box sections with blank lines: rows assigned to bodies by
    token positions."""
    buf = b"\n".join(bodies) + b"\n"
    a = np.frombuffer(buf, dtype=np.uint8)
    ws = _WHITESPACE[a]
    is_start = ~ws
    is_start[1:] &= ws[:-1]
    starts = np.flatnonzero(is_start)
    if starts.size % 5:
        return None
    if starts.size:
        # Plain layout, checked without a per-byte line count: the first token of every group of
        # five follows a line feed, and the other four follow exactly one space or tab.
        groups = starts.reshape(-1, 5)
        first = groups[:, 0]
        if first[0] != 0 and a[first[0] - 1] != 10:
            return None
        if np.any(a[first[1:] - 1] != 10):
            return None
        inner = groups[:, 1:]
        before = a[inner - 1]
        if np.any((before != 32) & (before != 9)) or np.any(ws[inner - 2]):
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = np.fromstring(buf, dtype=np.float64, sep=" ")
        except ValueError:
            return None
        if values.size != starts.size or not np.all(np.isfinite(values)):
            return None
        values = values.reshape(-1, 5)
    else:
        values = np.zeros((0, 5), dtype=np.float64)
    # Rows per body: tokens whose start lies in each body's byte range.
    lengths = np.fromiter((len(b) + 1 for b in bodies), dtype=np.int64, count=len(bodies))
    rows = np.searchsorted(starts, np.cumsum(lengths), side="left") // 5
    return np.split(values, rows[:-1])


class _Official:
    """The official reading of one file: ``rows`` (None while not parsed), or ``invalid``."""

    __slots__ = ("path", "count", "body", "rows", "invalid", "mismatch")

    def __init__(self, path: Union[str, Path], data: bytes) -> None:
        self.path, self.rows, self.invalid, self.mismatch = path, None, None, False
        self.count, self.body = 0, b""
        _, count_line, body = _split_lines12(data)
        if count_line is None:
            self.invalid = f"{path}:2: no count line"
            return
        text = count_line.strip()
        if not text:
            count = 0.0  # str2num('') is empty: zeros(0, 5), no detections
        else:
            try:
                count = float(text.replace(b",", b" ").decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                self.invalid = f"{path}:2: unreadable count {text.decode('utf-8', 'replace')!r}"
                return
            if not math.isfinite(count) or count != int(count):
                self.invalid = f"{path}:2: count {text.decode('utf-8', 'replace')!r} is not a whole number"
                return
        if count <= 0:
            self.rows = np.zeros((0, 5))
            self.mismatch = bool(body.strip())
            return
        self.count, self.body = int(count), body

    def take(self, parsed: np.ndarray) -> None:
        """Use a fast parse of the body when it has no blank lines; else parse line by line."""
        if len(parsed) == _physical_lines(self.body):
            if len(parsed) < self.count:
                self.invalid = (f"{self.path}:{3 + len(parsed)}: count line says {self.count} boxes, "
                                f"the file has {len(parsed)}")
                self.mismatch = True
                return
            self.rows = parsed[:self.count]
            self.mismatch = len(parsed) > self.count
            return
        self.parse_slow()

    def parse_slow(self) -> None:
        lines = self.body.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # the line feed that ends the last line starts no line
        rows = []
        for k in range(self.count):
            lineno = 3 + k
            if k >= len(lines):
                self.invalid = f"{self.path}:{lineno}: count line says {self.count} boxes, the file has {k}"
                self.mismatch = True
                return
            shown = lines[k].strip().decode("utf-8", "replace")
            tokens = lines[k].replace(b",", b" ").split()
            if not tokens:
                self.invalid = f"{self.path}:{lineno}: blank line where box {k + 1} of {self.count} was expected"
                return
            try:
                values = [float(t) for t in tokens]
            except ValueError:
                self.invalid = f"{self.path}:{lineno}: not a number in {shown!r}"
                return
            if len(values) < 5:
                self.invalid = f"{self.path}:{lineno}: fewer than five numbers in {shown!r}"
                return
            if not all(math.isfinite(v) for v in values[:5]):
                raise ValueError(f"{self.path}:{lineno}: non-finite value in {shown!r}")
            rows.append(values[:5])
        self.rows = np.array(rows, dtype=np.float64).reshape(-1, 5)
        self.mismatch = any(line.strip() for line in lines[self.count:])


def _event_files(pred_dir: Path) -> list:
    """``(event folder name, path)`` of every ``<event>/*.txt``, sorted, hidden names skipped
    (temporaries of an interrupted atomic write start with a dot)."""
    files = []
    for event_entry in sorted(os.scandir(pred_dir), key=lambda e: e.name):
        if event_entry.name.startswith(".") or not event_entry.is_dir():
            continue
        for entry in sorted(os.scandir(event_entry.path), key=lambda e: e.name):
            if entry.name.endswith(".txt") and not entry.name.startswith(".") and entry.is_file():
                files.append((event_entry.name, Path(entry.path)))
    return files


def _read_bytes(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _read_official(pred_dir: Path, gt: Optional[WiderGroundTruth], out: PredictionFolder) -> None:
    if gt is not None:
        root = str(pred_dir)
        found = []
        for event, names in zip(gt.events, gt.images):
            folder = os.path.join(root, event)
            for name in names:
                path = os.path.join(folder, name + ".txt")
                data = _read_bytes(path)
                if data is None:
                    out.missing.append((event, name))
                else:
                    found.append(((event, name), _Official(path, data)))
    else:
        found = [((event, path.name[:-4]), _Official(path, path.read_bytes()))
                 for event, path in _event_files(pred_dir)]
    pending = [f for _, f in found if f.invalid is None and f.rows is None]
    parsed = _parse_bodies_fast([f.body for f in pending])
    if parsed is not None:
        for f, rows in zip(pending, parsed):
            f.take(rows)
    else:
        for f in pending:
            one = _parse_bodies_fast([f.body])
            if one is not None:
                f.take(one[0])
            else:
                f.parse_slow()
    empty = np.zeros((0, 5))
    for key, f in found:
        out.predictions[key] = empty if f.invalid is not None else f.rows
        if f.invalid is not None:
            out.invalid.append(f.invalid)
        if f.mismatch:
            out.count_mismatch.append(str(f.path))


def _read_port(pred_dir: Path, gt: Optional[WiderGroundTruth], out: PredictionFolder) -> None:
    files = _event_files(pred_dir)
    keys, counts, bodies, origin = [], [], [], {}
    for event, path in files:
        name, count, body = _port_header(path, path.read_bytes())
        key = (event, name)
        if key in origin:
            raise ValueError(f"{path}:1: image {event}/{name} is also named by {origin[key]}")
        origin[key] = path
        keys.append(key)
        counts.append(count)
        bodies.append(body)
    arrays = _parse_bodies_fast(bodies)
    if arrays is None:
        arrays = []
        for (_, path), body in zip(files, bodies):
            fast = _parse_bodies_fast([body])
            arrays.append(fast[0] if fast is not None else _parse_body_slow(path, body, 3))
    out.count_mismatch.extend(str(path) for (_, path), c, arr in zip(files, counts, arrays)
                              if c is not None and c != len(arr))
    out.predictions.update(zip(keys, arrays))
    if gt is not None:
        check_known(out.predictions, gt, origin)
        present = set(out.predictions)
        out.missing.extend(k for k in gt.image_keys() if k not in present)


def check_known(predictions: Predictions, gt: WiderGroundTruth, origin: Optional[dict] = None) -> None:
    """``ValueError`` when ``predictions`` name images that ``gt`` does not hold (a wrong folder
    layout would otherwise silently score as missing images)."""
    known = set(gt.image_keys())
    unknown = [k for k in predictions if k not in known]
    if not unknown:
        return
    events = set(gt.events)
    shown = []
    for event, name in unknown[:5]:
        where = f" ({origin[event, name]})" if origin else ""
        why = "unknown event" if event not in events else "image not in this event"
        shown.append(f"{event}/{name}{where}: {why}")
    raise ValueError(f"{len(unknown)} prediction(s) name images that are not in the ground truth "
                     f"({gt.num_images} images in {len(gt.events)} events): " + "; ".join(shown)
                     + (" ..." if len(unknown) > 5 else ""))


def _no_match_message(pred_dir: Path, gt: WiderGroundTruth) -> str:
    """Why a folder in which no file matches the ground truth is probably the wrong folder."""
    event, name = gt.image_keys()[0]
    expected = f"expected {pred_dir}/<event>/<image>.txt for the {gt.num_images} ground-truth images, " \
               f"e.g. {pred_dir / event / (name + '.txt')}"
    subdirs = sorted(p for p in pred_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    events = set(gt.events)
    deeper = [d for d in subdirs if any((d / e).is_dir() for e in events)]
    if deeper:
        return f"no prediction file matches the ground truth: {expected}; the event folders are one level " \
               f"down, in {deeper[0]} (pass that folder)"
    loose = sorted(p.name for p in pred_dir.glob("*.txt"))
    if loose:
        return f"no prediction file matches the ground truth: {expected}; {pred_dir} holds {len(loose)} .txt " \
               f"file(s) directly (e.g. {loose[0]}), not in event folders"
    found = [p for d in subdirs for p in sorted(d.glob("*.txt"))[:1]]
    if found:
        return f"no prediction file matches the ground truth: {expected}; found e.g. {found[0]} " \
               f"({len(subdirs)} folder(s) whose files name other images: another split or data set?)"
    return f"no prediction file matches the ground truth: {expected}; {pred_dir} holds no <event>/*.txt files"


def read_prediction_folder(pred_dir: PathLike, gt: Optional[WiderGroundTruth] = None,
                           protocol: str = DEFAULT_EVAL_PROTOCOL, allow_missing: bool = False) -> PredictionFolder:
    """Read ``pred_dir`` under ``protocol``'s reading rules (see the module docstring).

    With ``gt``: official looks up one file per ground-truth image; the port refuses files that
    name images ``gt`` does not hold. A folder in which no file matches ``gt`` is a ``ValueError``
    that says what was expected where, and so is one that lacks more than half of the images,
    unless ``allow_missing``. No warnings are issued here (see :meth:`PredictionFolder.warn`).
    Malformed port files and non-finite numbers raise ``ValueError("path:line: ...")``.
    """
    check_protocol(protocol)
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred_dir}")
    out = PredictionFolder(pred_dir, protocol)
    (_read_official if protocol == "official" else _read_port)(pred_dir, gt, out)
    if gt is not None and gt.num_images:
        if len(out.missing) == gt.num_images:
            raise ValueError(_no_match_message(pred_dir, gt))
        if 2 * len(out.missing) > gt.num_images and not allow_missing:
            e, n = out.missing[0]
            raise ValueError(f"{len(out.missing)} of {gt.num_images} ground-truth images have no prediction file "
                             f"in {pred_dir} (e.g. {pred_dir / e / (n + '.txt')}); allow missing images "
                             f"(--allow-missing) to count them as images without detections")
    return out


def read_predictions(pred_dir: PathLike, gt: Optional[WiderGroundTruth] = None,
                     protocol: str = DEFAULT_EVAL_PROTOCOL, allow_missing: bool = False) -> dict:
    """``{(event, image): (N, 5) float64 x y w h score}`` of a prediction folder, in file order,
    read under ``protocol``'s rules (:func:`read_prediction_folder`); problems are reported by one
    warning each (:class:`PredictionCountWarning`, :class:`InvalidPredictionWarning`,
    :class:`MissingPredictionsWarning`). Without ``gt``, official keys the files by
    ``(event folder, file name)`` and the port by ``(event folder, line-1 name)``."""
    folder = read_prediction_folder(pred_dir, gt, protocol, allow_missing)
    folder.warn(gt.num_images if gt is not None else None)
    return folder.predictions


# ============================================================================ writing
def _format_scores(scores: np.ndarray) -> list:
    # As Pytorch_Retinaface's test script writes it (str of the detector's float): the shortest
    # round-trip text of the value in its own precision.
    if scores.dtype == np.float32:
        return [str(s) for s in scores]
    return [repr(s) for s in scores.astype(np.float64).tolist()]


def _checked_detections(detections: np.ndarray, where: object) -> np.ndarray:
    dets = np.asarray(detections)
    if dets.size == 0:
        return np.zeros((0, 5), dtype=np.float64)
    if dets.ndim != 2 or dets.shape[1] < 5:
        raise ValueError(f"{where}: detections must be (N, >=5) [x1, y1, x2, y2, score, ...], got shape {dets.shape}")
    if not np.all(np.isfinite(dets[:, :5].astype(np.float64))):
        raise ValueError(f"{where}: detections contain non-finite values")
    return dets


def _wider_boxes(dets: np.ndarray) -> tuple:
    # Integer x y w h as the test protocol writes them (int() truncates toward zero), and the
    # score text the file would hold.
    corners = np.trunc(dets[:, :4].astype(np.float64)).astype(np.int64)
    xywh = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
    return xywh, _format_scores(dets[:, 4])


def to_wider_rows(detections: np.ndarray) -> np.ndarray:
    """The ``(N, 5)`` float64 ``x y w h score`` rows a prediction file written from ``detections``
    (``(N, >=5)`` ``[x1, y1, x2, y2, score, ...]``) reads back as, so evaluating in memory gives
    exactly what writing the folder and evaluating it gives."""
    dets = _checked_detections(detections, "detections")
    xywh, scores = _wider_boxes(dets)
    rows = np.empty((len(dets), 5), dtype=np.float64)
    rows[:, :4] = xywh
    rows[:, 4] = [float(s) for s in scores]
    return rows


def write_prediction_file(path: PathLike, image_name: str, detections: np.ndarray) -> None:
    """Write one prediction file (atomically) from ``(N, >=5)`` ``[x1, y1, x2, y2, score, ...]``.

    Layout of the training recipe's test protocol: the image name without extension, the count,
    then ``x y w h score`` per box with ``x = int(x1)``, ``y = int(y1)``, ``w = int(x2) - int(x1)``,
    ``h = int(y2) - int(y1)`` (int truncates toward zero).
    """
    name = _image_name(str(image_name))
    if not name or "\n" in name or "\r" in name:
        raise ValueError(f"invalid image name {image_name!r}")
    dets = _checked_detections(detections, path)
    xywh, scores = _wider_boxes(dets)
    lines = [f"{a} {b} {c} {d} {s}\n" for (a, b, c, d), s in zip(xywh.tolist(), scores)]
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(f"{name}\n{len(lines)}\n")
        handle.write("".join(lines))


def prediction_path(pred_dir: PathLike, event: str, image: str) -> Path:
    """Where the file of ``(event, image)`` goes in ``pred_dir``; ``ValueError`` for names that
    would leave the folder."""
    if not event or "/" in event or "\\" in event or event.startswith("."):
        raise ValueError(f"invalid event folder name {event!r}")
    return Path(pred_dir) / event / f"{_image_name(image)}.txt"


def write_predictions(pred_dir: PathLike, detections: Mapping[tuple, np.ndarray]) -> None:
    """Write a prediction folder ``<pred_dir>/<event>/<image>.txt``, one file per ``(event, image)``
    key, each written atomically (see :func:`write_prediction_file` for the layout)."""
    for (event, image), dets in detections.items():
        write_prediction_file(prediction_path(pred_dir, event, image), _image_name(image), dets)
