"""Training on real data reports val AP while it runs and draws the best epoch's PR curves
(skipped without ``../shared/real``)."""
from __future__ import annotations


import numpy as np
import pytest
from conftest import REAL  # ../shared/real, or $RETINAFACE_REAL_DATA

pytest.importorskip("torch")

DATA = REAL / "widerface"
needs_real = pytest.mark.skipif(not (DATA / "val" / "ground_truth").is_dir(),
                                reason=f"{REAL} (real WIDER photos) is absent")


@needs_real
def test_eval_every_defaults_on_when_the_data_has_val_ground_truth(tmp_path):
    from retinaface.engine import TrainConfig

    assert TrainConfig(data=str(DATA), epochs=12).resolved().eval_every == 2
    assert TrainConfig(data=str(DATA), epochs=3).resolved().eval_every == 1
    assert TrainConfig(data=str(DATA), epochs=12, eval_every=0).resolved().eval_every == 0
    (tmp_path / "train").mkdir()  # no val/ground_truth: nothing to score against
    assert TrainConfig(data=str(tmp_path), epochs=12).resolved().eval_every == 0


@needs_real
def test_best_epoch_curves_are_drawn_from_the_evaluation(tmp_path):
    import cv2
    from retinaface.engine.report import write_best_curves
    from retinaface.evaluation import evaluate, open_ground_truth

    gt = open_ground_truth(DATA / "val" / "ground_truth")
    # a detector that finds exactly the annotated faces, with scores falling face by face
    predictions = {}
    for event, name, boxes in gt:
        xywh = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.linspace(1.0, 0.5, len(xywh)) if len(xywh) else np.zeros(0)
        predictions[(event, name)] = np.column_stack([xywh, scores])
    result = evaluate(predictions, gt)
    assert result.as_dict()["easy"] > 0.99
    path = write_best_curves(result, tmp_path / "pr_best.png", epoch=7)
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 100 and image.std() > 0  # a drawn figure, not a blank


def test_training_with_eval_every_draws_the_best_epochs_curves(tiny_synthetic, tmp_path):
    from retinaface.engine import Trainer, TrainConfig

    config = TrainConfig(data=str(tiny_synthetic), backbone="mobilenet0.25", epochs=2, batch_size=4,
                         image_size=128, max_steps_per_epoch=1, workers=0, device="cpu", progress=False,
                         eval_every=1, save_every=0, output=str(tmp_path / "run"))
    summary = Trainer(config).fit()
    assert all("ap_hard" in row for row in summary.history)
    assert (tmp_path / "run" / "pr_best.png").is_file()
