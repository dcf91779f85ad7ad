"""Atomic file writing: everything the toolkit writes (checkpoints, prediction files, .mat files,
logs that replace older ones) goes through here, so an interrupted write never leaves a broken
file where a good one was.

A write in progress is ``.<name>.<pid>-<random>.tmp`` beside its target. A process killed mid-write
leaves that file behind; :func:`clean_stale_temporaries` (run by the trainer at start-up) removes
the ones whose writer process no longer exists, and never touches other files.

Output folders are claimed, not checked: :func:`claim_fresh_folder` takes a folder with an
exclusive create, so runs started at the same time into one ``--output`` each get a folder of their
own (a check "is it empty?" followed by writing would let both in).
"""
from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Callable, Iterator, List, Optional, Tuple, Union

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
    import torch  # the bottom layer stays torch-free: only this writer needs it

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


# ---------------------------------------------------------------------------- claiming folders
#: The file by which a run claims its output folder (created with O_EXCL; holds the claimer's pid).
CLAIM_FILE = ".retinaface-claim"


# folders this process claimed: released at exit (a folder left empty is removed), so a claim
# never outlives its process and a run object built but never run leaves nothing behind
_CLAIMED: List[Tuple[Path, Path]] = []  # (folder, the highest folder its claim created)


def _release_all_at_exit() -> None:
    for folder, created in _CLAIMED:
        if claim_holder(folder) != os.getpid():
            continue
        release_claim(folder, remove_if_empty=True)
        path = folder.parent
        while not folder.exists() and (path == created or created in path.parents):
            try:  # the parents the claim created, while they are empty
                path.rmdir()
            except OSError:
                break
            path = path.parent


atexit.register(_release_all_at_exit)


def _take_claim(folder: Path) -> bool:
    """Create ``folder`` (and its parents) if needed and create its claim file exclusively: only one
    process can succeed, however many try at once. ``False`` when another process holds it."""
    created = folder
    while not created.parent.exists() and created.parent != created:
        created = created.parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(folder / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{os.getpid()}\n")
    _CLAIMED.append((folder, created))
    return True


def claim_holder(folder: PathLike) -> Optional[int]:
    """The pid of the process holding ``folder``'s claim: ``None`` when there is no claim or its
    claimer has exited (a stale claim), ``-1`` when the claim is being written right now."""
    try:
        text = (Path(folder) / CLAIM_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    except OSError:
        return -1
    if not text.isdigit():
        return -1  # created, its pid not yet written: held
    return int(text) if _process_alive(int(text)) else None


@contextlib.contextmanager
def _takeover_lock(folder: Path) -> Iterator[None]:
    """Serialise stale-claim takeovers of ``folder`` between processes (an advisory ``flock`` on a
    lock file beside the claim; where ``fcntl`` is missing, unserialised)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    fd = os.open(folder / (CLAIM_FILE + ".lock"), os.O_CREAT | os.O_RDWR, _FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock; the lock file stays (removing it would race)


def _take_stale_claim(folder: Path) -> bool:
    """Take over ``folder``'s claim when its claimer has exited (killed before it released it).

    Two processes can both see the same stale claim. Without the lock the slower one would unlink
    the claim the faster one had just written and both would hold the folder; under it the slower
    one re-reads the claim, finds a live holder and goes on."""
    if not (folder / CLAIM_FILE).exists() or claim_holder(folder) is not None:
        return False
    with _takeover_lock(folder):
        if not (folder / CLAIM_FILE).exists() or claim_holder(folder) is not None:
            return False
        with contextlib.suppress(FileNotFoundError):
            (folder / CLAIM_FILE).unlink()
        return _take_claim(folder)


def release_claim(folder: PathLike, remove_if_empty: bool = False) -> None:
    """Remove ``folder``'s claim file (the run is done: what it wrote now keeps others out); with
    ``remove_if_empty`` also the folder when the run wrote nothing into it."""
    folder = Path(folder)
    for name in (CLAIM_FILE + ".lock", CLAIM_FILE):  # the takeover lock of a stale claim, if one was taken
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    if remove_if_empty:
        with contextlib.suppress(OSError):  # only succeeds when nothing is in it
            folder.rmdir()


def _holds_nothing(folder: Path) -> bool:
    return not any(entry.name not in (CLAIM_FILE, CLAIM_FILE + ".lock") for entry in folder.iterdir())


def numbered_sibling(base: Path, number: int) -> Path:
    """``base`` with ``number`` appended to its name (``runs/x`` -> ``runs/x2``)."""
    base = base.resolve() if base.name in ("", ".", "..") else base
    return base.with_name(f"{base.name}{number}")


def claim_fresh_folder(requested: PathLike, is_free: Optional[Callable[[Path], bool]] = None,
                       numbered: bool = True) -> Path:
    """Claim an output folder for this process alone and return it: ``requested`` when it is free,
    else (with ``numbered``) the first free of ``<requested>2``, ``<requested>3``, ...

    A folder is taken by creating it (if needed) and then its :data:`CLAIM_FILE` with ``O_EXCL``;
    only after holding the claim is it checked to be free (``is_free``; default: it holds nothing
    else), so two processes started at once can never both write into one folder: the loser of
    the claim goes on to the next name. A folder that is not free keeps no claim of ours. Call
    :func:`release_claim` when the run has written its files (claims still held when the process
    exits are released then, and a claimed folder left empty is removed). Without ``numbered``, a folder that
    is not free raises ``FileExistsError`` naming it (and the pid of a live claimer); one this
    process claimed before (a run, then its resume) is returned as it is."""
    free = is_free or _holds_nothing
    requested = Path(requested)
    number = 1
    while True:
        candidate = requested if number == 1 else numbered_sibling(requested, number)
        if candidate.exists() and not candidate.is_dir():
            if not numbered:
                raise FileExistsError(f"{candidate} is an existing file, not a folder")
        elif _take_claim(candidate) or _take_stale_claim(candidate):
            if free(candidate):
                return candidate
            release_claim(candidate)
            if not numbered:
                raise FileExistsError(f"{candidate} already holds files")
        elif not numbered:
            holder = claim_holder(candidate)
            if holder == os.getpid():  # an earlier run of this process (train, then resume it)
                return candidate
            raise FileExistsError(f"{candidate} is being written by another run"
                                  + (f" (pid {holder})" if holder and holder > 0 else ""))
        number += 1
