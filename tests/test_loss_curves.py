"""Both tasks through the one Trainer repeat, step for step, the losses their separate trainers gave
before the merge (tests/fixtures/loss_curves.json, recorded at commit 95a845a; its ``comment`` says
how): the same arithmetic in the same order, so the same numbers up to float summation order."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from retinaface.engine import DetectionTask, TrainConfig, Trainer, TrainHook
from retinaface.engine.trainer import loss_parts
from retinaface.recognition.config import RecognitionConfig
from retinaface.recognition.synthetic import generate_synthetic_identities
from retinaface.recognition.task import RecognitionTask
from tests.conftest import ROOT

RECORDED = json.loads((ROOT / "tests" / "fixtures" / "loss_curves.json").read_text())
RTOL = 1e-5


class RecordSteps(TrainHook):
    """Every step's loss parts, read on the host (a test may sync; the loop does not)."""

    def __init__(self) -> None:
        self.steps = []

    def after_step(self, trainer):
        self.steps.append(loss_parts(trainer.last_output).tolist())


@pytest.fixture
def one_thread():
    """The recording's thread count: reduction order, and so the last bits, depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def same_kernels() -> bool:
    """Whether this machine runs the kernels that recorded the fixture. Later steps amplify the last
    bits of the first (one thread against two differ by per cents by step 3), so only the first
    step, a forward pass of the same weights, is comparable elsewhere."""
    return (torch.__version__ == RECORDED["torch"]
            and torch.backends.cpu.get_cpu_capability() == RECORDED["cpu_capability"])


def compare(measured, recorded) -> None:
    measured, recorded = np.asarray(measured, dtype=np.float64), np.asarray(recorded, dtype=np.float64)
    assert measured.shape == recorded.shape
    if same_kernels():
        np.testing.assert_allclose(measured, recorded, rtol=RTOL, atol=0)
    else:
        np.testing.assert_allclose(measured[:1], recorded[:1], rtol=1e-4, atol=0)


def test_recognition_repeats_the_recorded_losses(tmp_path, one_thread):
    faces = generate_synthetic_identities(tmp_path / "ids", 6, 20, 4, pairs_per_fold=2)
    config = RecognitionConfig(data=str(faces.train), network_width=0.25, head="pool", embedding_size=32,
                               batch_size=8, epochs=2, workers=0, output=str(tmp_path / "run"), progress=False,
                               tensorboard=False, eval_every=0, lr=0.01, scale=32.0, margin=0.3,
                               warmup_epochs=0.0, device="cpu", seed=0)
    hook = RecordSteps()
    summary = Trainer(RecognitionTask(config), hooks=[hook]).fit()
    recorded = RECORDED["recognition"]
    compare([s[0] for s in hook.steps], recorded["step_loss"])
    compare([row["loss"] for row in summary.history], recorded["epoch_loss"])


def test_detection_repeats_the_recorded_losses(tiny_synthetic, tmp_path, one_thread):
    config = TrainConfig(data=str(tiny_synthetic), backbone="mobilenet0.25", image_size=128, batch_size=4,
                         max_steps_per_epoch=2, workers=0, device="cpu", progress=False, optimizer="sgd", lr=1e-3,
                         schedule="cosine", warmup_epochs=0, save_every=0, eval_every=0, epochs=2,
                         output=str(tmp_path / "run"))
    hook = RecordSteps()
    summary = Trainer(DetectionTask(config), hooks=[hook]).fit()
    recorded = RECORDED["detection"]
    assert recorded["parts"] == ["loss", "box", "cls", "landmark"]
    compare(hook.steps, recorded["step_loss"])
    compare([[row[k] for k in recorded["parts"]] for row in summary.history], recorded["epoch_loss"])
