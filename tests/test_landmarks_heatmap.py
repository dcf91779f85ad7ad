"""The PIPNet-style heatmap landmark models: the score map + offset encoding and its exact inverse,
neighbour votes, the loss on a hand-computed example, the registry's heatmap networks, the config's
options for them and a short training run through the one Trainer."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from retinaface.engine import Trainer
from retinaface.checkpoint import read_checkpoint
from retinaface.landmarks import models
from retinaface.landmarks.config import LandmarkConfig
from retinaface.landmarks.evaluate import evaluate_landmarks
from retinaface.landmarks.heatmap import (HeatmapOutput, cell_targets, decode_points, encode_points,
                                          nearest_neighbours)
from retinaface.landmarks.task import (HeatmapLoss, LandmarkTask, heatmap_loss, load_landmark_model, load_samples,
                                       mean_shape, predict_landmarks, synthetic_lists)
from retinaface.landmarks.schemes import get_scheme


# --------------------------------------------------------------------------------- encoding
def test_encoded_points_decode_back_to_themselves(single_thread):
    generator = torch.Generator().manual_seed(0)
    # inside the crop and up to 15 % outside it (augmentation moves points there)
    points = torch.rand(4, 98, 2, generator=generator, dtype=torch.float64) * 1.3 - 0.15
    index = torch.from_numpy(nearest_neighbours(points[0].numpy(), 10))
    for height, width in ((8, 8), (4, 4), (3, 5)):
        maps = encode_points(points, index, height, width)
        # no cell quantisation is left: own position and every neighbour vote agree with the point
        torch.testing.assert_close(decode_points(maps, index), points, rtol=0, atol=1e-12)
        # the cell alone (offsets zeroed) is the cell's corner: floor(p * size) / size, clamped
        cells_only = maps._replace(offset_x=torch.zeros_like(maps.offset_x), offset_y=torch.zeros_like(maps.offset_y),
                                   neighbour_x=maps.neighbour_x[:, :, :0], neighbour_y=maps.neighbour_y[:, :, :0])
        corners = decode_points(cells_only, index[:, :0])
        size = torch.tensor([width, height], dtype=torch.float64)
        expected = torch.minimum(torch.floor(points * size).clamp_min(0), size - 1) / size
        torch.testing.assert_close(corners, expected, rtol=0, atol=1e-12)
    # float32, the networks' precision
    maps = encode_points(points.float(), index, 8, 8)
    torch.testing.assert_close(decode_points(maps, index), points.float(), rtol=0, atol=1e-6)


def test_cell_targets_by_hand():
    points = torch.tensor([[[0.3, 0.8], [0.9, 0.1], [1.1, -0.2]]])
    target = cell_targets(points, torch.tensor([[1], [0], [0]]), 2, 2)
    # (0.6, 1.6) -> col 0 row 1; (1.8, 0.2) -> col 1 row 0; (2.2, -0.4) -> clamped to col 1 row 0
    assert target.cell.tolist() == [[2, 1, 1]]
    torch.testing.assert_close(target.offset, torch.tensor([[[0.6, 0.6], [0.8, 0.2], [1.2, -0.4]]]))
    # neighbours relative to the point's own cell corner
    torch.testing.assert_close(target.neighbour, torch.tensor([[[[1.8, -0.8]], [[-0.4, 1.6]], [[-0.4, 1.6]]]]))


def test_neighbour_votes_are_averaged_with_the_own_estimate():
    # three points on a 1 x 1 map (all in cell 0); point 1 is the neighbour of 0 and 2, point 0 of 1
    index = torch.tensor([[1], [0], [1]])
    zeros = torch.zeros(1, 3, 1, 1)
    own_x = torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1)
    vote_x = torch.tensor([0.7, 0.2, 0.4]).view(1, 3, 1, 1, 1)  # point 0 says 0.7 for point 1, ...
    out = HeatmapOutput(zeros, own_x, zeros, vote_x, torch.zeros(1, 3, 1, 1, 1))
    decoded = decode_points(out, index)[0, :, 0]
    # point 0: own 0.1 and point 1's vote 0.2; point 1: own 0.5 and votes 0.7, 0.4; point 2: none
    torch.testing.assert_close(decoded, torch.tensor([(0.1 + 0.2) / 2, (0.5 + 0.7 + 0.4) / 3, 0.9]))


def test_nearest_neighbours_on_a_line():
    shape = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 0.0]])
    assert nearest_neighbours(shape, 2).tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    assert nearest_neighbours(shape, 0).shape == (4, 0)
    with pytest.raises(ValueError, match="at most 3"):
        nearest_neighbours(shape, 4)


# --------------------------------------------------------------------------------- loss
def _hand_example():
    """Two points on a 2 x 2 map, one neighbour each (each other); see the loss test."""
    points = torch.tensor([[[0.3, 0.8], [0.9, 0.1]]])   # cells: point 0 (col 0, row 1), point 1 (col 1, row 0)
    index = torch.tensor([[1], [0]])
    scores = torch.zeros(1, 2, 2, 2)
    scores[0, 0, 1, 0] = 0.5        # point 0: its own cell, too low
    scores[0, 1, 0, 0] = 2.0        # point 1: the wrong cell
    offset_x, offset_y = torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)
    offset_x[0, 0, 1, 0] = 0.5      # point 0's x offset: 0.6 expected
    offset_y[0, 0, 1, 0] = 0.6      # exact
    neighbour_x, neighbour_y = torch.zeros(1, 2, 1, 2, 2), torch.zeros(1, 2, 1, 2, 2)
    neighbour_x[0, 0, 0, 1, 0] = 1.8  # point 0 locating point 1: (1.8, -0.8) expected
    return HeatmapOutput(scores, offset_x, offset_y, neighbour_x, neighbour_y), points, index


def test_heatmap_loss_matches_a_hand_computation():
    outputs, points, index = _hand_example()
    loss = heatmap_loss(outputs, points, torch.ones(1, 2, dtype=torch.bool), index, "mse", "l1", input_size=64)
    assert isinstance(loss, HeatmapLoss)
    # score maps, MSE over 4 cells: point 0 (1 - 0.5)^2 / 4; point 1 (1 - 0)^2 + (0 - 2)^2 over 4
    score = (0.25 / 4 + 5 / 4) / 2
    # offsets at the true cell: point 0 |0.5 - 0.6| + 0; point 1 |0 - 0.8| + |0 - 0.2|
    offset = (0.1 + 1.0) / 2
    # neighbours: point 0 |1.8 - 1.8| + |0 + 0.8|; point 1 |0 + 0.4| + |0 - 1.6|
    neighbour = (0.8 + 2.0) / 2
    assert float(loss.score) == pytest.approx(score, rel=1e-6)
    assert float(loss.offset) == pytest.approx(offset, rel=1e-6)
    assert float(loss.neighbour) == pytest.approx(neighbour, rel=1e-6)
    assert float(loss.total) == pytest.approx(10 * score + offset + neighbour, rel=1e-6)  # PIPNet's 10 : 1
    # decoded: point 0 in cell (0, 1): own (0.5 / 2, 1.6 / 2), point 1's vote from its argmax cell (0, 0)
    # with zero neighbour offsets (0, 0) -> (0.125, 0.4); point 1: own (0, 0), point 0's vote
    # (1.8 / 2, 1 / 2) -> (0.45, 0.25)
    errors = [math.hypot(0.3 - 0.125, 0.8 - 0.4), math.hypot(0.9 - 0.45, 0.1 - 0.25)]
    assert float(loss.pixel_error) == pytest.approx(64 * sum(errors) / 2, rel=1e-5)

    # point 1 unmarked: its map, its offsets and every pair it is part of leave the loss
    masked = heatmap_loss(outputs, points, torch.tensor([[True, False]]), index, "mse", "l1", input_size=64)
    assert float(masked.score) == pytest.approx(0.25 / 4, rel=1e-6)
    assert float(masked.offset) == pytest.approx(0.1, rel=1e-6)
    assert float(masked.neighbour) == 0.0
    assert float(masked.total) == pytest.approx(10 * 0.25 / 4 + 0.1, rel=1e-6)

    # BCE on logits: -log(sigmoid(x)) for the target cell, -log(1 - sigmoid(x)) elsewhere
    bce = heatmap_loss(outputs, points, torch.ones(1, 2, dtype=torch.bool), index, "bce", "mse", input_size=64)
    ln2 = math.log(2.0)
    point0 = (math.log1p(math.exp(-0.5)) + 3 * ln2) / 4
    point1 = (math.log1p(math.exp(2.0)) + 3 * ln2) / 4
    assert float(bce.score) == pytest.approx((point0 + point1) / 2, rel=1e-6)
    # squared offsets: point 0 0.1^2; point 1 0.8^2 + 0.2^2
    assert float(bce.offset) == pytest.approx((0.01 + 0.68) / 2, rel=1e-5)


def test_a_perfect_output_has_zero_loss_and_its_gradient_reaches_every_map():
    generator = torch.Generator().manual_seed(1)
    points = torch.rand(2, 5, 2, generator=generator)
    index = torch.from_numpy(nearest_neighbours(points[0].numpy(), 2))
    ideal = encode_points(points, index, 4, 4)
    mask = torch.ones(2, 5, dtype=torch.bool)
    perfect = heatmap_loss(ideal, points, mask, index)
    assert float(perfect.total) == 0.0 and float(perfect.pixel_error) < 1e-4
    maps = HeatmapOutput(*(torch.zeros_like(t, requires_grad=True) for t in ideal))
    heatmap_loss(maps, points, mask, index).total.backward()
    assert all(float(t.grad.abs().sum()) > 0 for t in maps)


# --------------------------------------------------------------------------------- networks
@pytest.mark.parametrize("name", ["pipnet_mobilenetv3", "pipnet_resnet18", "pipnet:timm:mobilenetv3_small_050"])
def test_heatmap_networks_give_points_in_eval_and_maps_in_training(single_thread, name):
    net = models.create_landmark_model(name, 21, input_size=64)
    assert net.kind == "heatmap" and models.landmark_model_kind(name) == "heatmap"
    assert net.config.input_size == 64 and net.num_neighbours == 10
    x = torch.randn(2, 3, 64, 64)
    maps = net(x)
    assert isinstance(maps, HeatmapOutput)
    assert maps.scores.shape == (2, 21, 2, 2) and maps.neighbour_y.shape == (2, 21, 10, 2, 2)
    net.eval()
    with torch.no_grad():
        points = net(x)
        assert points.shape == (2, 21, 2)
        torch.testing.assert_close(points, decode_points(net.maps(x), net.neighbour_index))


def test_heatmap_registry_defaults_and_checks():
    net = models.create_landmark_model("pipnet_mobilenetv3", 5)
    assert net.config.input_size == 256 and net.num_neighbours == 4   # five points: four others at most
    assert net.neighbour_index.tolist() == [[i] * 4 for i in range(5)]  # until set from a mean face
    net.set_neighbours(np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 0.0], [7.5, 0.0]]))
    assert net.neighbour_index[0].tolist() == [1, 2, 3, 4]
    assert models.create_landmark_model("pipnet_resnet18", 5, 64, neighbours=0).head.out_channels == 15
    with pytest.raises(ValueError, match="multiple of its stride 32"):
        models.create_landmark_model("pipnet_resnet18", 98, input_size=100)
    with pytest.raises(ValueError, match="reserved"):
        models.register_landmark_model("pipnet:timm:x", 256, kind="heatmap")(lambda **kw: None)
    # the config knows the kinds without importing torch; they agree with the registry
    for name in models.list_landmark_models() + ["timm:resnet18", "pipnet:timm:resnet18"]:
        config = LandmarkConfig(model=name)
        assert config.heatmap_model == (models.landmark_model_kind(name) == "heatmap"), name
    assert models.create_landmark_model("pfld", 5).kind == "regression"


def test_heatmap_options_resolve_and_are_checked():
    synthetic = LandmarkConfig(model="pipnet_mobilenetv3").resolved()
    assert (synthetic.input_size, synthetic.loss, synthetic.score_loss, synthetic.neighbours) == (128, "l1", "mse", 10)
    assert synthetic.model_width is None and synthetic.model_kwargs() == {"neighbours": 10}
    real = LandmarkConfig(data="x.txt", model="pipnet_resnet18", score_loss="bce", neighbours=0).resolved()
    assert (real.input_size, real.score_loss, real.model_kwargs()) == (256, "bce", {"neighbours": 0})
    # a regressor keeps its loss and recipe (mobilenetv3_small on the synthetic faces: no pfld width)
    regressor = LandmarkConfig(model="mobilenetv3_small").resolved()
    assert (regressor.loss, regressor.score_loss, regressor.neighbours, regressor.model_width) == \
        ("wing", None, None, None)
    with pytest.raises(ValueError, match="--loss: a heatmap model"):
        LandmarkConfig(model="pipnet_mobilenetv3", loss="wing").validate()
    with pytest.raises(ValueError, match="--score-loss / --neighbours"):
        LandmarkConfig(model="pfld", score_loss="bce").validate()
    with pytest.raises(ValueError, match="--input-size: pipnet_resnet18 needs a multiple of 32"):
        LandmarkConfig(model="pipnet_resnet18", input_size=112).validate()
    with pytest.raises(ValueError, match="--model"):
        LandmarkConfig(model="pipnet_nothing").validate()


# --------------------------------------------------------------------------------- training
def test_a_heatmap_run_learns_stores_its_neighbours_and_reloads(tmp_path_factory, tmp_path):
    synthetic = tmp_path_factory.mktemp("synthetic_heatmap")
    cfg = LandmarkConfig(model="pipnet_mobilenetv3", synthetic_train=32, synthetic_val=8,
                         synthetic_root=str(synthetic), output=str(tmp_path / "run"), epochs=4, batch_size=16,
                         input_size=64, neighbours=3, augment=False, workers=0, device="cpu", progress=False,
                         tensorboard=False, save_every=0)
    trainer = Trainer(LandmarkTask(cfg))
    summary = trainer.fit()
    losses = [row["loss"] for row in summary.history]
    assert losses[-1] < 0.7 * losses[0]
    assert {"score", "offset", "neighbour", "pixel_error"} <= set(summary.history[0])
    # the neighbours are the training set's mean face's, in the checkpoint
    train_list, _ = synthetic_lists(cfg, get_scheme("wflw98"))
    expected = nearest_neighbours(mean_shape(load_samples(train_list), cfg.crop_margin), 3)
    state = read_checkpoint(tmp_path / "run" / "last.pth")
    assert np.array_equal(state["model"]["neighbour_index"].numpy(), expected)
    assert not np.array_equal(expected, np.repeat(np.arange(98)[:, None], 3, axis=1))
    # the reloaded network predicts the points the run scored
    model = load_landmark_model(tmp_path / "run" / "last.pth")
    assert model.kind == "heatmap" and np.array_equal(model.neighbour_index.numpy(), expected)
    val = trainer.task.val_samples
    nme = evaluate_landmarks(predict_landmarks(model, val, model.crop_margin), val).nme
    assert nme == pytest.approx(summary.metrics["nme"], rel=1e-6)


def test_train_landmarks_command_with_a_heatmap_model(tmp_path, capsys):
    from retinaface.cli import main

    common = ["--model", "pipnet_mobilenetv3", "--synthetic-root", str(tmp_path / "synthetic"), "--synthetic-train",
              "16", "--synthetic-val", "4", "--input-size", "64", "--workers", "0", "--device", "cpu",
              "--no-progress", "--no-tensorboard", "--epochs", "1", "--batch-size", "8"]
    assert main(["train-landmarks", *common, "--score-loss", "bce", "--output", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "pipnet_mobilenetv3 (score bce + offsets l1, 10 neighbours, wflw98) at 64 px" in out and "NME %" in out
    val = tmp_path / "synthetic" / "val" / "list_98pt_rect_attr_val.txt"
    assert main(["eval-landmarks", "--weights", str(tmp_path / "run" / "last.pth"), "--data", str(val), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["count"] == 4
    # a regressor's loss for a heatmap model: one line naming the flag, exit 2
    assert main(["train-landmarks", *common, "--loss", "wing", "--output", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--loss: a heatmap model" in err
