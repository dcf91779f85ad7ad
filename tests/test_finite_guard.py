"""The NaN / inf loss guard: the first bad step is recorded on the device and reported at the check."""
import math

import pytest
import torch

from retinaface.engine.trainer import NonFiniteLossGuard
from retinaface.engine.loss import LossOutput


def _loss(total: float, box: float = 1.0, cls: float = 2.0, landmark: float = 3.0) -> LossOutput:
    return LossOutput(*(torch.tensor(v) for v in (total, box, cls, landmark)))


def test_every_step_guard_reports_the_bad_step_at_once():
    guard = NonFiniteLossGuard(torch.device("cpu"), check_every=1)
    assert guard.record(_loss(1.0), 1) and guard.first_bad() is None
    assert guard.record(_loss(math.inf, box=0.5), 2)
    assert guard.first_bad() == (2, math.inf, 0.5, 2.0, 3.0)


def test_deferred_guard_keeps_the_first_bad_step_until_it_is_read():
    guard = NonFiniteLossGuard(torch.device("cpu"), check_every=4)
    due = [guard.record(_loss(v, box=float(step)), step) for step, v in
           zip(range(11, 15), (1.0, math.nan, 2.0, math.inf))]
    assert due == [False, False, False, True]  # the host looks only every 4th step
    step, total, box, cls, landmark = guard.first_bad()
    assert step == 12 and math.isnan(total) and box == 12.0  # the first bad one, not the latest
    # the record is sticky: later good steps do not clear it
    guard.record(_loss(1.0), 15)
    assert guard.first_bad()[0] == 12


def test_a_finite_run_reports_nothing():
    guard = NonFiniteLossGuard(torch.device("cpu"), check_every=3)
    for step in range(1, 10):
        guard.record(_loss(float(step)), step)
    assert guard.first_bad() is None


def test_check_every_must_be_positive():
    with pytest.raises(ValueError, match="check_every"):
        NonFiniteLossGuard(torch.device("cpu"), check_every=0)
