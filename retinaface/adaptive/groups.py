"""Channel groups: which convolution and batch-norm channels are tied together, found with torch-pruning.

A *channel group* is a set of channels that must be kept or removed together: a conv's output
channels, the BN after it, the next layer's input channels, every layer joined to them by a residual
add (MobiFace's shortcuts, the FPN's top-down sums) and the slices of a concatenation (SSH) they
feed. torch-pruning's dependency graph finds them by tracing the model; this module turns its groups
into a plain description used by prioritisation (which BN scales belong together), threshold pruning
and width switching:

* :class:`ChannelGroup` -- ``size`` channels, the ``members`` (module name, dimension, offset) where
  they appear, in the same order in every member (the order channel prioritisation ranks them in).
* :func:`layer_segments` -- for each module dimension, the groups it is a concatenation of, as
  ``[[group id, count], ...]`` (group id ``-1``: channels that never shrink, e.g. the 3 input colours
  or the heads' outputs). This is what a width-switchable model stores in its config.

A group is *prioritised* when it contains at least one batch norm (its scales are the channel
importances) and every module it touches can be sliced (Conv2d, BatchNorm2d, timm's
BatchNormAct2d); other groups keep all their channels.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from ..deploy.batch_norm import is_plain_batch_norm


@dataclasses.dataclass
class Member:
    """Channels ``offset .. offset+size-1`` of dimension ``dim`` ("in" or "out") of module ``name``."""

    name: str
    dim: str
    offset: int


@dataclasses.dataclass
class ChannelGroup:
    """``size`` coupled channels; ``members`` lists every place they occur (same order everywhere)."""

    gid: int
    size: int
    members: List[Member]
    prioritized: bool
    reason: str = ""  # why a group is not prioritised

    @property
    def bn_members(self) -> List[Member]:
        """The batch norms whose scale factors rank this group's channels."""
        return [m for m in self.members if m.dim == "bn"]

    @property
    def root(self) -> Member:
        return self.members[0]


def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def is_depthwise(module: nn.Module) -> bool:
    return (isinstance(module, nn.Conv2d) and module.groups > 1
            and module.groups == module.in_channels == module.out_channels)


