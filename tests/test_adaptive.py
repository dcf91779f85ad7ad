"""Channel prioritisation, threshold pruning and width switching (retinaface.adaptive)."""
import math

import pytest
import torch

from retinaface import CheckpointError, create_model, load_model, save_model
from retinaface.adaptive import (AdaptiveRetinaFace, SlimConv2d, find_channel_groups, init_monotonic_gamma,
                                 keep_count, make_adaptive, materialize_width, monotonic_gamma,
                                 monotonicity_penalty, prioritization_penalty, prioritized_bns,
                                 prune_by_threshold, set_width, sparsity_penalty)
from retinaface.adaptive.slim import active_parameters, kept_selection
from retinaface.models import RetinaFace
from retinaface.inference.profiling import count_flops


def outputs(model, x):
    with torch.no_grad():
        return model(x)


def assert_same(a, b, atol=0.0):
    for u, v in zip(a, b):
        assert u.shape == v.shape
        assert (u - v).abs().max() <= atol


def zero_tail(model, fraction=0.25):
    """gamma = beta = 0 for the last ``fraction`` of every prioritised group: channels that output 0."""
    groups = find_channel_groups(model)
    with torch.no_grad():
        for group in groups:
            if not group.prioritized:
                continue
            cut = group.size - int(group.size * fraction)
            for m in group.bn_members:
                bn = model.get_submodule(m.name)
                bn.weight[m.offset + cut:m.offset + group.size] = 0
                bn.bias[m.offset + cut:m.offset + group.size] = 0
    return groups


