"""Channel-prioritised landmark networks: pruning, one checkpoint switched to 100 / 75 / 50 % width,
materialised widths, the checkpoint round trip, ``landmarks_in_boxes(width=)``, and the whole
``retinaface prioritize --task landmarks`` run followed by ``eval-landmarks --width / --widths``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from retinaface.adaptive.prioritize import init_monotonic_gamma, prioritized_bns
from retinaface.cli import main
from retinaface.engine.adaptive_hooks import recalibrate_batchnorm
from retinaface.landmarks.adaptive import (AdaptiveLandmarkRegressor, make_adaptive_landmark_model,
                                           materialize_landmark_width, prune_landmark_model)
from retinaface.landmarks.inference import landmarks_in_boxes
from retinaface.landmarks.models import count_parameters, create_landmark_model, model_complexity
from retinaface.landmarks.task import load_landmark_model, save_landmark_checkpoint

SIZE = 32
NETWORKS = [("pfld", {"width": 0.25}), ("mobilenetv3_small", {})]


def pruned_network(name: str, kwargs: dict):
    """A network whose batch-norm scales were set as prioritised pre-training leaves them (the
    decreasing ramp), pruned at |gamma| < 0.3: every group loses its last ~30 % of channels."""
    torch.manual_seed(0)
    model = create_landmark_model(name, 98, SIZE, **kwargs).eval()
    init_monotonic_gamma(prioritized_bns(model))
    # batch-norm statistics of real activations (an untrained MobileNetV3's running statistics
    # shrink its features to ~1e-8 at 32 px, leaving every output at the centre bias)
    recalibrate_batchnorm(model, [(crops(8, seed),) for seed in range(3)], max_batches=3)
    full_params = count_parameters(model)
    channels, report = prune_landmark_model(model, threshold=0.3)
    return model, channels, report, full_params


@pytest.fixture(scope="module", params=NETWORKS, ids=[n for n, _ in NETWORKS])
def networks(request):
    pruned, channels, report, full_params = pruned_network(*request.param)
    adaptive = make_adaptive_landmark_model(pruned, channels).eval()
    return pruned, adaptive, report, full_params


def crops(count: int = 3, seed: int = 100) -> torch.Tensor:
    return torch.randn(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_pruning_removes_the_low_scale_channels(networks):
    pruned, _, report, full_params = networks
    assert report.channels_after < report.channels_before
    assert count_parameters(pruned) == report.params_after < full_params


@torch.no_grad()
def test_full_width_equals_the_pruned_network_bit_for_bit(networks):
    pruned, adaptive, _, _ = networks
    x = crops()
    assert torch.equal(adaptive.set_width(1.0)(x), pruned(x))


@torch.no_grad()
def test_lower_widths_cost_less_and_predict_differently(networks):
    _, adaptive, _, _ = networks
    x = crops()
    costs, outputs = [], []
    for width in (1.0, 0.75, 0.5):
        adaptive.set_width(width)
        costs.append(model_complexity(adaptive, SIZE))
        outputs.append(adaptive(x))
    adaptive.set_width(1.0)
    for key in ("params", "flops", "torch_flops"):
        assert costs[0][key] > costs[1][key] > costs[2][key], key
    assert outputs[2].shape == outputs[0].shape == (3, 98, 2)
    assert not torch.equal(outputs[0], outputs[2])


@torch.no_grad()
@pytest.mark.parametrize("width", [0.75, 0.5])
def test_a_materialised_width_is_a_plain_network_with_the_same_outputs(networks, width):
    _, adaptive, _, _ = networks
    plain = materialize_landmark_width(adaptive, width).eval()
    assert not isinstance(plain, AdaptiveLandmarkRegressor) and adaptive.width == 1.0
    x = crops()
    assert torch.equal(plain(x), adaptive.set_width(width)(x))
    assert count_parameters(plain) == model_complexity(adaptive, SIZE)["params"]
    assert model_complexity(plain, SIZE)["flops"] == model_complexity(adaptive, SIZE)["flops"]
    adaptive.set_width(1.0)


@torch.no_grad()
def test_checkpoints_rebuild_every_width_and_a_plain_one_refuses_a_lower_width(networks, tmp_path):
    _, adaptive, _, _ = networks
    x = crops()
    path = tmp_path / "adaptive.pth"
    save_landmark_checkpoint(adaptive, path, "wflw98", 0.1)
    for width in (1.0, 0.5):
        loaded = load_landmark_model(path, width=width)
        assert loaded.width == width
        assert torch.equal(loaded(x), adaptive.set_width(width)(x))
    # a materialised width saves its pruned shapes and loads as a plain network
    plain = materialize_landmark_width(adaptive, 0.75).eval()
    save_landmark_checkpoint(plain, tmp_path / "plain.pth", "wflw98", 0.1)
    reloaded = load_landmark_model(tmp_path / "plain.pth")
    assert torch.equal(reloaded(x), adaptive.set_width(0.75)(x))
    assert load_landmark_model(tmp_path / "plain.pth", width=1.0) is not None
    with pytest.raises(ValueError, match="channel-prioritised"):
        load_landmark_model(tmp_path / "plain.pth", width=0.5)
    adaptive.set_width(1.0)


def test_landmarks_in_boxes_runs_a_width_for_one_call():
    pruned, channels, _, _ = pruned_network("pfld", {"width": 0.25})
    adaptive = make_adaptive_landmark_model(pruned, channels).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(80, 120, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 50, 60, 0.9], [60, 20, 110, 70, 0.8]])
    half = landmarks_in_boxes(adaptive, image, boxes, width=0.5)
    assert adaptive.width == 1.0  # restored
    np.testing.assert_array_equal(half, landmarks_in_boxes(materialize_landmark_width(adaptive, 0.5), image, boxes))
    assert not np.array_equal(half, landmarks_in_boxes(adaptive, image, boxes))
    with pytest.raises(ValueError, match="adaptive"):
        landmarks_in_boxes(pruned, image, boxes, width=0.5)


def last_json(text: str):
    return json.loads(text.strip().splitlines()[-1])


def test_prioritize_landmarks_then_evaluate_each_width(tmp_path, capsys):
    out = tmp_path / "prio"
    args = ["prioritize", "--task", "landmarks", "--output", str(out), "--pretrain-epochs", "1",
            "--finetune-epochs", "1", "--synthetic-root", str(tmp_path / "synthetic"), "--synthetic-train", "16",
            "--synthetic-val", "6", "--input-size", "32", "--model-width", "0.25", "--batch-size", "8",
            "--workers", "0", "--device", "cpu", "--no-progress", "--lambda-s", "0.05"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| prioritised | 0.5 |" in printed and "plain (2 epochs)" in printed
    results = json.loads((out / "results.json").read_text())
    pretrained, *rows = results["rows"]
    assert pretrained["model"].startswith("pre-trained") and pretrained["params"] >= rows[0]["params"]
    assert [r["width"] for r in rows] == [1.0, 0.75, 0.5, 1.0]
    assert rows[0]["params"] > rows[1]["params"] > rows[2]["params"]
    assert rows[0]["flops"] > rows[1]["flops"] > rows[2]["flops"]
    assert all(0 < r["nme"] < 5 for r in rows)
    assert (out / "finetune" / "last.pth").is_file() and (out / "plain" / "last.pth").is_file()

    val = tmp_path / "synthetic" / "val" / "list_98pt_rect_attr_val.txt"
    checkpoint = str(out / "adaptive.pth")
    assert main(["eval-landmarks", "--weights", checkpoint, "--data", str(val), "--widths", "1", "0.75", "0.5",
                 "--json"]) == 0
    table = last_json(capsys.readouterr().out)["widths"]
    for row, expected in zip(table, rows[:3]):
        assert (row["width"], row["params"], row["flops"]) == (expected["width"], expected["params"], expected["flops"])
        assert row["nme"] == pytest.approx(expected["nme"], abs=1e-6)
    assert main(["eval-landmarks", "--weights", checkpoint, "--data", str(val), "--width", "0.5", "--json"]) == 0
    assert last_json(capsys.readouterr().out)["nme"] == pytest.approx(table[2]["nme"], abs=1e-9)

    # the result folder is never overwritten; a plain checkpoint refuses a width: one line each
    assert main(args) == 2
    assert "holds an earlier prioritisation run" in capsys.readouterr().err
    assert main(["eval-landmarks", "--weights", str(out / "plain" / "last.pth"), "--data", str(val),
                 "--width", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "channel-prioritised" in err
    assert main(["eval-landmarks", "--weights", checkpoint, "--data", str(val), "--width", "0.5",
                 "--widths", "1"]) == 2
    assert main(["eval-landmarks", "--pred", str(val), "--gt", str(val), "--width", "0.5"]) == 2