def fixed_output_layers(model: nn.Module) -> List[nn.Module]:
    """Layers whose output channels never shrink: a RetinaFace's class/box/landmark head convs."""
    fixed = []
    for attr in ("ClassHead", "BboxHead", "LandmarkHead"):
        for head in getattr(model, attr, []):
            fixed.extend(m for m in head.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    return fixed


def _sliceable(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        # plain and depthwise convs only; other grouped convs would need per-group slicing
        return module.padding_mode == "zeros" and (module.groups == 1 or is_depthwise(module))
    if is_plain_batch_norm(module):
        return True
    return type(module).__name__ == "BatchNormAct2d" and hasattr(module, "act")


def _contiguous(idxs: List[int]) -> Optional[int]:
    """The start of ``idxs`` if it is ``start, start+1, ...``, else None."""
    if not idxs:
        return None
    start = idxs[0]
    return start if idxs == list(range(start, start + len(idxs))) else None


DEFAULT_TRACE_SIZE = 64


def example_size(model: nn.Module) -> Tuple[int, int]:
    """The input ``(height, width)`` to trace ``model`` at: its config's ``input_size`` when it has one
    (landmark networks and embedders take one size only: a PFLD's last convolution spans the whole
    map), else 64 x 64 (a detector takes any size)."""
    size = getattr(getattr(model, "config", None), "input_size", None)
    if size is None:
        return DEFAULT_TRACE_SIZE, DEFAULT_TRACE_SIZE
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def trace_graph(model: nn.Module, image_size: Optional[int] = None):
    """torch-pruning's dependency graph of ``model``, traced in eval mode (so the trace does not touch
    the batch norms' running statistics) on an ``image_size`` square input, by default
    :func:`example_size`."""
    import torch_pruning as tp

    height, width = example_size(model) if image_size is None else (image_size, image_size)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=torch.randn(1, 3, height, width, device=device), verbose=False)
    finally:
        model.train(was_training)
    return graph


def find_channel_groups(model: nn.Module, graph=None) -> List[ChannelGroup]:
    """Every coupled channel group of ``model`` (heads' outputs excluded), in module order."""
    graph = graph if graph is not None else trace_graph(model)
    names = {module: name for name, module in model.named_modules()}
    groups: List[ChannelGroup] = []
    for tp_group in graph.get_all_groups(ignored_layers=fixed_output_layers(model),
                                         root_module_types=(nn.Conv2d, nn.Linear)):
        members: List[Member] = []
        reason = ""
        size = len(tp_group[0].idxs)
        for item in tp_group:
            module = item.dep.target.module
            if not isinstance(module, nn.Module) or module not in names:
                if isinstance(module, nn.Parameter):
                    reason = "touches a bare parameter"
                continue  # torch-pruning's placeholders for add/cat/reshape
            handler = item.dep.handler
            if graph.is_out_channel_pruning_fn(handler):
                dim = "bn" if is_batchnorm(module) else "out"
            elif graph.is_in_channel_pruning_fn(handler):
                dim = "in"
            else:
                continue
            if is_depthwise(module):
                dim = "out"  # a depthwise conv's input channels are its output channels
            if not isinstance(module, (nn.Conv2d, nn.Linear)) and not is_batchnorm(module):
                if any(p.ndim for p in module.parameters(recurse=False)):
                    reason = reason or f"{type(module).__name__} {names[module]} cannot be sliced"
                continue  # parameter-free ops (activations, pooling)
            # root order: item.root_idxs[i] is the group channel held at module index item.idxs[i]
            order = sorted(zip(item.root_idxs, item.idxs))
            if [r for r, _ in order] != list(range(size)):
                reason = reason or f"{names[module]} sees only part of the group"
                continue
            offset = _contiguous([i for _, i in order])
            if offset is None:
                reason = reason or f"{names[module]} holds the group's channels out of order"
                continue
            if not _sliceable(module):
                reason = reason or f"{type(module).__name__} {names[module]} cannot be sliced"
            member = Member(names[module], dim, offset)
            if all((m.name, m.dim) != (member.name, member.dim) for m in members):
                members.append(member)
        has_bn = any(m.dim == "bn" for m in members)
        if not has_bn:
            reason = reason or "no batch norm"
        groups.append(ChannelGroup(len(groups), size, members, prioritized=has_bn and not reason,
                                   reason=reason))
    return groups


def _dim_size(module: nn.Module, dim: str) -> int:
    if is_batchnorm(module):
        return module.num_features
    if isinstance(module, nn.Conv2d):
        return module.out_channels if dim == "out" else module.in_channels
    raise TypeError(f"cannot slice {type(module).__name__}")


def layer_segments(model: nn.Module, groups: Iterable[ChannelGroup]) -> Dict[str, Dict[str, List[List[int]]]]:
    """``{module name: {"out"/"in": [[group id, count], ...]}}`` for every module dimension holding
    prioritised channels; gaps (channels of no prioritised group) get group id -1 and never shrink.
    Batch norms use the key "out"; depthwise convs have "out" only."""
    modules = dict(model.named_modules())
    placed: Dict[Tuple[str, str], List[Tuple[int, int, int]]] = {}
    for group in groups:
        if not group.prioritized:
            continue
        for member in group.members:
            dim = "out" if member.dim == "bn" else member.dim
            placed.setdefault((member.name, dim), []).append((member.offset, group.gid, group.size))
    layers: Dict[str, Dict[str, List[List[int]]]] = {}
    for (name, dim), pieces in sorted(placed.items()):
        total = _dim_size(modules[name], dim)
        segments: List[List[int]] = []
        position = 0
        for offset, gid, size in sorted(pieces):
            if offset < position:
                raise RuntimeError(f"channel groups overlap in {name} ({dim})")
            if offset > position:
                segments.append([-1, offset - position])
            segments.append([gid, size])
            position = offset + size
        if position > total:
            raise RuntimeError(f"channel groups exceed the {total} channels of {name} ({dim})")
        if position < total:
            segments.append([-1, total - position])
        layers.setdefault(name, {})[dim] = segments
    return layers
