"""The training engine: resume, the non-finite guard, DDP over gloo, data errors, and that a short
run on the synthetic set learns."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from retinaface import create_model, load_model
from retinaface.checkpoint import read_checkpoint
from retinaface.engine.trainer import NonFiniteLossError, TrainConfig, Trainer, TrainHook
from retinaface.evaluation.predict import evaluate_model
from tests.conftest import ROOT

# Small and fast: 128 px crops, 2 steps of batch 4 per epoch, no workers (same data either way).
SMALL = dict(backbone="mobilenet0.25", image_size=128, batch_size=4, max_steps_per_epoch=2, workers=0,
             device="cpu", progress=False, optimizer="sgd", lr=1e-3, schedule="cosine", warmup_epochs=0,
             save_every=0)


class StopAfterEpoch(TrainHook):
    """Simulates a kill: aborts the run once ``epoch`` epochs are complete and checkpointed."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_epoch(self, trainer, epoch):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def losses(history):
    return np.array([[row[k] for k in ("loss", "box", "cls", "landmark")] for row in history])


def test_kill_and_resume_reproduces_the_uninterrupted_losses(tiny_synthetic, tmp_path):
    base = dict(SMALL, data=str(tiny_synthetic), epochs=3)
    full = Trainer(TrainConfig(**base, output=str(tmp_path / "full"))).fit()

    with pytest.raises(KeyboardInterrupt):
        Trainer(TrainConfig(**base, output=str(tmp_path / "cut")), hooks=[StopAfterEpoch(1)]).fit()
    state = read_checkpoint(tmp_path / "cut" / "last.pth")
    assert state["epoch"] == 1 and state["step"] == 2
    resumed = Trainer(TrainConfig(**base, output=str(tmp_path / "cut"),
                                  resume=str(tmp_path / "cut" / "last.pth"))).fit()

    assert resumed.epochs_run == full.epochs_run == 3
    assert len(resumed.history) == 3  # the interrupted epoch's row is kept, not repeated
    np.testing.assert_allclose(losses(resumed.history), losses(full.history), rtol=1e-5, atol=1e-6)
    a = load_model(tmp_path / "full" / "last.pth").state_dict()
    b = load_model(tmp_path / "cut" / "last.pth").state_dict()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-5
    # the CSV log is one table over both processes' epochs
    rows = (tmp_path / "cut" / "log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,") and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]


class PoisonStep(TrainHook):
    """Makes the loss NaN from optimizer step ``step`` on."""

    def __init__(self, step: int) -> None:
        self.step = step

    def extra_loss(self, trainer, model):
        return torch.tensor(float("nan")) if trainer.step + 1 >= self.step else None


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tiny_synthetic, tmp_path):
    config = TrainConfig(**dict(SMALL, data=str(tiny_synthetic), epochs=3, output=str(tmp_path)))
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 4"):
        Trainer(config, hooks=[PoisonStep(4)]).fit()
    state = read_checkpoint(tmp_path / "last.pth")
    assert state["epoch"] == 1  # epoch 2 never finished, nothing of it was written
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not list(tmp_path.glob("*.tmp*"))


class NanGradientAtStep(TrainHook):
    """A finite loss term (0) whose gradient is NaN (sqrt at 0), at optimizer step ``step`` only."""

    def __init__(self, step: int) -> None:
        self.step = step

    def extra_loss(self, trainer, model):
        if trainer.step + 1 != self.step:
            return None
        return (next(model.parameters()).sum() * 0).sqrt()


def test_nan_gradients_on_an_epochs_last_step_are_never_checkpointed(tiny_synthetic, tmp_path):
    # step 2 is epoch 1's last: its loss is finite but the update puts NaN into the weights
    config = TrainConfig(**dict(SMALL, data=str(tiny_synthetic), epochs=3, output=str(tmp_path)))
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 2"):
        Trainer(config, hooks=[NanGradientAtStep(2)]).fit()
    assert not (tmp_path / "last.pth").exists() and not (tmp_path / "best.pth").exists()


