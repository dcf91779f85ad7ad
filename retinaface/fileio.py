"""Atomic file writing: everything the toolkit writes (checkpoints, prediction files, .mat files,
logs that replace older ones) goes through here, so an interrupted write never leaves a broken
file where a good one was.

A write in progress is ``.<name>.<pid>-<random>.tmp`` beside its target. A process killed mid-write
leaves that file behind; :func:`clean_stale_temporaries` (run by the trainer at start-up) removes
the ones whose writer process no longer exists, and never touches other files.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Iterator, List, Union

PathLike = Union[str, "os.PathLike[str]"]


def _default_file_mode() -> int:
    # mkstemp creates 0600 files; a renamed-in file should get the permissions open() would give
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


TMP_SUFFIX = ".tmp"
# ".<name>.<pid>-<mkstemp's 8 characters>.tmp"; older versions wrote ".<name>.<8 characters>.tmp"
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?:(?P<pid>\d+)-)?(?P<rand>[a-z0-9_]{8})\.tmp$")
# a temporary without a writer id is taken as stale only when nothing has written to it for this long
_UNTAGGED_STALE_SECONDS = 3600.0


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temporaries(folder: PathLike) -> List[Path]:
    """Remove the temporaries :func:`atomic_write` left in ``folder`` (not recursive) when their
    writer was killed: files named ``.<name>.<pid>-<random>.tmp`` whose process no longer exists,
    and untagged ones of the older naming untouched for an hour. Returns the removed paths."""
    folder = Path(folder)
    removed: List[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for entry in folder.iterdir():
        match = _TMP_RE.match(entry.name)
        if match is None or not entry.is_file():
            continue
        pid = match.group("pid")
        try:
            if pid is not None:
                stale = not _process_alive(int(pid))
            else:
                stale = now - entry.stat().st_mtime > _UNTAGGED_STALE_SECONDS
            if stale:
                entry.unlink()
                removed.append(entry)
        except FileNotFoundError:  # removed meanwhile
            continue
    return removed


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.chmod(tmp, _FILE_MODE)
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block has finished, then deliver it (``KeyboardInterrupt``
    under Python's default handler). For writes that should complete rather than be abandoned:
    a ``KeyboardInterrupt`` raised inside ``torch.save``'s writer comes out as a ``RuntimeError``
    from its zip writer, not as an interrupt. Signals can only be handled in the main thread;
    elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: List[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt


def atomic_torch_save(obj, path: PathLike) -> None:
    """``torch.save`` to a temporary file, then rename over ``path``. A Ctrl-C during the write
    lets it finish and is raised afterwards (the file on disk is then the new one, complete)."""
    import torch

    with deferred_interrupt(), atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def read_text_lines(path: PathLike) -> List[str]:
    """The lines of a UTF-8 text file such as a label list. A leading byte-order mark is dropped
    (Windows editors write one); bytes that are not UTF-8 raise
    ``ValueError("path:line: not UTF-8 text (byte 0x.. at column ..)")``; a missing file raises
    ``FileNotFoundError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        lineno = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        raise ValueError(f"{path}:{lineno}: not UTF-8 text (byte 0x{data[offset]:02x} at column {column}); "
                         f"save the file as UTF-8") from None
    return text.splitlines()
