"""MXNet RecordIO (``.rec`` + ``.idx``), read and written without mxnet.

insightface publishes its training sets (MS1MV2, Glint360K, ...) in this format. The layout
(dmlc-core ``recordio.h``, MXNet ``recordio.py``):

* a record is ``uint32 magic = 0xced7230a``, ``uint32 lrec``, then ``length`` payload bytes padded
  with zeros to a multiple of 4; ``lrec``'s top 3 bits are the continuation flag ``cflag`` and its
  lower 29 bits ``length``. ``cflag`` 0 is a whole record; a payload that contains the magic at a
  4-byte aligned position is split there into parts flagged 1 (first), 2 (middle), 3 (last), the
  magic itself left out and put back by the reader;
* the ``.idx`` file has one ``key<TAB>offset`` line per record, ``offset`` the byte position of its
  magic word;
* MXNet's image records start with ``IRHeader`` = ``struct '<IfQQ'`` (flag, label, id, id2); when
  ``flag > 0`` the header is followed by ``flag`` float32 labels (and the float label is unused),
  then the encoded image. insightface's record 0 is such a header whose two labels
  ``(a, b)`` say that images are keys ``1 .. a-1`` and identities keys ``a .. b-1``.

Everything malformed raises :class:`RecordIOError` naming the file and the byte offset (or the
``.idx`` line). Files are opened lazily in each process, so a reader can go to DataLoader workers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import struct
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..fileio import atomic_write

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)

PathLike = Union[str, "os.PathLike[str]"]


class RecordIOError(ValueError):
    """A malformed ``.rec`` / ``.idx`` file; the message names the file and offset or line."""


@dataclasses.dataclass
class IRHeader:
    """MXNet's image record header; ``label`` is a float, or a float32 array when ``flag > 0``."""

    flag: int
    label: Union[float, np.ndarray]
    id: int = 0
    id2: int = 0


def pack_record(label: Union[float, Sequence[float], np.ndarray], payload: bytes, id: int = 0, id2: int = 0) -> bytes:
    """An MXNet image record: ``IRHeader`` (+ extra float32 labels when ``label`` is a sequence) + payload."""
    if np.ndim(label) == 0:
        return struct.pack(IR_FORMAT, 0, float(label), id, id2) + bytes(payload)
    labels = np.asarray(label, dtype="<f4").ravel()
    return struct.pack(IR_FORMAT, len(labels), 0.0, id, id2) + labels.tobytes() + bytes(payload)


def unpack_record(record: bytes, where: str = "record") -> Tuple[IRHeader, bytes]:
    """``(header, payload)`` of an MXNet image record; ``where`` prefixes error messages."""
    if len(record) < IR_SIZE:
        raise RecordIOError(f"{where}: {len(record)} bytes, too short for the {IR_SIZE}-byte IRHeader")
    flag, label, id_, id2 = struct.unpack_from(IR_FORMAT, record)
    rest = record[IR_SIZE:]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise RecordIOError(f"{where}: IRHeader announces {flag} extra labels ({4 * flag} bytes) but only "
                                f"{len(rest)} bytes follow")
        labels = np.frombuffer(rest, dtype="<f4", count=flag).astype(np.float32)
        return IRHeader(flag, labels, id_, id2), rest[4 * flag:]
    return IRHeader(flag, float(label), id_, id2), rest


def _split_on_magic(data: bytes) -> List[bytes]:
    """dmlc's writer: split at every 4-byte aligned occurrence of the magic, leaving it out."""
    parts, start = [], 0
    for pos in range(0, len(data) - 3, 4):
        if data[pos:pos + 4] == _MAGIC_BYTES:
            parts.append(data[start:pos])
            start = pos + 4
    parts.append(data[start:])
    return parts