def test_rng_states_round_trip_exactly_through_a_checkpoint():
    import io
    import random

    from retinaface.engine.state import rng_state as _rng_state, set_rng_state as _set_rng_state

    def draw():
        return (np.random.rand(3).tolist(), np.random.randn(1).tolist(), random.gauss(0, 1), torch.rand(2).tolist())

    np.random.seed(0), random.seed(0), torch.manual_seed(0)
    np.random.randn(1), random.gauss(0, 1)  # leaves cached Gaussians and a mid-block position
    buffer = io.BytesIO()
    torch.save(_rng_state(), buffer)
    expected = draw()
    np.random.rand(1000), random.random(), np.random.randn(1), random.gauss(0, 1)
    buffer.seek(0)
    _set_rng_state(torch.load(buffer, weights_only=True))
    assert draw() == expected


def test_epoch_checkpoints_follow_the_reference_every_10_then_every_5_after_the_first_decay():
    trainer = Trainer(TrainConfig(data="data/widerface", backbone="mobilenet0.25"))
    due = [e for e in range(1, 251) if trainer._epoch_checkpoint_due(e)]
    assert due == list(range(10, 191, 10)) + list(range(195, 251, 5))
    assert not any(Trainer(TrainConfig(data="data/widerface", save_every=0))._epoch_checkpoint_due(e)
                   for e in range(1, 251))


def test_cli_resume_continues_with_the_checkpoints_settings(tiny_synthetic, tmp_path):
    from retinaface.cli import train as cli

    out = tmp_path / "run"
    Trainer(TrainConfig(**dict(SMALL, data=str(tiny_synthetic), epochs=1, optimizer="adamw", sam=True,
                               output=str(out)))).fit()
    last = str(out / "last.pth")
    options = cli.train_options(["--resume", last, "--epochs", "2", "--no-progress"])
    assert (options["data"], options["optimizer"], options["sam"], options["output"]) == \
        (str(tiny_synthetic), "adamw", True, str(out))
    assert (options["image_size"], options["batch_size"], options["epochs"], options["resume"]) == (128, 4, 2, last)
    assert cli.train_options(["--resume", last, "--optimizer", "adamw"])["optimizer"] == "adamw"  # agrees
    with pytest.raises(ValueError, match="--optimizer sgd contradicts the resumed run .* adamw"):
        cli.train_options(["--resume", last, "--optimizer", "sgd"])
    assert cli.main(["--resume", last, "--epochs", "2", "--no-progress", "--sample", str(tmp_path / "s.jpg")]) == 0
    state = read_checkpoint(out / "last.pth")
    assert (state["epoch"], state["step"], state["train_config"]["optimizer"]) == (2, 4, "adamw")


def test_every_optimizer_and_sam_run_through_the_trainer(tiny_synthetic, tmp_path):
    # sgdp also runs SAM under bf16 autocast (the CPU's AMP) with clipping: two passes per step
    for name in ("adamw", "adaboundw", "sgdp"):
        config = TrainConfig(**dict(SMALL, data=str(tiny_synthetic), epochs=1, optimizer=name, sam=name == "sgdp",
                                    channels_last=name == "adamw", amp=name == "sgdp", grad_clip=5.0,
                                    output=str(tmp_path / name)))
        summary = Trainer(config).fit()
        state = read_checkpoint(summary.last_checkpoint)
        assert state["train_config"]["optimizer"] == name and state["step"] == 2
        assert np.isfinite(summary.history[0]["loss"])


def test_unset_flags_take_the_reference_recipe_of_the_backbone():
    r50 = TrainConfig(data="data/widerface", backbone="resnet50").resolved()
    assert (r50.image_size, r50.batch_size, r50.epochs, r50.decay_epochs) == (840, 24, 100, (70, 90))
    mnet = TrainConfig(data="data/widerface", backbone="mobilenet0.25", lr=0.01).resolved()
    assert (mnet.image_size, mnet.batch_size, mnet.epochs, mnet.lr, mnet.optimizer) == (640, 32, 250, 0.01, "sgd")
    with pytest.raises(ValueError, match="--image-size"):
        TrainConfig(image_size=16).resolved()


