"""Channel prioritisation: ordering each layer's channels by importance during training.

The batch-norm scale factors gamma measure how much each channel contributes. Prioritisation
(i) initialises them decreasing along the channel index, ``gamma_k = 1 - (k-1)/N`` for k = 1..N,
(ii) adds a sparsity penalty ``lambda_s * sum |gamma|`` pushing unneeded channels to zero and
(iii) a monotonicity penalty ``lambda_m * sum_k max(0, gamma_{k+1} - gamma_k)`` keeping the
ordering, so that the first channels of every layer are the most important ones. Pruning by a
global threshold then removes mostly trailing channels, and the first ``ceil(p * N)`` channels form
a good sub-network at any utilisation level p.

The prioritised layers are the batch norms of the prioritised channel groups
(:mod:`retinaface.adaptive.groups`): backbone, FPN and SSH alike. Coupled batch norms (the two sides
of a residual add) get the same initial ranking, since their channels are kept or removed together.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from .groups import ChannelGroup, find_channel_groups

DEFAULT_LAMBDA_S = 1e-3
DEFAULT_LAMBDA_M = 4e-5


@dataclasses.dataclass
class PrioritizedBN:
    """One prioritised batch norm and where its group's channels sit in it."""

    name: str
    module: nn.Module
    offset: int
    size: int
    gid: int

    @property
    def gamma(self) -> Tensor:
        """The scale factors of the group's channels, in priority order (a view, differentiable)."""
        return self.module.weight[self.offset:self.offset + self.size]


def prioritized_bns(model: nn.Module, groups: Optional[Sequence[ChannelGroup]] = None) -> List[PrioritizedBN]:
    """The batch norms whose scale factors are initialised and penalised."""
    groups = groups if groups is not None else find_channel_groups(model)
    modules = dict(model.named_modules())
    out = []
    for group in groups:
        if group.prioritized:
            out += [PrioritizedBN(m.name, modules[m.name], m.offset, group.size, group.gid)
                    for m in group.bn_members]
    return out


def monotonic_gamma(size: int) -> Tensor:
    """``1 - (k-1)/N`` for k = 1..N: 1, 1 - 1/N, ..., 1/N."""
    return 1.0 - torch.arange(size, dtype=torch.float32) / size


@torch.no_grad()
def init_monotonic_gamma(layers: Sequence[PrioritizedBN]) -> None:
    """Set every prioritised batch norm's scales to the decreasing ramp of :func:`monotonic_gamma`."""
    for layer in layers:
        layer.gamma.copy_(monotonic_gamma(layer.size).to(layer.gamma))


def sparsity_penalty(gammas: Sequence[Tensor]) -> Tensor:
    """``sum |gamma|`` over all given scale vectors (multiply by lambda_s)."""
    return torch.stack([g.abs().sum() for g in gammas]).sum()


def monotonicity_penalty(gammas: Sequence[Tensor]) -> Tensor:
    """``sum_k max(0, gamma_{k+1} - gamma_k)`` over all given scale vectors (multiply by lambda_m):
    zero for a non-increasing sequence, the total of the rises otherwise."""
    return torch.stack([torch.relu(g[1:] - g[:-1]).sum() for g in gammas]).sum()


def prioritization_penalty(layers: Sequence[PrioritizedBN], lambda_s: float = DEFAULT_LAMBDA_S,
                           lambda_m: float = DEFAULT_LAMBDA_M) -> Tensor:
    """``lambda_s * sparsity + lambda_m * monotonicity`` over the prioritised batch norms."""
    gammas = [layer.gamma for layer in layers]
    return lambda_s * sparsity_penalty(gammas) + lambda_m * monotonicity_penalty(gammas)


def monotonicity_violations(layers: Sequence[PrioritizedBN]) -> float:
    """The fraction of adjacent pairs with gamma_{k+1} > gamma_k (a progress statistic)."""
    rises = total = 0
    with torch.no_grad():
        for layer in layers:
            g = layer.gamma
            rises += int((g[1:] > g[:-1]).sum())
            total += max(g.numel() - 1, 0)
    return rises / max(total, 1)


def fraction_below(layers: Sequence[PrioritizedBN], threshold: float) -> float:
    """The fraction of prioritised scale factors with |gamma| below ``threshold``."""
    with torch.no_grad():
        below = sum(int((layer.gamma.abs() < threshold).sum()) for layer in layers)
        total = sum(layer.size for layer in layers)
    return below / max(total, 1)


def freeze_batchnorm(model: nn.Module) -> None:
    """Multi-width fine-tuning's frozen batch norms: every batch norm to eval mode (running statistics used, not updated) with scales and shifts
    excluded from the gradient."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
