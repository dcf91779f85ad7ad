"""Optimizers, the SAM wrapper (plain, AMP, resume) and the learning-rate schedules."""
from __future__ import annotations

import io
import math
import warnings

import pytest
import torch
from torch import nn

from retinaface.engine import (OPTIMIZERS, REFERENCE_RECIPES, SAM, build_optimizer, build_scheduler,
                               reference_recipe, sam_step)

LRS = {"sgd": 0.05, "adamw": 1e-2, "adabound": 1e-2, "adaboundw": 1e-2, "sgdp": 0.05, "adamp": 1e-2}
pytestmark = [pytest.mark.filterwarnings("ignore:This overload of add:UserWarning"),  # adabound package
              pytest.mark.usefixtures("single_thread")]


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def problem(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(16, 3, 8, 8, generator=gen), torch.randn(16, 2, generator=gen)


def mse(model, x, y):
    return nn.functional.mse_loss(model(x), y)


def weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("use_sam", [False, True])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_lowers_the_loss(name, use_sam):
    model, (x, y) = tiny_net(), problem()
    optimizer = build_optimizer(name, model, lr=LRS[name])
    if use_sam:
        optimizer = SAM(optimizer, rho=0.05)
    with torch.no_grad():
        initial = mse(model, x, y).item()
    for _ in range(20):
        if use_sam:
            sam_step(model, optimizer, lambda: mse(model, x, y))
        else:
            optimizer.zero_grad()
            mse(model, x, y).backward()
            optimizer.step()
    with torch.no_grad():
        final = mse(model, x, y).item()
    assert final < 0.7 * initial, (initial, final)


def test_unknown_optimizer_names_the_choices():
    with pytest.raises(ValueError, match="sgd, adamw, adabound, adaboundw, sgdp, adamp"):
        build_optimizer("lbfgs", tiny_net(), lr=0.1)


def test_optimizer_settings_and_param_groups():
    model = tiny_net()
    sgd = build_optimizer("sgd", model, lr=1e-3)
    assert len(sgd.param_groups) == 1  # the reference decays everything
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (1e-3, 0.9, 5e-4)
    split = build_optimizer("sgd", model, lr=1e-3, no_decay_bn_bias=True)
    decay, no_decay = split.param_groups
    assert all(p.ndim > 1 for p in decay["params"]) and decay["weight_decay"] == 5e-4
    assert all(p.ndim <= 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    adaboundw = build_optimizer("adaboundw", model, lr=1e-3)
    assert adaboundw.param_groups[0]["weight_decouple"] and adaboundw.param_groups[0]["final_lr"] == 0.1
    assert build_optimizer("adabound", model, lr=1e-3).param_groups[0]["final_lr"] == 0.1


def test_adaboundw_decays_the_weights_not_the_gradient():
    p = nn.Parameter(torch.ones(3))
    opt = build_optimizer("adaboundw", [p], lr=0.1, weight_decay=0.5)
    p.grad = torch.zeros(3)  # no gradient: only the decoupled decay moves the weights
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), 1 - 0.1 * 0.5))


# --------------------------------------------------------------------------------------------- SAM

def grads_at(model, x, y):
    model.zero_grad()
    mse(model, x, y).backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_first_step_moves_by_rho_and_second_step_restores_before_the_base_step(adaptive):
    model, (x, y) = tiny_net(), problem()
    model.eval()  # no BN batch statistics: the loss is a plain function of the weights
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05, adaptive=adaptive)
    w0 = weights(model)
    g1 = torch.cat([g.flatten() for g in grads_at(model, x, y)])
    sam.first_step(zero_grad=True)
    moved = weights(model) - w0
    if adaptive:  # ASAM: ||e / |w| || = rho, e along w^2 g
        nonzero = w0 != 0  # zero weights (BN shifts) do not move at all
        assert (moved[~nonzero] == 0).all()
        assert (moved[nonzero] / w0[nonzero].abs()).norm().item() == pytest.approx(0.05, rel=1e-5)
        assert torch.allclose(moved, 0.05 * w0 ** 2 * g1 / (w0.abs() * g1).norm(), atol=1e-7)
    else:
        assert moved.norm().item() == pytest.approx(0.05, rel=1e-5)
        assert torch.allclose(moved, 0.05 * g1 / g1.norm(), atol=1e-7)
    assert all(p.grad is None for p in model.parameters())
    g2 = torch.cat([g.flatten() for g in grads_at(model, x, y)])  # at the perturbed weights
    sam.second_step()
    assert not sam.perturbed
    assert torch.allclose(weights(model), w0 - 0.1 * g2, atol=1e-7)


