import os
import stat

import pytest

from retinaface.fileio import atomic_write


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "last.pth"
    path.write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as handle:
            handle.write("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_written_file_gets_the_permissions_open_would_give(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    with atomic_write(tmp_path / "a.txt") as handle:
        handle.write("x")
    # mkstemp's private 0600 must not leak into checkpoints other users of a server should read
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask
