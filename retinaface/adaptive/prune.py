"""Threshold pruning into a physically smaller network, and rebuilding pruned shapes from a config.

:func:`prune_by_threshold` removes every channel of a prioritised group whose batch-norm scales are
all below a global threshold (|gamma| < 0.1 by default). torch-pruning does the bookkeeping: the
same channels leave the conv that makes them, its batch norm, the layers that read them (through
residual adds, depthwise convolutions, the FPN's sums and the SSH concatenation into the heads), and
the remaining channels keep their order, so the priority ranking survives pruning.

A channel whose batch norm has gamma = beta = 0 outputs exactly zero, so removing it leaves the
network's outputs unchanged; with beta != 0 it outputs a constant that pruning drops (fine-tuning
absorbs it, as in network slimming).

:func:`layer_shapes` records the pruned shapes as plain data (``ModelConfig.channels``) and
:func:`apply_channels` re-creates them on a freshly built full-size model, which is how
:func:`retinaface.build.create_model` and ``load_model`` rebuild a pruned checkpoint with no flags.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional

import torch
from torch import nn

from ..models import _build_retinaface
from .groups import ChannelGroup, find_channel_groups, is_batchnorm, is_depthwise, trace_graph

DEFAULT_THRESHOLD = 0.1


@dataclasses.dataclass
class PruneReport:
    """What pruning removed: per group root ``(kept, before)`` and the parameter counts."""

    groups: Dict[str, List[int]]
    params_before: int
    params_after: int
    threshold: float

    @property
    def channels_before(self) -> int:
        return sum(before for _, before in self.groups.values())

    @property
    def channels_after(self) -> int:
        return sum(kept for kept, _ in self.groups.values())

    def summary(self) -> str:
        return (f"pruned at |gamma| < {self.threshold:g}: {self.channels_after}/{self.channels_before} "
                f"prioritised channels kept in {len(self.groups)} groups; params "
                f"{self.params_before / 1e6:.3f}M -> {self.params_after / 1e6:.3f}M")


def channel_importance(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """Per channel of ``group``, the largest |gamma| over its batch norms (a channel is removable
    only when no coupled batch norm still uses it)."""
    modules = dict(model.named_modules())
    scales = [modules[m.name].weight.detach().abs()[m.offset:m.offset + group.size] for m in group.bn_members]
    return torch.stack(scales).amax(dim=0)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def prune_by_threshold(model: nn.Module, threshold: float = DEFAULT_THRESHOLD, min_channels: int = 1,
                       groups: Optional[List[ChannelGroup]] = None) -> PruneReport:
    """Remove, in place, every prioritised channel of a RetinaFace whose |gamma| is below
    ``threshold`` in all its batch norms (:func:`prune_channels`); the model's ``config.channels`` is
    updated so that a saved checkpoint rebuilds the pruned shapes."""
    report = prune_channels(model, threshold, min_channels, groups)
    record_channels(model)
    return report


@torch.no_grad()
def prune_channels(model: nn.Module, threshold: float = DEFAULT_THRESHOLD, min_channels: int = 1,
                   groups: Optional[List[ChannelGroup]] = None) -> PruneReport:
    """Remove, in place, every prioritised channel whose |gamma| is below ``threshold`` in all its
    batch norms; each group keeps at least ``min_channels`` (its most important ones). Any network
    torch-pruning can trace (at :func:`~retinaface.adaptive.groups.example_size`); the caller
    records the new shapes (:func:`layer_shapes` against a fresh build)."""
    import torch_pruning as tp

    if min_channels < 1:
        raise ValueError("min_channels must be at least 1")
    params_before = _count(model)
    graph = trace_graph(model)
    groups = groups if groups is not None else find_channel_groups(model, graph)
    modules = dict(model.named_modules())
    plans = []
    report: Dict[str, List[int]] = {}
    for group in groups:
        if not group.prioritized:
            continue
        importance = channel_importance(model, group)
        drop = (importance < threshold).nonzero().flatten()
        kept = group.size - drop.numel()
        wanted = min(group.size, max(kept, min_channels))
        if wanted > kept:
            # keep the most important of the dropped channels
            order = importance[drop].argsort(descending=True, stable=True)
            drop = drop[order[wanted - kept:]]
        report[group.root.name] = [group.size - drop.numel(), group.size]
        if drop.numel():
            root = modules[group.root.name]
            plans.append((root, sorted(int(i) for i in drop)))
    # groups are disjoint, so each plan's root-local indices stay valid while the others are pruned
    for root, idxs in plans:
        handler = (tp.prune_depthwise_conv_out_channels if is_depthwise(root) else
                   tp.prune_batchnorm_out_channels if is_batchnorm(root) else
                   tp.prune_linear_out_channels if isinstance(root, nn.Linear) else tp.prune_conv_out_channels)
        graph.get_pruning_group(root, handler, idxs).prune()
    return PruneReport(report, params_before, _count(model), threshold)


def layer_shapes(model: nn.Module, reference: nn.Module) -> Dict[str, List[int]]:
    """``{name: [in, out]}`` for convs and ``{name: [n]}`` for batch norms whose shape differs from
    ``reference`` (the same architecture at full size)."""
    ref = dict(reference.named_modules())
    shapes: Dict[str, List[int]] = {}
    for name, module in model.named_modules():
        other = ref.get(name)
        if isinstance(module, nn.Conv2d):
            if (module.in_channels, module.out_channels) != (other.in_channels, other.out_channels):
                shapes[name] = [module.in_channels, module.out_channels]
        elif is_batchnorm(module) and module.num_features != other.num_features:
            shapes[name] = [module.num_features]
    return shapes


def record_channels(model: nn.Module) -> None:
    """Store the pruned shapes in ``model.config.channels`` (relative to a fresh full-size build)."""
    config = getattr(model, "config", None)
    if config is None:
        return
    reference = _build_retinaface(dataclasses.replace(config, channels=None, adaptive=None))
    model.config = dataclasses.replace(config, channels=layer_shapes(model, reference) or None)


def _shrink(tensor: torch.Tensor, shape: List[int]) -> torch.Tensor:
    # the leading part of the full-size tensor: finite, deterministic values until weights load
    if any(n > o for n, o in zip(shape, tensor.shape)):
        raise ValueError(f"cannot grow a {tuple(tensor.shape)} tensor to {tuple(shape)}")
    return tensor[tuple(slice(0, n) for n in shape)].clone()


@torch.no_grad()
def apply_channels(model: nn.Module, channels: Mapping[str, List[int]]) -> None:
    """Resize, in place, the convs and batch norms named in ``channels`` (see :func:`layer_shapes`).

    The modules keep their classes; their tensors are replaced by smaller ones and their channel
    attributes updated, as torch-pruning does. A depthwise conv stays depthwise.
    """
    modules = dict(model.named_modules())
    for name, shape in channels.items():
        module = modules.get(name)
        if module is None:
            raise ValueError(f"pruned layer {name!r} does not exist in this architecture")
        if isinstance(module, nn.Conv2d):
            in_ch, out_ch = (int(v) for v in shape)
            groups = in_ch if is_depthwise(module) else module.groups
            if is_depthwise(module) and in_ch != out_ch:
                raise ValueError(f"depthwise conv {name} needs equal in/out channels, got {shape}")
            shape = [out_ch, in_ch // groups, *module.weight.shape[2:]]
            module.weight = nn.Parameter(_shrink(module.weight, shape), requires_grad=module.weight.requires_grad)
            if module.bias is not None:
                module.bias = nn.Parameter(_shrink(module.bias, [out_ch]), requires_grad=module.bias.requires_grad)
            module.in_channels, module.out_channels, module.groups = in_ch, out_ch, groups
        elif is_batchnorm(module):
            (n,) = (int(v) for v in shape)
            if module.affine:
                for key in ("weight", "bias"):
                    old = getattr(module, key)
                    setattr(module, key, nn.Parameter(_shrink(old, [n]), requires_grad=old.requires_grad))
            if module.track_running_stats:
                module.running_mean = _shrink(module.running_mean, [n])
                module.running_var = _shrink(module.running_var, [n])
            module.num_features = n
        else:
            raise ValueError(f"cannot resize {type(module).__name__} {name}")
