"""Classification losses for embedding training: ArcFace, CosFace, softmax + center loss.

Each loss is an ``nn.Module`` holding its class weights ``weight (num_classes, embedding_size)``;
``forward(embeddings (B, D), labels (B,) int64) -> scalar`` (batch mean); ``logits(embeddings,
labels)`` gives the ``(B, num_classes)`` logits the cross-entropy sees (margins applied to the
target class when ``labels`` is given), for accuracy and tests.

* ArcFace (Deng et al., 2019): ``s * cos(theta_y + m)`` for the target class, ``s * cos(theta_j)``
  for the others, ``theta`` the angle between the L2-normalized embedding and class weight. Where
  ``theta_y + m > pi`` the target logit would grow again, so insightface's monotone continuation
  ``cos(theta_y) - m sin(m)`` is used there instead (default on; ``easy_margin`` applies the margin
  only where ``cos(theta_y) > 0``).
* CosFace (Wang et al., 2018): ``s * (cos(theta_y) - m)`` and ``s * cos(theta_j)``.
* Softmax + center loss (Wen et al., 2016; the channel-prioritised ConvNets report's objective):
  ``CE(W x + b, y) + lambda_c * 0.5 * mean_i ||x_i - c_{y_i}||^2``. The centers are a parameter
  whose *gradient* is the paper's update ``delta c_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)``
  (times the loss scale under AMP),
  so SGD with learning rate ``alpha_c`` on :meth:`SoftmaxCenterLoss.center_parameters` (no
  momentum, no weight decay) is exactly the paper's ``c_j <- c_j - alpha_c delta c_j``; the
  embeddings get the ordinary gradient of the center term.

Why not pytorch-metric-learning (2.9): its ArcFace / CosFace compute the same logits (checked in
the tests when it is installed) but take the ArcFace margin in degrees, store ``W`` as ``(D, C)``
and go through ``acos`` (a gradient that blows up near ``cos = +-1``); it has no softmax + center
loss of the paper's form. The three losses here are a few lines on one cosine-logits core, with one
weight layout and one ``logits`` method, and need no extra dependency.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn


def _check_inputs(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int, dim: int) -> None:
    if embeddings.ndim != 2 or embeddings.shape[1] != dim:
        raise ValueError(f"embeddings must be (B, {dim}), got {tuple(embeddings.shape)}")
    if labels.shape != embeddings.shape[:1]:
        raise ValueError(f"labels must be (B,) = ({embeddings.shape[0]},), got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {int(labels.min())} .. {int(labels.max())}")


class _CosineMarginLoss(nn.Module):
    """Shared core: normalized-cosine logits with a margin on the target class, scaled by ``s``."""

    def __init__(self, num_classes: int, embedding_size: int, scale: float, margin: float) -> None:
        super().__init__()
        if num_classes < 2 or embedding_size < 1:
            raise ValueError(f"need num_classes >= 2 and embedding_size >= 1, got {num_classes}, {embedding_size}")
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.num_classes, self.embedding_size = int(num_classes), int(embedding_size)
        self.scale, self.margin = float(scale), float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``cos(theta)`` ``(B, C)`` between normalized embeddings and class weights."""
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))

    def target_cosine(self, cos_target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, embeddings: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(B, C)`` scaled logits; the margin applies to ``labels``' entries when given."""
        if labels is not None:
            _check_inputs(embeddings, labels, self.num_classes, self.embedding_size)
        cos = self.cosine(embeddings)
        if labels is not None:
            index = labels.long().view(-1, 1)
            target = self.target_cosine(cos.gather(1, index))
            cos = cos.scatter(1, index, target)
        return self.scale * cos

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # float32 logits, autocast or not: s = 64 times a cosine loses the margin in half precision
        with torch.autocast(embeddings.device.type, enabled=False):
            return F.cross_entropy(self.logits(embeddings.float(), labels), labels.long())

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, " \
               f"scale={self.scale}, margin={self.margin}"


class ArcFaceLoss(_CosineMarginLoss):
    """Additive angular margin: target logit ``s * cos(theta + m)`` (module doc). Defaults s=64, m=0.5."""

    def __init__(self, num_classes: int, embedding_size: int, scale: float = 64.0, margin: float = 0.5,
                 easy_margin: bool = False) -> None:
        super().__init__(num_classes, embedding_size, scale, margin)
        if not 0 <= margin < math.pi / 2:
            raise ValueError(f"ArcFace margin must be in [0, pi/2) radians, got {margin}")
        self.easy_margin = bool(easy_margin)
        self._cos_m, self._sin_m = math.cos(margin), math.sin(margin)
        self._threshold = math.cos(math.pi - margin)   # theta + m = pi
        self._fallback = math.sin(math.pi - margin) * margin

    def target_cosine(self, cos_target: torch.Tensor) -> torch.Tensor:
        # cos(theta + m) = cos cos_m - sin sin_m; sin from cos (no acos: its gradient blows up at +-1)
        sin = torch.sqrt((1.0 - cos_target * cos_target).clamp_min(1e-12))
        shifted = cos_target * self._cos_m - sin * self._sin_m
        if self.easy_margin:
            return torch.where(cos_target > 0, shifted, cos_target)
        return torch.where(cos_target > self._threshold, shifted, cos_target - self._fallback)


class CosFaceLoss(_CosineMarginLoss):
    """Additive cosine margin: target logit ``s * (cos(theta) - m)``. Defaults s=64, m=0.35."""

    def __init__(self, num_classes: int, embedding_size: int, scale: float = 64.0, margin: float = 0.35) -> None:
        super().__init__(num_classes, embedding_size, scale, margin)

    def target_cosine(self, cos_target: torch.Tensor) -> torch.Tensor:
        return cos_target - self.margin


class _CenterUpdate(torch.autograd.Function):
    """Gathers ``centers[labels]``; its backward rescales each sample's center gradient by
    ``B / (lambda_c (1 + n_y))``, turning the center term's ordinary gradient
    ``lambda_c (c_j - x_i) / B`` into the paper's ``delta c_j``. It stays proportional to the
    upstream gradient, so a loss scaler (AMP) or gradient averaging (DDP) treat it like any other."""

    @staticmethod
    def forward(ctx, centers: torch.Tensor, labels: torch.Tensor, lambda_c: float) -> torch.Tensor:
        ctx.save_for_backward(labels)
        ctx.num_classes, ctx.lambda_c = centers.shape[0], lambda_c
        return centers.index_select(0, labels)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (labels,) = ctx.saved_tensors
        counts = torch.bincount(labels, minlength=ctx.num_classes).to(grad_output.dtype)
        factor = labels.numel() / (ctx.lambda_c * (1.0 + counts.index_select(0, labels)))
        grad = torch.zeros(ctx.num_classes, grad_output.shape[1], dtype=grad_output.dtype, device=grad_output.device)
        return grad.index_add_(0, labels, grad_output * factor[:, None]), None, None


class SoftmaxCenterLoss(nn.Module):
    """Softmax cross-entropy on ``W x + b`` plus ``lambda_c`` times the center loss (module doc).

    Defaults are the channel-prioritised ConvNets report's: ``lambda_c = 1e-3``, ``alpha_c = 0.5``
    (the learning rate to give :meth:`center_parameters`; see :meth:`param_groups`).
    """

    def __init__(self, num_classes: int, embedding_size: int, lambda_c: float = 1e-3, alpha_c: float = 0.5) -> None:
        super().__init__()
        if num_classes < 2 or embedding_size < 1:
            raise ValueError(f"need num_classes >= 2 and embedding_size >= 1, got {num_classes}, {embedding_size}")
        if lambda_c < 0 or alpha_c < 0:
            raise ValueError(f"lambda_c and alpha_c must be >= 0, got {lambda_c}, {alpha_c}")
        self.num_classes, self.embedding_size = int(num_classes), int(embedding_size)
        self.lambda_c, self.alpha_c = float(lambda_c), float(alpha_c)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.normal_(self.weight, std=0.01)
        self.centers = nn.Parameter(torch.zeros(num_classes, embedding_size))

    def logits(self, embeddings: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(B, C)`` softmax logits ``W x + b`` (no margin; ``labels`` is accepted for symmetry)."""
        return F.linear(embeddings, self.weight, self.bias)

    def center_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``0.5 * mean_i ||x_i - c_{y_i}||^2``. The centers' gradient is the paper's update
        assuming the term is weighted by ``lambda_c``, as :meth:`forward` does."""
        if self.lambda_c == 0:  # no center term: centers stay where they are
            centers = self.centers.detach().index_select(0, labels.long())
        else:
            centers = _CenterUpdate.apply(self.centers, labels.long(), self.lambda_c)
        return 0.5 * ((embeddings - centers) ** 2).sum(dim=1).mean()

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()
        _check_inputs(embeddings, labels, self.num_classes, self.embedding_size)
        with torch.autocast(embeddings.device.type, enabled=False):
            ce = F.cross_entropy(self.logits(embeddings), labels.long())
            return ce + self.lambda_c * self.center_loss(embeddings, labels)

    def center_parameters(self) -> List[nn.Parameter]:
        return [self.centers]

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> List[Dict]:
        """Optimizer groups: the softmax layer at ``lr``; the centers at ``alpha_c`` without weight
        decay (put them in an SGD without momentum to follow the paper exactly)."""
        return [{"params": [self.weight, self.bias], "lr": lr, "weight_decay": weight_decay},
                {"params": [self.centers], "lr": self.alpha_c, "weight_decay": 0.0, "momentum": 0.0}]

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, " \
               f"lambda_c={self.lambda_c}, alpha_c={self.alpha_c}"


_LOSSES = {"arcface": ArcFaceLoss, "cosface": CosFaceLoss, "softmax-center": SoftmaxCenterLoss}


def list_recognition_losses() -> List[str]:
    return sorted(_LOSSES)


def build_recognition_loss(name: str, num_classes: int, embedding_size: int, **kwargs) -> nn.Module:
    """``arcface`` (``scale``, ``margin``, ``easy_margin``), ``cosface`` (``scale``, ``margin``) or
    ``softmax-center`` (``lambda_c``, ``alpha_c``)."""
    if name not in _LOSSES:
        raise ValueError(f"unknown recognition loss {name!r}; choose one of {list_recognition_losses()}")
    return _LOSSES[name](num_classes, embedding_size, **kwargs)


__all__ = ["ArcFaceLoss", "CosFaceLoss", "SoftmaxCenterLoss", "build_recognition_loss", "list_recognition_losses"]