def test_training_at_a_size_that_is_not_a_multiple_of_32(tiny_synthetic, tmp_path):
    # 840 (the ResNet-50 recipe) is not a multiple of 32: priors and head outputs must still agree
    config = TrainConfig(**dict(SMALL, data=str(tiny_synthetic), epochs=1, image_size=136, max_steps_per_epoch=1,
                                output=str(tmp_path)))
    summary = Trainer(config).fit()
    assert np.isfinite(summary.history[0]["loss"])


# --------------------------------------------------------------------------- DDP over gloo
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, data: str, output: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    config = TrainConfig(**dict(SMALL, data=data, epochs=1, batch_size=8, output=output, sync_bn=True))
    trainer = Trainer(config)
    trainer.fit()
    # parameters only: DDP broadcasts rank 0's BN buffers before each forward, then each rank
    # updates them with its own batch, so running statistics legitimately differ
    flat = torch.cat([p.detach().flatten() for p in trainer.raw_model.parameters()])
    torch.save({"params": flat, "steps": trainer.steps_per_epoch, "seen": list(iter(trainer.sampler)),
                "history": trainer.history}, os.path.join(output, f"rank{rank}.pt"))


def test_two_process_gloo_ddp_keeps_replicas_identical(tiny_synthetic, tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tiny_synthetic), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert torch.equal(r0["params"], r1["params"])  # gradients all-reduced: replicas never diverge
    assert not set(r0["seen"]) & set(r1["seen"])    # each rank sees its own half of the data
    assert (losses(r0["history"]) == losses(r1["history"])).all()  # logged losses: the mean over ranks
    saved = torch.cat([v.detach().flatten() for v in load_model(tmp_path / "last.pth").parameters()])
    assert torch.equal(saved, r0["params"])         # rank 0 wrote the trained weights
    initial = torch.cat([v.detach().flatten() for v in create_model("mobilenet0.25").parameters()])
    assert not torch.equal(saved, initial)
    assert not (tmp_path / "rank1").exists()


# --------------------------------------------------------------------------- learning and the CLI
def test_short_synthetic_training_beats_the_untrained_model(tiny_synthetic, tmp_path):
    config = TrainConfig(data=str(tiny_synthetic), backbone="mobilenet0.25", optimizer="adamw", lr=3e-3,
                         epochs=40, batch_size=16, image_size=128, schedule="cosine", warmup_epochs=1,
                         workers=0, device="cpu", progress=False, eval_every=40, save_every=0,
                         output=str(tmp_path))
    summary = Trainer(config).fit()
    torch.manual_seed(0)
    untrained = evaluate_model(create_model("mobilenet0.25").eval(), tiny_synthetic, workers=0,
                               progress=False).as_dict()
    for setting in ("medium", "hard"):
        assert summary.metrics[setting] >= max(0.3, 5 * untrained[setting]), (summary.metrics, untrained)
    assert summary.history[-1]["loss"] < 0.5 * summary.history[0]["loss"]
    assert read_checkpoint(summary.best_checkpoint)["best_metric"] == pytest.approx(summary.metrics["hard"])


def test_train_cli_reports_a_malformed_label_line(tmp_path):
    train = tmp_path / "train"
    (train / "images" / "0--Parade").mkdir(parents=True)
    (train / "label.txt").write_text("# 0--Parade/a.jpg\n10 10 20 x\n")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--data", str(tmp_path),
                             "--output", str(tmp_path / "out"), "--device", "cpu", "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert f"{train / 'label.txt'}:2:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "last.pth").exists()