class RecordIOReader:
    """Random access to the records of ``rec_path`` by key (from ``idx_path``, default ``<rec>.idx``
    when it exists) or, without an index, in file order with keys ``0 .. n-1`` found by one scan."""

    def __init__(self, rec_path: PathLike, idx_path: Optional[PathLike] = None) -> None:
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            raise RecordIOError(f"{self.rec_path}: no such record file")
        self.size = self.rec_path.stat().st_size
        if idx_path is None and self.rec_path.with_suffix(".idx").is_file():
            idx_path = self.rec_path.with_suffix(".idx")
        self.idx_path = None if idx_path is None else Path(idx_path)
        self._handle = None
        self._pid: Optional[int] = None
        self.offsets: Dict[int, int] = self._read_index() if self.idx_path is not None else self._scan()
        self.keys: List[int] = list(self.offsets)

    # -- files, reopened in each process (DataLoader workers must not share one file position) --
    def _file(self):
        if self._handle is None or self._pid != os.getpid():
            self._handle = open(self.rec_path, "rb")
            self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return len(self.keys)

    def _read_index(self) -> Dict[int, int]:
        if not self.idx_path.is_file():
            raise RecordIOError(f"{self.idx_path}: no such index file")
        offsets: Dict[int, int] = {}
        with open(self.idx_path, "r", encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                fields = line.split()
                try:
                    if len(fields) != 2:
                        raise ValueError
                    key, offset = int(fields[0]), int(fields[1])
                except ValueError:
                    raise RecordIOError(f"{self.idx_path}:{number}: expected 'key<TAB>offset', "
                                        f"got {line.strip()[:60]!r}") from None
                if not 0 <= offset <= self.size - 8:
                    raise RecordIOError(f"{self.idx_path}:{number}: offset {offset} of key {key} is outside "
                                        f"{self.rec_path.name} ({self.size} bytes)")
                if key in offsets:
                    raise RecordIOError(f"{self.idx_path}:{number}: key {key} appears twice")
                offsets[key] = offset
        return offsets

    def _scan(self) -> Dict[int, int]:
        offsets: Dict[int, int] = {}
        position = 0
        handle = self._file()
        while position < self.size:
            start = position
            while True:  # one logical record: parts until cflag 0 or 3
                cflag, length = self._header(handle, position)
                position += 8 + length + (-length % 4)
                if cflag in (0, 3):
                    break
            offsets[len(offsets)] = start
        return offsets

    def _header(self, handle, offset: int) -> Tuple[int, int]:
        handle.seek(offset)
        head = handle.read(8)
        if len(head) < 8:
            raise RecordIOError(f"{self.rec_path}: offset {offset}: truncated record header "
                                f"({len(head)} of 8 bytes before the end of the file)")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise RecordIOError(f"{self.rec_path}: offset {offset}: bad magic 0x{magic:08x}, expected 0x{MAGIC:08x}")
        cflag, length = lrec >> 29, lrec & _LENGTH_MASK
        if offset + 8 + length > self.size:
            raise RecordIOError(f"{self.rec_path}: offset {offset}: record of {length} bytes runs past the end "
                                f"of the file ({self.size} bytes): truncated")
        return cflag, length

    def read_at(self, offset: int) -> bytes:
        """The payload of the record whose first part starts at byte ``offset``."""
        handle = self._file()
        parts: List[bytes] = []
        position = offset
        expect_first = True
        while True:
            cflag, length = self._header(handle, position)
            if (cflag in (0, 1)) != expect_first:
                raise RecordIOError(f"{self.rec_path}: offset {position}: continuation flag {cflag} "
                                    f"out of sequence")
            parts.append(handle.read(length))
            position += 8 + length + (-length % 4)
            if cflag in (0, 3):
                break
            expect_first = False
        return _MAGIC_BYTES.join(parts)

    def read(self, key: int) -> bytes:
        """The payload of record ``key``."""
        if key not in self.offsets:
            raise KeyError(f"{self.rec_path}: no record with key {key}")
        return self.read_at(self.offsets[key])

    def read_image_record(self, key: int) -> Tuple[IRHeader, bytes]:
        """``(IRHeader, encoded image bytes)`` of record ``key``."""
        return unpack_record(self.read(key), f"{self.rec_path}: key {key} at offset {self.offsets.get(key)}")


class RecordIOWriter:
    """Writes ``.rec`` (+ ``.idx``) files the way MXNet's ``MXIndexedRecordIO`` does.

    Both files are written to temporaries and renamed into place on a clean :meth:`close` (use it
    as a context manager); existing files are never overwritten unless ``overwrite=True``.
    """

    def __init__(self, rec_path: PathLike, idx_path: Optional[PathLike] = None, overwrite: bool = False) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = None if idx_path is None else Path(idx_path)
        for path in (self.rec_path, self.idx_path):
            if path is not None and path.exists() and not overwrite:
                raise FileExistsError(f"{path} exists; refusing to overwrite it")
        self._stack = contextlib.ExitStack()
        self._rec = self._stack.enter_context(atomic_write(self.rec_path, "wb"))
        self._idx = None if self.idx_path is None else self._stack.enter_context(atomic_write(self.idx_path, "w"))
        self._position = 0

    def write(self, payload: bytes, key: Optional[int] = None) -> int:
        """Append one record; returns its offset (and indexes it under ``key`` when writing an .idx)."""
        offset = self._position
        parts = _split_on_magic(bytes(payload))
        for i, part in enumerate(parts):
            cflag = 0 if len(parts) == 1 else (1 if i == 0 else (3 if i == len(parts) - 1 else 2))
            if len(part) > _LENGTH_MASK:
                raise ValueError(f"record part of {len(part)} bytes exceeds RecordIO's 2^29 - 1 limit")
            self._rec.write(struct.pack("<II", MAGIC, (cflag << 29) | len(part)))
            self._rec.write(part + b"\0" * (-len(part) % 4))
            self._position += 8 + len(part) + (-len(part) % 4)
        if self._idx is not None:
            if key is None:
                raise ValueError("an indexed writer needs a key for every record")
            self._idx.write(f"{int(key)}\t{offset}\n")
        return offset

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "RecordIOWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # on an error the temporaries are removed and nothing is renamed into place
        self._stack.__exit__(exc_type, exc, tb)


__all__ = ["IRHeader", "MAGIC", "RecordIOError", "RecordIOReader", "RecordIOWriter", "pack_record", "unpack_record"]
