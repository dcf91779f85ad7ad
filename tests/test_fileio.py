import collections
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


class _InterruptWhilePickled:
    """Sends this process a Ctrl-C from inside torch.save, half-way through the file."""

    def __reduce__(self):
        import signal

        os.kill(os.getpid(), signal.SIGINT)
        return (collections.OrderedDict, ([("seven", 7)],))  # a global weights_only allows


def test_ctrl_c_during_a_checkpoint_write_finishes_the_file_then_interrupts(tmp_path):
    import torch

    from retinaface.fileio import atomic_torch_save

    path = tmp_path / "last.pth"
    path.write_bytes(b"old")
    payload = {"before": torch.arange(100000.0), "trigger": _InterruptWhilePickled(), "after": torch.ones(5000)}
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save(payload, path)
    saved = torch.load(path, weights_only=True)  # the new file, complete
    assert saved["trigger"] == {"seven": 7} and torch.equal(saved["after"], torch.ones(5000))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_deferred_interrupt_passes_through_when_nothing_arrives():
    import signal

    from retinaface.fileio import deferred_interrupt

    before = signal.getsignal(signal.SIGINT)
    with deferred_interrupt():
        pass
    assert signal.getsignal(signal.SIGINT) is before
