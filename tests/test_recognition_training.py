"""Recognition training: exact resume, never overwriting a run, flags, channel prioritisation."""
import math

import numpy as np
import pytest
import torch

from retinaface.checkpoint import read_checkpoint
from retinaface.cli import run_command
from retinaface.engine import NonFiniteLossError, TrainHook
from retinaface.recognition.synthetic import generate_synthetic_identities
from retinaface.recognition.training import (RecognitionConfig, RecognitionTrainer, choose_output, load_embedder,
                                             save_embedder)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("ids") / "set"
    return generate_synthetic_identities(root, 8, 20, 4, pairs_per_fold=2)


def tiny(faces, output, **kw):
    options = dict(data=str(faces.train), val=str(faces.root), network_width=0.25, head="pool", embedding_size=32,
                   batch_size=4, epochs=2, workers=0, output=str(output), progress=False, tensorboard=False,
                   max_steps_per_epoch=1, eval_every=0, lr=0.05, warmup_epochs=0.0)
    options.update(kw)
    return RecognitionConfig(**options)


def test_resume_repeats_the_uninterrupted_losses(faces, tmp_path):
    full = RecognitionTrainer(tiny(faces, tmp_path / "full", epochs=3, save_every=1)).fit()
    # continue from the first epoch's checkpoint (as after an interruption) into another folder
    resumed = RecognitionTrainer(tiny(faces, tmp_path / "resumed", epochs=3,
                                      resume=str(tmp_path / "full" / "epoch_001.pth"))).fit()
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    assert len({r["loss"] for r in full.history}) == 3  # the losses do change between epochs
    a = load_embedder(tmp_path / "full" / "last.pth")
    b = load_embedder(tmp_path / "resumed" / "last.pth")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_sam_and_bf16_amp_train_and_save_finite_weights(faces, tmp_path):
    trainer = RecognitionTrainer(tiny(faces, tmp_path / "sam", epochs=1, sam=True, amp=True, optimizer="adamw",
                                      lr=1e-3))
    before = {k: v.clone() for k, v in trainer_state(trainer).items()}
    summary = trainer.fit()
    assert math.isfinite(summary.history[0]["loss"])
    after = load_embedder(tmp_path / "sam" / "last.pth").state_dict()
    changed = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert changed and all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())


def trainer_state(trainer):
    trainer.setup()
    return trainer.raw_model.state_dict()


class PoisonFromStep(TrainHook):
    """Makes the loss NaN from optimizer step ``step`` on."""

    def __init__(self, step: int) -> None:
        self.step = step

    def extra_loss(self, trainer, model):
        return torch.tensor(float("nan")) if trainer.step + 1 >= self.step else None


def test_a_non_finite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(faces, tmp_path):
    # the detection trainer's guard: the first bad step is kept on the device, read before any write
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 2;.*Try a lower --lr or --grad-clip"):
        RecognitionTrainer(tiny(faces, tmp_path / "nan", epochs=3), hooks=[PoisonFromStep(2)]).fit()
    state = read_checkpoint(tmp_path / "nan" / "last.pth")
    assert state["epoch"] == 1 and "head" in state  # epoch 2 never finished, nothing of it was written
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_run_is_never_overwritten(faces, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "recognition").mkdir(parents=True)
    (tmp_path / "runs" / "recognition" / "last.pth").write_bytes(b"x")
    assert str(choose_output(RecognitionConfig())) == "runs/recognition2"
    with pytest.raises(FileExistsError, match="already holds a run"):
        choose_output(RecognitionConfig(output="runs/recognition"))
    assert str(choose_output(RecognitionConfig(output="runs/recognition", overwrite=True))) == "runs/recognition"