class HandWrittenSAM:
    """The SAM this toolkit wrote by hand until it moved to ``pytorch_optimizer``'s (its perturbation
    arithmetic, kept here as the reference the library must reproduce)."""

    def __init__(self, base: torch.optim.Optimizer, rho: float, adaptive: bool, eps: float = 1e-12) -> None:
        self.base, self.rho, self.adaptive, self.eps = base, rho, adaptive, eps

    @torch.no_grad()
    def step(self, closure) -> None:
        params = [p for g in self.base.param_groups for p in g["params"] if p.grad is not None]
        norms = [((p.abs() * p.grad) if self.adaptive else p.grad).norm(2) for p in params]
        norm = torch.linalg.vector_norm(torch.stack(norms))
        scale = self.rho / (norm + self.eps)
        backup = {}
        for p in params:
            step = p.grad * scale
            if self.adaptive:
                step = step * p * p
            backup[p] = p.detach().clone()
            p.add_(step)
        self.base.zero_grad()
        with torch.enable_grad():
            closure()
        for p, saved in backup.items():
            p.copy_(saved)
        self.base.step()


def compared(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for name, p in model.named_parameters() if name != "0.bias"])


@pytest.mark.parametrize("base", ["sgd", "adamw"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_from_pytorch_optimizer_matches_the_hand_written_one(base, adaptive):
    # float32 arithmetic in another order (the library sums the squared norms per tensor): the
    # weights after 8 steps agree to a few float32 rounding steps per update, not bit for bit. Left
    # out: the first conv's bias, which feeds a batch norm, so its exact gradient is 0 and what it
    # gets is rounding noise, which AdamW's g / sqrt(v) turns into steps of +-lr either way
    x, y = problem()
    results = []
    for make in (lambda opt: SAM(opt, rho=0.05, adaptive=adaptive),
                 lambda opt: HandWrittenSAM(opt, rho=0.05, adaptive=adaptive)):
        model = tiny_net()
        optimizer = make(build_optimizer(base, model, lr=LRS[base], momentum=0.9, weight_decay=5e-4))
        for _ in range(8):
            model.zero_grad()
            mse(model, x, y).backward()
            optimizer.step(lambda: mse(model, x, y).backward())
        results.append(compared(model))
    library, hand_written = results
    assert not torch.equal(library, compared(tiny_net()))  # the steps moved the weights
    torch.testing.assert_close(library, hand_written, rtol=1e-5, atol=1e-6)


def test_sam_closure_step_equals_first_and_second_step():
    x, y = problem()
    results = []
    for use_closure in (False, True):
        model = tiny_net()
        sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
        for _ in range(3):
            sam.zero_grad()
            mse(model, x, y).backward()
            if use_closure:
                sam.step(lambda: mse(model, x, y).backward())
            else:
                sam.first_step(zero_grad=True)
                mse(model, x, y).backward()
                sam.second_step(zero_grad=True)
        results.append(weights(model))
    assert torch.equal(*results)


@pytest.mark.parametrize("base", ["sgd", "adamw", "adaboundw"])
def test_sam_state_dict_round_trip_resumes_identically(base):
    x, y = problem()

    def run(model, sam, steps):
        for _ in range(steps):
            sam_step(model, sam, lambda: mse(model, x, y))

    model = tiny_net()
    sam = SAM(build_optimizer(base, model, lr=1e-2), rho=0.1)
    run(model, sam, 3)
    buffer = io.BytesIO()  # through torch.save, as a checkpoint would (state_dict holds live tensors)
    torch.save({"model": model.state_dict(), "optimizer": sam.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer)
    saved_model, saved_opt = checkpoint["model"], checkpoint["optimizer"]
    assert saved_opt["rho"] == 0.1 and "state" in saved_opt["base_optimizer"]
    run(model, sam, 3)
    straight = weights(model)

    resumed_model = tiny_net(seed=5)
    resumed = SAM(build_optimizer(base, resumed_model, lr=1e-2), rho=0.05)
    resumed_model.load_state_dict(saved_model)
    resumed.load_state_dict(saved_opt)
    assert resumed.rho == 0.1 and resumed.param_groups is resumed.base_optimizer.param_groups
    run(resumed_model, resumed, 3)
    assert torch.equal(weights(resumed_model), straight)


def test_sam_loads_a_plain_base_state_dict():
    model = tiny_net()
    sgd = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    sam.load_state_dict(sgd.state_dict())
    assert sam.param_groups[0]["lr"] == 0.3 == sam.base_optimizer.param_groups[0]["lr"]


def test_scheduler_drives_sam_without_order_warning():
    model, (x, y) = tiny_net(), problem()
    sam = SAM(torch.optim.SGD(model.parameters(), lr=1.0))
    scheduler = build_scheduler(sam, "step", epochs=4, steps_per_epoch=2, decay_epochs=(1,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            sam_step(model, sam, lambda: mse(model, x, y))
            scheduler.step()
    assert sam.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_sam_step_with_grad_scaler_equals_unscaled_and_skips_overflow():
    x, y = problem()
    out = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)):
        model = tiny_net()
        sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
        for _ in range(3):
            sam_step(model, sam, lambda: mse(model, x, y), scaler)
        out.append(weights(model))
    # power-of-two scaling is exact: the scaled run takes the same steps
    assert torch.allclose(out[0], out[1], rtol=1e-5, atol=1e-7)

    model = tiny_net()
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    before = weights(model)
    sam_step(model, sam, lambda: mse(model, x, y) * float("inf"), scaler)
    assert torch.equal(weights(model), before) and not sam.perturbed
    assert scaler.get_scale() == 2.0 ** 11


def test_sam_step_skips_the_step_when_only_the_first_pass_overflows():
    # an unperturbed update would be plain SGD, not SAM: the step is skipped and the scale lowered
    x, y = problem()
    model = tiny_net()
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    before, passes = weights(model), []

    def closure():
        passes.append(len(passes))
        loss = mse(model, x, y)
        return loss * float("inf") if len(passes) == 1 else loss

    sam_step(model, sam, closure, scaler)
    assert torch.equal(weights(model), before) and not sam.perturbed
    assert passes == [0]  # the second forward/backward is not run for nothing
    assert scaler.get_scale() == 2.0 ** 11
    assert all(p.grad is None for p in model.parameters())


def test_sam_step_second_pass_leaves_batchnorm_running_stats_alone():
    model, (x, y) = tiny_net(), problem()
    reference = tiny_net()
    reference(x)  # one training-mode forward: the running stats one real step should leave
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1))
    sam_step(model, sam, lambda: mse(model, x, y))
    assert torch.allclose(model[1].running_mean, reference[1].running_mean)
    assert torch.allclose(model[1].running_var, reference[1].running_var)
    assert model[1].momentum == 0.1


def test_sam_rejects_bad_use():
    model = tiny_net()
    with pytest.raises(ValueError):
        SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=-1)
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1))
    x, y = problem()
    mse(model, x, y).backward()
    sam.first_step()
    with pytest.raises(RuntimeError):
        sam.first_step()
    with pytest.raises(RuntimeError):
        sam.state_dict()
    sam.restore()


