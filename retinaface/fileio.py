"""Atomic file writing: everything the toolkit writes (checkpoints, prediction files, .mat files,
logs that replace older ones) goes through here, so an interrupted write never leaves a broken
file where a good one was."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def _default_file_mode() -> int:
    # mkstemp creates 0600 files; a renamed-in file should get the permissions open() would give
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def atomic_torch_save(obj, path: PathLike) -> None:
    """``torch.save`` to a temporary file, then rename over ``path``."""
    import torch

    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)