def test_cli_errors_are_one_line(faces, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage and one error line
        run_command("train-recognition", ["--lr", "-1"])
    assert exit_info.value.code == 2 and "--lr: -1 is outside the allowed range" in capsys.readouterr().err
    assert run_command("train-recognition", ["--data", str(tmp_path / "nothing"), "--output", str(tmp_path / "o"),
                                             "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing" in err
    assert run_command("train-recognition", ["--loss", "softmax-center", "--margin", "0.3"]) == 2
    assert "--margin" in capsys.readouterr().err


def test_cli_trains_verifies_and_resume_keeps_settings(faces, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--data", str(faces.train), "--val", str(faces.root), "--network-width", "0.25", "--head", "pool",
            "--embedding-size", "32", "--batch-size", "8", "--epochs", "1", "--workers", "0", "--output", str(out),
            "--no-progress", "--no-tensorboard", "--max-steps-per-epoch", "2"]
    assert run_command("train-recognition", args) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and (out / "best.pth").is_file()
    # a resumed run may not change the network; it keeps the saved data and width without flags
    assert run_command("train-recognition", ["--resume", str(out / "last.pth"), "--embedding-size", "64"]) == 2
    assert "--embedding-size" in capsys.readouterr().err
    assert run_command("train-recognition", ["--resume", str(out / "last.pth"), "--epochs", "2"]) == 0
    assert load_embedder(out / "last.pth").config.width == 0.25


def test_prioritized_embedder_runs_at_three_widths(faces, tmp_path):
    from retinaface.recognition.prioritize import RecognitionPrioritizeConfig, run_recognition_prioritization

    train = dict(data=str(faces.train), val=str(faces.root), network_width=0.25, head="pool", embedding_size=32,
                 batch_size=4, workers=0, max_steps_per_epoch=1, lr=0.05, warmup_epochs=0.0)
    result = run_recognition_prioritization(RecognitionPrioritizeConfig(
        output=str(tmp_path / "prio"), pretrain_epochs=1, finetune_epochs=1, train=train, baselines=True,
        widths=(1.0, 0.5), threshold=0.5))  # a high threshold: pruning really removes channels after one step
    rows = {r.model: r for r in result.rows}
    widths = [rows[f"prioritised @{w}"] for w in ("1", "0.5")]
    assert widths[0].macs > 2 * widths[1].macs and widths[0].params > 2 * widths[1].params
    assert result.prune.params_after < result.prune.params_before
    assert len(result.rows) == 4 and all(0.0 <= r.accuracy <= 1.0 for r in result.rows)
    # the independent baselines are sized like the prioritised widths (channel counts are multiples of 8,
    # coarse steps at this tiny width)
    for row, base in zip(result.rows[:2], result.rows[2:]):
        assert abs(base.params - row.params) / row.params < 0.5
    # one checkpoint: reloaded at width 0.5 it computes what the trained model computes at 0.5
    half = load_embedder(result.checkpoint, width=0.5)
    full = load_embedder(result.checkpoint)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        a, b = half(x), full(x)
    assert a.shape == b.shape == (2, 32) and not torch.allclose(a, b)
    full.set_width(0.5)
    with torch.no_grad():
        torch.testing.assert_close(full(x), a)
    assert "| prioritised @0.5 |" in result.table()


def test_prioritize_command_runs_the_recognition_experiment(faces, tmp_path, capsys):
    # retinaface prioritize --task recognition maps its flags onto RecognitionPrioritizeConfig
    import json

    from retinaface.cli import prioritize as prioritize_cli

    out = tmp_path / "prio"
    code = prioritize_cli.main([
        "--task", "recognition", "--output", str(out), "--pretrain-epochs", "1", "--finetune-epochs", "1",
        "--widths", "1.0", "0.5", "--threshold", "0.5", "--no-baselines", "--data", str(faces.train),
        "--val", str(faces.root), "--network-width", "0.25", "--head", "pool", "--embedding-size", "32",
        "--batch-size", "4", "--workers", "0", "--max-steps-per-epoch", "1", "--lr", "0.05",
        "--warmup-epochs", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| prioritised @0.5 |" in printed and "adaptive embedder:" in printed
    assert (out / "adaptive.pth").is_file()
    assert load_embedder(out / "adaptive.pth", width=0.5) is not None
    assert prioritize_cli.main(["--task", "recognition", "--lambda-s", "-1"]) == 2