# ---------------------------------------------------------------------------------------- schedules

def lrs_over(scheduler, optimizer, iters):
    seen = []
    for _ in range(iters):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def sgd(lr=1.0):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def test_step_schedule_decays_at_epoch_boundaries():
    opt = sgd()
    lrs = lrs_over(build_scheduler(opt, "step", epochs=10, steps_per_epoch=5, decay_epochs=(6, 8)), opt, 50)
    assert lrs[29] == 1.0 and lrs[30] == pytest.approx(0.1) and lrs[39] == pytest.approx(0.1)
    assert lrs[40] == pytest.approx(0.01) and lrs[49] == pytest.approx(0.01)


def test_step_schedule_respects_min_lr():
    opt = sgd()
    lrs = lrs_over(build_scheduler(opt, "step", epochs=3, steps_per_epoch=1, decay_epochs=(1, 2),
                                   min_lr=0.05), opt, 3)
    assert lrs == pytest.approx([1.0, 0.1, 0.05])


def test_cosine_schedule_with_warmup():
    opt = sgd(lr=2.0)
    sched = build_scheduler(opt, "cosine", epochs=5, steps_per_epoch=4, warmup_epochs=1, min_lr=0.2)
    lrs = lrs_over(sched, opt, 21)
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])  # linear ramp, full lr at its last step
    assert lrs[4] == pytest.approx(2.0)                      # cosine starts after the warm-up
    assert lrs[12] == pytest.approx(1.1)                     # halfway: (2.0 + 0.2) / 2
    assert lrs[20] == pytest.approx(0.2)                     # the end of training
    mid = 4 + 5
    assert lrs[mid] == pytest.approx(0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi * 5 / 16)))


def test_schedule_applies_per_group_base_lrs():
    opt = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": 1.0},
                           {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.1}], lr=1.0)
    sched = build_scheduler(opt, "cosine", epochs=1, steps_per_epoch=2, min_lr=0.01)
    for _ in range(2):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.01])


def test_unknown_schedule_and_reference_recipes():
    with pytest.raises(ValueError, match="step, cosine"):
        build_scheduler(sgd(), "poly", epochs=1, steps_per_epoch=1)
    mnet = reference_recipe("mobilenet0.25")
    assert (mnet["lr"], mnet["batch_size"], mnet["image_size"], mnet["epochs"], mnet["decay_epochs"]) == \
        (1e-3, 32, 640, 250, (190, 220))
    r50 = reference_recipe("resnet50")
    assert (r50["batch_size"], r50["image_size"], r50["epochs"], r50["decay_epochs"]) == (24, 840, 100, (70, 90))
    assert reference_recipe("res2net101") == r50
    reference_recipe("mobilenet0.25")["lr"] = 1.0  # a copy: the table stays intact
    assert REFERENCE_RECIPES["mobilenet0.25"]["lr"] == 1e-3
