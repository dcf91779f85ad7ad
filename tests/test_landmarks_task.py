"""The dense-landmark task through the one Trainer: synthetic faces generated once, a few steps,
checkpoints that rebuild the network, exact resume, NME on the val split, the wing loss."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retinaface.engine import Trainer
from retinaface.landmarks.config import LandmarkConfig
from retinaface.landmarks.task import (LANDMARK_FORMAT, LandmarkCrops, landmark_loss, load_landmark_model,
                                       load_samples, predict_landmarks, synthetic_lists, wing_loss)
from retinaface.landmarks.crop import AugmentConfig
from retinaface.landmarks.schemes import get_scheme
from retinaface.checkpoint import read_checkpoint


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic_landmarks")


def config(synthetic, output, **options) -> LandmarkConfig:
    values = dict(synthetic_train=48, synthetic_val=8, synthetic_root=str(synthetic), output=str(output),
                  epochs=2, batch_size=16, input_size=32, workers=0, device="cpu", progress=False,
                  tensorboard=False, save_every=1)
    values.update(options)
    return LandmarkConfig(**values)


def test_wing_loss_matches_a_hand_computation():
    # w = 10, eps = 2: |x| < 10 -> 10 ln(1 + |x| / 2); else |x| - C, C = 10 - 10 ln(6) = -7.9176
    error = torch.tensor([0.0, 1.0, -4.0, 10.0, -12.0])
    expected = [0.0, 10 * math.log(1.5), 10 * math.log(3.0), 10 - (10 - 10 * math.log(6.0)),
                12 - (10 - 10 * math.log(6.0))]
    assert wing_loss(error).tolist() == pytest.approx(expected, rel=1e-6)
    # the two pieces meet at |x| = w
    assert float(wing_loss(torch.tensor(10.0 - 1e-4))) == pytest.approx(10 * math.log(6.0), abs=1e-3)


def test_landmark_loss_leaves_out_unmarked_points_and_reports_pixels():
    pred = torch.tensor([[[0.5, 0.5], [0.0, 0.0]]])
    target = torch.tensor([[[0.5, 0.75], [1.0, 1.0]]])
    mask = torch.tensor([[True, False]])
    out = landmark_loss("l1", pred, target, mask, input_size=64)
    assert float(out.total) == pytest.approx(0.25 / 2)  # one marked point, two coordinates
    assert float(out.pixel_error) == pytest.approx(0.25 * 64)
    wing = landmark_loss("wing", pred, target, mask, input_size=64)
    assert float(wing.total) == pytest.approx(float(wing_loss(torch.tensor(16.0))) / 2)


def test_augmented_crops_are_a_function_of_seed_epoch_and_index(synthetic):
    train_list, _ = synthetic_lists(config(synthetic, "unused"), get_scheme("wflw98"))
    samples = load_samples(train_list)[:4]
    scheme = get_scheme("wflw98")
    a = LandmarkCrops(samples, scheme, 32, 0.1, AugmentConfig(), seed=3)
    b = LandmarkCrops(samples, scheme, 32, 0.1, AugmentConfig(), seed=3)
    b.set_epoch(1)
    first, again, other = a[2], a[2], b[2]
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])
    plain = LandmarkCrops(samples, scheme, 32, 0.1, None, seed=3)[2]
    assert plain[0].shape == (32, 32, 3) and plain[1].shape == (98, 2) and plain[2].all()
    # the un-augmented crop keeps the face inside: normalised points within the crop
    assert plain[1].min() > 0 and plain[1].max() < 1


def test_a_synthetic_run_checkpoints_resumes_and_scores_nme(synthetic, tmp_path):
    trainer = Trainer(LandmarkTaskFor(config(synthetic, tmp_path / "full")))
    full = trainer.fit()
    assert len(full.history) == 2 and set(full.metrics) == {"nme", "fr@0.1", "auc@0.1"}
    assert 0 < full.metrics["nme"] < 2 and 0 <= full.metrics["auc@0.1"] <= 1
    assert "val_nme" in (tmp_path / "full" / "log.csv").read_text().splitlines()[0].split(",")
    state = read_checkpoint(tmp_path / "full" / "last.pth")
    assert state["format"] == LANDMARK_FORMAT and state["config"]["num_points"] == 98
    assert state["config"]["input_size"] == 32 and state["scheme"] == "wflw98"
    # best.pth is the epoch of the lowest NME
    nmes = [row["val_nme"] for row in full.history]
    assert read_checkpoint(full.best_checkpoint)["epoch"] == 1 + nmes.index(min(nmes))

    model = load_landmark_model(tmp_path / "full" / "last.pth")
    val = trainer.task.val_samples
    predicted = predict_landmarks(model, val, model.crop_margin)
    from retinaface.landmarks.evaluate import evaluate_landmarks
    assert evaluate_landmarks(predicted, val).nme == pytest.approx(full.metrics["nme"], rel=1e-6)

    resumed = Trainer(LandmarkTaskFor(config(synthetic, tmp_path / "resumed",
                                             resume=str(tmp_path / "full" / "epoch_001.pth")))).fit()
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    a = read_checkpoint(tmp_path / "full" / "last.pth")["model"]
    b = read_checkpoint(tmp_path / "resumed" / "last.pth")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_loss_falls_over_a_few_epochs_on_a_tiny_set(synthetic, tmp_path):
    summary = Trainer(LandmarkTaskFor(config(synthetic, tmp_path / "run", epochs=5, augment=False, lr=3e-3,
                                             eval_every=0, save_every=0))).fit()
    losses = [row["loss"] for row in summary.history]
    assert losses[-1] < 0.7 * losses[0]


def test_a_run_folder_is_never_overwritten(synthetic, tmp_path):
    Trainer(LandmarkTaskFor(config(synthetic, tmp_path / "run", epochs=1, max_steps_per_epoch=1))).fit()
    with pytest.raises(Exception, match="holds an earlier run"):
        Trainer(LandmarkTaskFor(config(synthetic, tmp_path / "run", epochs=1)))


def LandmarkTaskFor(cfg: LandmarkConfig):
    from retinaface.landmarks.task import LandmarkTask

    return LandmarkTask(cfg)


def test_the_synthetic_recipe_gives_only_pfld_its_half_width():
    pfld = LandmarkConfig(data="synthetic").resolved()
    assert (pfld.model_width, pfld.input_size) == (0.5, 64)
    other = LandmarkConfig(data="synthetic", model="mobilenetv3_small").resolved()
    assert other.model_width is None and other.input_size == 64 and other.model_kwargs() == {}
    with pytest.raises(ValueError, match="--model-width: only pfld"):
        LandmarkConfig(data="synthetic", model="mobilenetv3_small", model_width=0.5).resolved()
