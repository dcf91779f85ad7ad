"""Margin losses against their formulas computed by hand on small tensors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retinaface.recognition.losses import (ArcFaceLoss, CosFaceLoss, SoftmaxCenterLoss, build_recognition_loss,
                                           list_recognition_losses)


def hand_cosines(x: torch.Tensor, w: torch.Tensor) -> np.ndarray:
    x, w = x.detach().double().numpy(), w.detach().double().numpy()
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    return x @ w.T


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_prob[np.arange(len(labels)), labels].mean())


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(6, 4, requires_grad=True), torch.tensor([0, 1, 2, 2, 4, 1])


def test_arcface_matches_its_formula_and_trains_the_class_weights(batch):
    x, y = batch
    loss_fn = ArcFaceLoss(5, 4, scale=8.0, margin=0.4)
    cos = hand_cosines(x, loss_fn.weight)
    theta = np.arccos(np.clip(cos, -1, 1))
    expected = 8.0 * cos
    rows = np.arange(6)
    # every target angle here stays below pi - m: the plain formula applies
    assert (theta[rows, y.numpy()] < math.pi - 0.4).all()
    expected[rows, y.numpy()] = 8.0 * np.cos(theta[rows, y.numpy()] + 0.4)
    assert np.allclose(loss_fn.logits(x, y).detach().numpy(), expected, atol=1e-5)
    assert np.allclose(loss_fn.logits(x).detach().numpy(), 8.0 * cos, atol=1e-5)  # no labels: no margin
    loss = loss_fn(x, y)
    assert abs(loss.item() - cross_entropy(expected, y.numpy())) < 1e-5
    loss.backward()
    assert loss_fn.weight.grad is not None and loss_fn.weight.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_arcface_stays_monotone_past_pi():
    loss_fn = ArcFaceLoss(2, 2, scale=1.0, margin=0.5)
    angles = torch.linspace(0.0, math.pi, 200)
    target = loss_fn.target_cosine(torch.cos(angles))
    assert (target[1:] <= target[:-1] + 1e-7).all()  # never increases with the angle
    beyond = angles > math.pi - 0.5
    expected = torch.cos(angles[beyond]) - 0.5 * math.sin(0.5)
    assert torch.allclose(target[beyond], expected, atol=1e-6)
    # exactly aligned embedding and weight (cos = 1): a finite gradient, no acos blow-up
    loss_fn.weight.data = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[2.0, 0.0]], requires_grad=True)
    loss_fn(x, torch.tensor([0])).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(loss_fn.weight.grad).all()


def test_cosface_matches_its_formula(batch):
    x, y = batch
    loss_fn = CosFaceLoss(5, 4, scale=10.0, margin=0.35)
    cos = hand_cosines(x, loss_fn.weight)
    expected = 10.0 * cos
    expected[np.arange(6), y.numpy()] = 10.0 * (cos[np.arange(6), y.numpy()] - 0.35)
    loss = loss_fn(x, y)
    assert abs(loss.item() - cross_entropy(expected, y.numpy())) < 1e-5
    loss.backward()
    assert loss_fn.weight.grad.abs().sum() > 0


def test_same_losses_as_pytorch_metric_learning(batch):
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    x, y = batch
    for ours, theirs in [(ArcFaceLoss(5, 4, scale=16.0, margin=0.3), pml.ArcFaceLoss(5, 4, margin=math.degrees(0.3),
                                                                                       scale=16.0)),
                         (CosFaceLoss(5, 4, scale=16.0, margin=0.2), pml.CosFaceLoss(5, 4, margin=0.2, scale=16.0))]:
        theirs.W.data = ours.weight.detach().t().clone()  # pml stores (D, C)
        assert abs(ours(x, y).item() - theirs(x, y).item()) < 1e-4


def test_softmax_center_loss_matches_its_formula_and_the_papers_center_update(batch):
    x, y = batch
    loss_fn = SoftmaxCenterLoss(5, 4, lambda_c=0.1, alpha_c=0.5)
    with torch.no_grad():
        loss_fn.centers.normal_()
        loss_fn.bias.normal_()
    logits = x.detach().numpy() @ loss_fn.weight.detach().numpy().T + loss_fn.bias.detach().numpy()
    centers = loss_fn.centers.detach().numpy().copy()
    diff = x.detach().numpy() - centers[y.numpy()]
    expected = cross_entropy(logits, y.numpy()) + 0.1 * 0.5 * (diff ** 2).sum(axis=1).mean()
    loss = loss_fn(x, y)
    assert abs(loss.item() - expected) < 1e-5
    loss.backward()
    assert loss_fn.weight.grad.abs().sum() > 0 and loss_fn.bias.grad.abs().sum() > 0
    # the center gradient is Wen et al.'s delta c_j = sum_{y_i = j} (c_j - x_i) / (1 + n_j)
    delta = np.zeros_like(centers)
    for j in range(5):
        members = y.numpy() == j
        delta[j] = (centers[j] - x.detach().numpy()[members]).sum(axis=0) / (1 + members.sum())
    assert np.allclose(loss_fn.centers.grad.numpy(), delta, atol=1e-5)
    # so SGD at alpha_c on the centers' group is the paper's c_j <- c_j - alpha_c delta c_j
    groups = loss_fn.param_groups(lr=0.1)
    optimizer = torch.optim.SGD(groups, lr=0.1)
    optimizer.step()
    assert np.allclose(loss_fn.centers.detach().numpy(), centers - 0.5 * delta, atol=1e-5)
    # the embeddings get the center term's ordinary gradient on top of the softmax's
    x2 = x.detach().clone().requires_grad_(True)
    SoftmaxCenterLoss(5, 4, lambda_c=0.0).center_loss(x2, y).backward()
    assert x2.grad.abs().sum() > 0


def test_center_gradient_scales_with_the_loss_like_any_other():
    torch.manual_seed(1)
    x, y = torch.randn(8, 3), torch.randint(0, 4, (8,))
    grads = []
    for factor in (1.0, 1024.0):  # an AMP loss scaler multiplies the loss, then divides the gradients
        loss_fn = SoftmaxCenterLoss(4, 3, lambda_c=0.01)
        (factor * loss_fn(x, y)).backward()
        grads.append(loss_fn.centers.grad / factor)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_build_and_bad_inputs():
    assert list_recognition_losses() == ["arcface", "cosface", "softmax-center"]
    loss_fn = build_recognition_loss("cosface", 3, 4, margin=0.2)
    assert isinstance(loss_fn, CosFaceLoss) and loss_fn.margin == 0.2
    with pytest.raises(ValueError, match="unknown recognition loss"):
        build_recognition_loss("triplet", 3, 4)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        loss_fn(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="embeddings must be"):
        loss_fn(torch.randn(2, 5), torch.tensor([0, 1]))


@pytest.mark.parametrize("name", ["arcface", "cosface", "softmax-center"])
def test_losses_stay_float32_under_autocast(name):
    torch.manual_seed(2)
    loss_fn = build_recognition_loss(name, 7, 8)
    x, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 3, 6])
    reference = loss_fn(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss_fn(x, y)  # bf16 matmuls would move s = 64 logits by ~0.25
    assert mixed.dtype == torch.float32 and abs(mixed.item() - reference.item()) < 1e-4
