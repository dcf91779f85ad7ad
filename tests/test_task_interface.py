"""A third training task added the way docs/architecture.md ("Adding a training task") says, without
touching the loop: a config on BaseTrainConfig, a Task, and the one Trainer trains, checkpoints,
resumes and picks best.pth by the task's metric."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, ClassVar, Dict, Optional

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from retinaface.checkpoint import read_checkpoint
from retinaface.engine import BaseTrainConfig, Task, TaskModel, TotalLoss, TrainData, Trainer
from retinaface.engine.config import add_config_arguments, merge_resume, option, shared_option
from retinaface.engine.task import steps_per_epoch


# -- step 1: the config --------------------------------------------------------------------------
@dataclasses.dataclass
class RegressionConfig(BaseTrainConfig):
    """y = x . w + noise on random tensors."""

    lr: float = shared_option("lr", 0.1)
    epochs: int = shared_option("epochs", 4)
    batch_size: int = shared_option("batch_size", 16)
    features: int = option(8, "input features", kind=int, low=1)
    samples: int = option(128, "training samples", kind=int, low=1)


# -- step 2: the task ----------------------------------------------------------------------------
class RegressionTask(Task):
    default_output = "runs/regression"
    best_metric = "mse"
    higher_is_better = False
    metric_prefix = "val_"

    def __init__(self, config: RegressionConfig) -> None:
        super().__init__(config)
        generator = torch.Generator().manual_seed(1234)  # the data set is fixed; the run's seed orders it
        self.true_w = torch.randn(config.features, 1, generator=generator)
        x = torch.randn(config.samples + 64, config.features, generator=generator)
        y = x @ self.true_w + 0.01 * torch.randn(len(x), 1, generator=generator)
        self.train_xy, self.val_xy = (x[:config.samples], y[:config.samples]), (x[config.samples:], y[config.samples:])

    def build_data(self, trainer) -> TrainData:
        cfg = self.config
        dataset = TensorDataset(*self.train_xy)
        sampler = DistributedSampler(dataset, num_replicas=trainer.dist.world_size, rank=trainer.dist.rank,
                                     shuffle=True, seed=cfg.seed)
        loader = DataLoader(dataset, batch_size=cfg.batch_size // trainer.dist.world_size, sampler=sampler)
        return TrainData(None, dataset, sampler, loader, steps_per_epoch(loader, cfg.max_steps_per_epoch))

    def build_model(self, trainer, model: Optional[nn.Module], resume_state: Optional[Dict[str, Any]]) -> TaskModel:
        model = model or nn.Linear(self.config.features, 1)
        if resume_state is not None:
            model.load_state_dict(resume_state["model"])
        return TaskModel(model.to(trainer.device))

    def compute_loss(self, model: nn.Module, batch) -> TotalLoss:
        x, y = batch
        return TotalLoss(nn.functional.mse_loss(model(x), y))

    def evaluate(self, trainer) -> Dict[str, float]:
        x, y = (t.to(trainer.device) for t in self.val_xy)
        with torch.no_grad():
            return {"mse": float(nn.functional.mse_loss(trainer.raw_model(x), y))}


def regression(tmp_path, name: str, **options) -> RegressionConfig:
    return RegressionConfig(**dict(dict(output=str(tmp_path / name), device="cpu", workers=0, progress=False,
                                        save_every=1), **options))


# -- step 3: train with the one Trainer -----------------------------------------------------------
def test_a_new_task_trains_checkpoints_and_picks_best_by_its_metric(tmp_path):
    trainer = Trainer(RegressionTask(regression(tmp_path, "run")))
    summary = trainer.fit()
    losses = [row["loss"] for row in summary.history]
    mse = [row["val_mse"] for row in summary.history]
    assert len(losses) == 4 and losses[-1] < 0.5 * losses[0] and mse[-1] < mse[0]
    assert summary.metrics == {"mse": mse[-1]}
    assert sorted(p.name for p in tmp_path.joinpath("run").glob("*.pth")) == \
        ["best.pth", "epoch_001.pth", "epoch_002.pth", "epoch_003.pth", "epoch_004.pth", "last.pth"]
    best = read_checkpoint(summary.best_checkpoint)
    # lower is better: best.pth is the epoch of the smallest validation error
    assert best["epoch"] == 1 + mse.index(min(mse)) and best["best_metric"] == pytest.approx(-min(mse))
    header = (tmp_path / "run" / "log.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["epoch", "step", "lr", "loss"] and "val_mse" in header


def test_a_new_task_resumes_exactly(tmp_path):
    full = Trainer(RegressionTask(regression(tmp_path, "full"))).fit()
    resumed_trainer = Trainer(RegressionTask(regression(tmp_path, "resumed",
                                                        resume=str(tmp_path / "full" / "epoch_002.pth"))))
    resumed = resumed_trainer.fit()
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    a = read_checkpoint(tmp_path / "full" / "last.pth")["model"]
    b = read_checkpoint(tmp_path / "resumed" / "last.pth")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a setting that shapes the run may not change on resume
    with pytest.raises(ValueError, match="--features 4 contradicts the resumed run"):
        Trainer(RegressionTask(regression(tmp_path, "other", features=4,
                                          resume=str(tmp_path / "full" / "last.pth")))).setup()


def test_a_new_tasks_flags_come_from_its_config():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, RegressionConfig)
    args = parser.parse_args(["--features", "3", "--sam", "--lr", "0.5"])
    assert (args.features, args.sam, args.lr) == (3, True, 0.5)
    with pytest.raises(SystemExit):
        parser.parse_args(["--samples", "0"])  # the range of its own option is checked too
    merged = merge_resume({"resume": "x.pth", "epochs": 9}, {"features": 3, "epochs": 4, "workers": 2},
                          RegressionConfig)
    assert merged == {"features": 3, "epochs": 9, "resume": "x.pth"}  # workers are this machine's


def test_there_is_one_training_loop():
    from retinaface.recognition.training import RecognitionTrainer

    assert issubclass(RecognitionTrainer, Trainer)
    assert not {"fit", "train_epoch", "setup", "_optimizer_step"} & set(vars(RecognitionTrainer))