class RecordLayout(TrainHook):
    """Notes the batch layout and batch-norm classes the trainer trains with."""

    def __init__(self) -> None:
        self.seen = []

    def compute_loss(self, trainer, model, images, targets):
        norms = {type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
        self.seen.append((images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous(),
                          norms))
        return None


@pytest.mark.parametrize("channels_last, expected", [(None, True), (False, False), (True, True)])
def test_cpu_training_defaults_to_channels_last_with_exact_batch_norm_and_restores_it(
        tiny_synthetic, tmp_path, channels_last, expected):
    hook = RecordLayout()
    trainer = Trainer(TrainConfig(**dict(SMALL, data=str(tiny_synthetic), epochs=1, max_steps_per_epoch=1,
                                         eval_every=0, channels_last=channels_last, output=str(tmp_path))),
                      hooks=[hook])
    trainer.fit()
    norms = {"ChannelsLastBatchNorm2d"} if expected else {"BatchNorm2d"}
    assert hook.seen == [(expected, norms)]
    assert {type(m) for m in trainer.raw_model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {torch.nn.BatchNorm2d}


def test_channels_last_flag_is_tri_state():
    from retinaface.cli import train as cli

    assert "channels_last" not in cli.train_options([])
    assert cli.train_options(["--channels-last"])["channels_last"] is True
    assert cli.train_options(["--no-channels-last"])["channels_last"] is False


def test_channels_last_default_needs_cpu_and_plain_batch_norms():
    from torch import nn

    from retinaface.engine.builders import uses_channels_last

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    fused = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4))  # a norm that calls its own kernel
    assert uses_channels_last(TrainConfig(), cpu, plain)
    assert not uses_channels_last(TrainConfig(), cuda, plain) and not uses_channels_last(TrainConfig(), cpu, fused)
    assert uses_channels_last(TrainConfig(channels_last=True), cpu, fused)
    assert not uses_channels_last(TrainConfig(channels_last=False), cpu, plain)


class RecordBatches(TrainHook):
    """Keeps a copy of every training batch the loss sees."""

    def __init__(self) -> None:
        self.images = []

    def compute_loss(self, trainer, model, images, targets):
        self.images.append(images.detach().clone())
        return None


def test_normalizing_on_the_device_trains_on_the_same_batches_and_weights(tiny_synthetic, tmp_path):
    """--normalize-on-device: the workers hand over uint8 and the mean is subtracted in the main
    process; the batches, and so the whole run, are bit for bit those of the default CPU path."""
    runs = {}
    for flag in (False, True):
        hook = RecordBatches()
        trainer = Trainer(TrainConfig(**dict(SMALL, data=str(tiny_synthetic), epochs=2, eval_every=0,
                                             normalize_on_device=flag, output=str(tmp_path / str(flag)))),
                          hooks=[hook])
        trainer.fit()
        assert trainer.data.dataset.transform.normalize is (not flag)
        runs[flag] = (hook.images, trainer.raw_model.state_dict(), losses(trainer.history))
    (a_images, a_state, a_losses), (b_images, b_state, b_losses) = runs[False], runs[True]
    assert len(a_images) == len(b_images) == 4
    for a, b in zip(a_images, b_images):
        assert a.dtype == b.dtype == torch.float32
        assert torch.equal(a, b)
    np.testing.assert_array_equal(a_losses, b_losses)
    assert all(torch.equal(a_state[k], b_state[k]) for k in a_state)


def test_device_normalization_defaults_to_cuda_only():
    from retinaface.cli import train as cli
    from retinaface.engine.builders import uses_device_normalization

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not uses_device_normalization(TrainConfig(), cpu) and uses_device_normalization(TrainConfig(), cuda)
    assert uses_device_normalization(TrainConfig(normalize_on_device=True), cpu)
    assert not uses_device_normalization(TrainConfig(normalize_on_device=False), cuda)
    assert cli.train_options(["--no-normalize-on-device"])["normalize_on_device"] is False
    assert "normalize_on_device" not in cli.train_options([])