def randomize_bn(model, seed=0):
    """Non-trivial batch-norm statistics and shifts, so eval-mode outputs exercise every channel."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def pruned():
    """A mobilenet0.25 RetinaFace with a quarter of every prioritised group zeroed, then pruned."""
    torch.manual_seed(0)
    model = randomize_bn(create_model("mobilenet0.25")).eval()
    init_monotonic_gamma(prioritized_bns(model))
    zero_tail(model)
    x = torch.randn(2, 3, 64, 96)
    before = outputs(model, x)
    report = prune_by_threshold(model, threshold=0.1)
    return model, x, before, report


@pytest.fixture(scope="module")
def adaptive(pruned):
    return make_adaptive(pruned[0]).eval()


# -- penalties and initialisation ------------------------------------------------------------

def test_penalties_on_hand_made_gammas():
    a = torch.tensor([1.0, 0.5, 0.8, 0.9, 0.2])   # rises 0.3 and 0.1
    b = torch.tensor([-0.5, 0.25])                 # rise 0.75
    assert sparsity_penalty([a]).item() == pytest.approx(3.4)
    assert sparsity_penalty([a, b]).item() == pytest.approx(4.15)
    assert monotonicity_penalty([a]).item() == pytest.approx(0.4)
    assert monotonicity_penalty([a, b]).item() == pytest.approx(1.15)
    assert monotonicity_penalty([torch.tensor([3.0, 2.0, 2.0, -1.0])]).item() == 0.0  # non-increasing


def test_penalty_gradients_push_down_and_reorder():
    g = torch.tensor([0.2, 0.6, 0.4], requires_grad=True)
    monotonicity_penalty([g]).backward()
    assert g.grad.tolist() == [-1.0, 1.0, 0.0]  # lifts the first, lowers the second
    g.grad = None
    sparsity_penalty([g]).backward()
    assert g.grad.tolist() == [1.0, 1.0, 1.0]


def test_monotonic_initialisation():
    assert monotonic_gamma(4).tolist() == [1.0, 0.75, 0.5, 0.25]
    model = create_model("mobilenet0.25")
    layers = prioritized_bns(model)
    init_monotonic_gamma(layers)
    names = {layer.name for layer in layers}
    # backbone, FPN and SSH batch norms are all prioritised
    assert {"body.stage1.0.1", "fpn.output1.1", "fpn.merge1.1", "ssh1.conv3X3.1", "ssh3.conv7x7_3.1"} <= names
    for layer in layers:
        n = layer.size
        assert torch.allclose(layer.gamma, 1 - torch.arange(n) / n)
    penalty = prioritization_penalty(layers, lambda_s=1e-3, lambda_m=4e-5)
    expected = 1e-3 * sum((n + 1) / 2 for n in (layer.size for layer in layers))  # sum of 1 - k/N
    assert penalty.item() == pytest.approx(expected, rel=1e-5)  # monotone: no monotonicity term


# -- channel groups ---------------------------------------------------------------------------

def test_groups_follow_adds_depthwise_and_concat():
    model = create_model("mobilenet0.25")
    groups = {g.root.name: g for g in find_channel_groups(model)}
    members = {g.root.name: {(m.name, m.dim) for m in g.members} for g in groups.values()}
    by_member = {(m.name, m.dim): g for g in groups.values() for m in g.members}
    # the FPN sums tie output2 to output3 and output1 to merge2
    assert by_member[("fpn.output2.0", "out")] is by_member[("fpn.output3.0", "out")]
    assert by_member[("fpn.output1.0", "out")] is by_member[("fpn.merge2.0", "out")]
    # a depthwise conv shares its channels with the pointwise conv before it
    assert by_member[("body.stage1.1.0", "out")] is by_member[("body.stage1.0.0", "out")]
    # the heads read the SSH concat: three groups at offsets 0, 32 and 48
    head_in = sorted((m.offset, g.size) for g in groups.values() for m in g.members
                     if (m.name, m.dim) == ("ClassHead.0.conv1x1", "in"))
    assert head_in == [(0, 32), (32, 16), (48, 16)]
    # heads' outputs and the input colours never shrink
    assert not any(("ClassHead.0.conv1x1", "out") in s for s in members.values())
    assert all(g.prioritized for g in groups.values())


def test_mobiface_residual_chain_is_one_group():
    model = create_model("mobiface", backbone_kwargs={"width_mult": 0.25})
    by_member = {(m.name, m.dim): g for g in find_channel_groups(model) for m in g.members}
    stage = model.body.stage2
    group = by_member[(f"body.stage2.0.project.0", "out")]
    for i in range(1, len(stage)):
        assert by_member[(f"body.stage2.{i}.project.0", "out")] is group  # x + F(x) all the way


def test_keep_count_and_concat_selection():
    assert [keep_count(10, p) for p in (1.0, 0.75, 0.5, 0.7)] == [10, 8, 5, 7]
    assert keep_count(1, 0.5) == 1
    with pytest.raises(ValueError):
        keep_count(4, 0.0)
    sizes = [8, 4, 4]
    assert kept_selection([[0, 8]], sizes, 1.0) is None
    assert kept_selection([[0, 8]], sizes, 0.5) == 4
    assert kept_selection([[-1, 3], [0, 8]], sizes, 0.5) == 7  # fixed part + prefix
    union = kept_selection([[0, 8], [1, 4], [2, 4]], sizes, 0.5)
    assert union.tolist() == [0, 1, 2, 3, 8, 9, 12, 13]


# -- pruning ----------------------------------------------------------------------------------

def test_pruning_zero_scale_channels_leaves_outputs_unchanged(pruned):
    model, x, before, report = pruned
    assert_same(before, outputs(model, x), atol=1e-5)
    assert report.params_after < 0.75 * report.params_before
    assert model.fpn.output1[0].out_channels == 48 and model.ssh1.conv3X3[0].out_channels == 24
    assert model.ClassHead[0].conv1x1.in_channels == 24 + 12 + 12
    assert model.body.stage1[0][0].in_channels == 3 and model.ClassHead[0].conv1x1.out_channels == 4


def test_pruning_keeps_residual_models_exact():
    torch.manual_seed(1)
    model = randomize_bn(create_model("mobiface", backbone_kwargs={"width_mult": 0.25})).eval()
    init_monotonic_gamma(prioritized_bns(model))
    zero_tail(model, 0.5)
    x = torch.randn(1, 3, 64, 64)
    before = outputs(model, x)
    prune_by_threshold(model)
    assert_same(before, outputs(model, x), atol=1e-5)
    assert model.body.stage3[1].project[0].out_channels == model.body.stage3[0].project[0].out_channels


def test_pruning_keeps_min_channels():
    model = create_model("mobilenet0.25")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.zero_()
    prune_by_threshold(model, min_channels=2)
    assert model.fpn.merge1[0].out_channels == 2 and model.body.stage3[1][3].out_channels == 2


def test_pruned_checkpoint_rebuilds_without_flags(pruned, tmp_path):
    model, x, _, _ = pruned
    assert model.config.channels["fpn.output1.0"] == [48, 48]  # backbone output pruned too
    save_model(model, tmp_path / "pruned.pth")
    loaded = load_model(tmp_path / "pruned.pth")
    assert_same(outputs(model, x), outputs(loaded, x))
    with pytest.raises(CheckpointError, match="adaptive"):
        load_model(tmp_path / "pruned.pth", width=0.5)
    with pytest.raises(ValueError, match="adaptive"):
        create_model("mobilenet0.25", width=0.5)


# -- width switching --------------------------------------------------------------------------

def test_adaptive_at_full_width_equals_pruned(pruned, adaptive):
    model, x, _, _ = pruned
    assert isinstance(adaptive, AdaptiveRetinaFace) and adaptive.widths == (1.0, 0.75, 0.5)
    assert_same(outputs(model, x), outputs(adaptive.set_width(1.0), x))


def test_lower_width_slices_weights(adaptive):
    x = torch.randn(1, 3, 64, 64)
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, out.shape[1]))
             for name, m in adaptive.named_modules() if isinstance(m, SlimConv2d)]
    try:
        full = outputs(adaptive.set_width(1.0), x)
        half = outputs(adaptive.set_width(0.5), x)
    finally:
        adaptive.set_width(1.0)
        for h in hooks:
            h.remove()
    assert seen["fpn.output1.0"] == 24 and seen["ssh1.conv3X3.0"] == 12 and seen["body.stage1.0.0"] == 3
    assert seen["ClassHead.0.conv1x1"] == 4  # heads keep their outputs
    assert [t.shape for t in half] == [t.shape for t in full]
    assert not torch.allclose(half[0], full[0])


def test_flops_at_half_width_at_most_35_percent(adaptive):
    flops = {}
    for w in (1.0, 0.75, 0.5):
        flops[w] = count_flops(adaptive.set_width(w), 160, 160)
    adaptive.set_width(1.0)
    assert flops[0.5] <= 0.35 * flops[1.0]
    assert flops[0.5] < flops[0.75] < flops[1.0]


def test_adaptive_checkpoint_round_trip(adaptive, tmp_path):
    path = tmp_path / "adaptive.pth"
    save_model(adaptive, path)
    x = torch.randn(1, 3, 48, 80)
    for w in (1.0, 0.75, 0.5):
        loaded = load_model(path, width=w)
        assert isinstance(loaded, AdaptiveRetinaFace) and loaded.width == w
        assert_same(outputs(adaptive.set_width(w), x), outputs(loaded, x))
    adaptive.set_width(1.0)
    data = torch.load(path, weights_only=True)
    assert data["config"]["adaptive"]["widths"] == [1.0, 0.75, 0.5]


def test_materialized_width_is_a_plain_model_with_the_same_outputs(adaptive, tmp_path):
    x = torch.randn(1, 3, 64, 64)
    plain = materialize_width(adaptive, 0.5).eval()
    assert type(plain) is RetinaFace and adaptive.width == 1.0
    assert sum(p.numel() for p in plain.parameters()) == active_parameters(adaptive.set_width(0.5))
    assert_same(outputs(adaptive, x), outputs(plain, x))
    adaptive.set_width(1.0)
    save_model(plain, tmp_path / "half.pth")  # a pruned checkpoint: loads with no flags
    assert_same(outputs(plain, x), outputs(load_model(tmp_path / "half.pth"), x))


def test_training_at_low_width_updates_only_kept_weights_and_refreshes_cache(pruned):
    model = make_adaptive(pruned[0]).eval()
    x = torch.randn(1, 3, 64, 64)
    set_width(model, 0.5)
    cached = outputs(model, x)
    loc, conf, landms = model(x)
    (loc.sum() + conf.sum() + landms.sum()).backward()
    grad = model.fpn.merge1[0].weight.grad
    n = model.fpn.merge1[0].out_channels
    assert grad[:math.ceil(n / 2)].abs().sum() > 0 and grad[math.ceil(n / 2):].abs().sum() == 0
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.9)  # an optimizer step changes the weights in place
    assert not torch.allclose(outputs(model, x)[0], cached[0])  # stale slices are not reused
    with pytest.raises(ValueError):
        set_width(create_model("mobilenet0.25"), 0.5)


# -- end to end on the synthetic data ---------------------------------------------------------

def _load_tool(name):
    """The command behind ``tools/<name>.py`` (a shim onto ``retinaface.cli.<name>``)."""
    import importlib

    return importlib.import_module(f"retinaface.cli.{name}")


@pytest.fixture(scope="module")
def prioritized_run(tmp_path_factory, tiny_synthetic):
    """tools/prioritize.py on a tiny synthetic set: 64 train / 48 val images of 160x160, 24 epochs of
    pre-training and 6 of multi-width fine-tuning at 128 px (about 40 s on 2 idle cores)."""
    import json

    root = tiny_synthetic
    out = tmp_path_factory.mktemp("prioritize")
    code = _load_tool("prioritize").main([
        "--data", str(root), "--output", str(out), "--pretrain-epochs", "24", "--finetune-epochs", "6",
        "--optimizer", "adamw", "--lr", "3e-3", "--finetune-lr", "1e-3", "--batch-size", "16",
        "--image-size", "128", "--workers", "0", "--device", "cpu", "--flops-size", "160", "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    return root, out, summary


def test_prioritize_cli_writes_one_checkpoint_for_all_widths(prioritized_run):
    _, out, summary = prioritized_run
    assert [r["width"] for r in summary["widths"]] == [1.0, 0.75, 0.5]
    kept, before = map(sum, zip(*summary["prune"]["groups"].values()))
    assert kept < before  # the monotone initialisation leaves the last ~10 % below 0.1
    flops = [r["gflops"] for r in summary["widths"]]
    assert flops[2] <= 0.35 * flops[0]
    for w in (1.0, 0.5):
        model = load_model(out / "adaptive.pth", width=w)
        assert isinstance(model, AdaptiveRetinaFace) and model.width == w


def test_ap_does_not_rise_as_width_falls(prioritized_run):
    from retinaface.evaluation.predict import evaluate_model

    root, _, summary = prioritized_run
    ap = {r["width"]: r["ap"] for r in summary["widths"]}
    # medium and hard hold every val face; the easy subset (faces >= 50 px) of 48 small images is
    # too small to order widths reliably, so it is not asserted on. 1.0 and 0.75 are not ordered
    # either: on this tiny set 0.75 scores above 1.0 (medium 0.834 vs 0.790 with torch 2.14, the
    # same figures before and after the package's re-layering), so only the clear drop at half
    # width is asserted.
    for setting in ("medium", "hard"):
        assert ap[0.5][setting] <= ap[0.75][setting] + 0.03, (setting, ap)
        assert ap[0.5][setting] <= ap[1.0][setting] - 0.1, (setting, ap)
    torch.manual_seed(0)
    untrained = evaluate_model(create_model("mobilenet0.25").eval(), root, workers=0, progress=False).as_dict()
    for setting in ("medium", "hard"):
        assert ap[0.5][setting] >= max(0.15, 5 * untrained[setting]), (setting, ap[0.5], untrained)


def test_detect_and_benchmark_clis_at_half_width(prioritized_run, tmp_path, capsys):
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    root, out, _ = prioritized_run
    image = sorted((root / "val" / "images").rglob("*.jpg"))[0]
    command = [sys.executable, str(ROOT / "tools" / "detect.py"), "--weights", str(out / "adaptive.pth"),
               "--width", "0.5", str(image), "--output", str(tmp_path / "det")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "det" / "detections.jsonl").read_text().splitlines()[0])["frame"] == 0
    code = _load_tool("benchmark").main(["--widths", "1.0", "0.5", "--weights", str(out / "adaptive.pth"),
                                         "--data", str(root), "--size", "160", "160", "--repeats", "1",
                                         "--no-detect"])
    table = capsys.readouterr().out
    assert code == 0
    assert "adaptive @1 |" in table and "adaptive @0.5 |" in table and "AP hard" in table


def test_cached_slices_refresh_after_a_step_of_an_optimizer_writing_through_data(pruned):
    # AdamP, SGDP and AdaBound (--optimizer adamp ...) update ``p.data`` in place, which leaves the
    # parameter's version counter alone: the cache must still notice the step
    from retinaface.engine.optim import build_optimizer

    model = make_adaptive(pruned[0]).eval().set_width(0.5)
    x = torch.randn(1, 3, 64, 64)
    outputs(model, x)  # fills the cache at width 0.5
    optimizer = build_optimizer("adamp", model, lr=0.1)
    loc, conf, landms = model(x)
    (loc.sum() + conf.sum() + landms.sum()).backward()
    optimizer.step()
    fresh = make_adaptive(pruned[0]).eval()
    fresh.load_state_dict(model.state_dict())
    assert_same(outputs(model, x), outputs(fresh.set_width(0.5), x), atol=1e-6)


def test_active_parameters_counts_batchnorm_act_parameters_once():
    from timm.layers import BatchNormAct2d

    from retinaface.adaptive.slim import SlimBatchNormAct2d

    layer = SlimBatchNormAct2d.from_bn(BatchNormAct2d(8, act_layer=torch.nn.PReLU), [[0, 8]])
    model = torch.nn.Sequential(layer)
    layer.set_width(1.0, [8])
    assert active_parameters(model) == sum(p.numel() for p in model.parameters())  # 8 + 8 + 1
    layer.set_width(0.5, [8])
    assert active_parameters(model) == 4 + 4 + 1


def test_prioritize_cli_reports_errors_without_a_traceback(monkeypatch, tmp_path, capsys):
    tool = _load_tool("prioritize")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = tool.main(["--device", "cuda", "--output", str(tmp_path / "run"), "--no-progress"])
    assert code == 2 and "CUDA" in capsys.readouterr().err
    # a bad pruning option is refused before the (long) pre-training starts, naming the range
    import retinaface.cli.prioritize as command
    import retinaface.engine.prioritize as stages

    monkeypatch.setattr(command, "run_prioritization", lambda cfg: pytest.fail("pre-training started"))
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--min-channels", "0", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--min-channels" in err and "[1, inf)" in err
    # the Python API gets the same check
    with pytest.raises(ValueError, match="--min-channels: 0 is outside the allowed range"):
        stages.PrioritizeConfig(min_channels=0).validate()
