"""Channel-prioritised embedding networks as models: pruning, the width-switchable
:class:`AdaptiveEmbedder`, and rebuilding one from a checkpoint's ``adaptive`` entry.

The network half of :mod:`retinaface.recognition.prioritize` (which trains them). It sits below
:mod:`retinaface.recognition.checkpoint` so that loading an embedder checkpoint does not need the
training experiment, and the experiment can use the trainer without an import cycle.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch
from torch import nn

from ..adaptive.groups import ChannelGroup, find_channel_groups, is_batchnorm, is_depthwise, layer_segments, trace_graph
from ..adaptive.prune import DEFAULT_THRESHOLD, apply_channels, channel_importance, layer_shapes
from ..adaptive.slim import DEFAULT_WIDTHS, convert_to_switchable, keep_count, switchable_layers
from .models import create_embedder

ADAPTIVE_EMBEDDER_FORMAT = 1


def _input_size(model: nn.Module) -> int:
    size = getattr(getattr(model, "config", None), "input_size", (112, 112))
    return int(size[0])


def embedder_groups(model: nn.Module) -> List[ChannelGroup]:
    """The channel groups of an embedding network, traced at its own input size."""
    return find_channel_groups(model, trace_graph(model, image_size=_input_size(model)))


@dataclasses.dataclass
class EmbedderPruneReport:
    groups: Dict[str, List[int]]  # group root -> [kept, before]
    params_before: int
    params_after: int
    threshold: float

    def summary(self) -> str:
        kept = sum(k for k, _ in self.groups.values())
        before = sum(b for _, b in self.groups.values())
        return (f"pruned at |gamma| < {self.threshold:g}: {kept}/{before} prioritised channels kept in "
                f"{len(self.groups)} groups; params {self.params_before / 1e6:.3f}M -> {self.params_after / 1e6:.3f}M")


@torch.no_grad()
def prune_embedder(model: nn.Module, threshold: float = DEFAULT_THRESHOLD,
                   min_channels: int = 1) -> Tuple[Dict[str, List[int]], EmbedderPruneReport]:
    """Remove, in place, every prioritised channel whose |gamma| is below ``threshold`` in all its
    batch norms (each group keeps at least ``min_channels``, its most important ones). Returns the
    pruned shapes (``{layer: [in, out]}`` / ``{bn: [n]}`` relative to a fresh build of the same
    config, for :func:`retinaface.adaptive.prune.apply_channels`) and a report."""
    import torch_pruning as tp

    before = sum(p.numel() for p in model.parameters())
    graph = trace_graph(model, image_size=_input_size(model))
    groups = find_channel_groups(model, graph)
    modules = dict(model.named_modules())
    report: Dict[str, List[int]] = {}
    plans = []
    for group in groups:
        if not group.prioritized:
            continue
        importance = channel_importance(model, group)
        drop = (importance < threshold).nonzero().flatten()
        wanted = min(group.size, max(group.size - drop.numel(), min_channels))
        if wanted > group.size - drop.numel():
            order = importance[drop].argsort(descending=True, stable=True)
            drop = drop[order[wanted - (group.size - drop.numel()):]]
        report[group.root.name] = [group.size - drop.numel(), group.size]
        if drop.numel():
            plans.append((modules[group.root.name], sorted(int(i) for i in drop)))
    for root, idxs in plans:  # groups are disjoint: each plan's indices stay valid
        handler = (tp.prune_depthwise_conv_out_channels if is_depthwise(root) else
                   tp.prune_batchnorm_out_channels if is_batchnorm(root) else tp.prune_conv_out_channels)
        graph.get_pruning_group(root, handler, idxs).prune()
    reference = create_embedder(model.config.to_dict())
    shapes = layer_shapes(model, reference)
    return shapes, EmbedderPruneReport(report, before, sum(p.numel() for p in model.parameters()), threshold)


class AdaptiveEmbedder(nn.Module):
    """A (pruned) embedding network whose prioritised channels can be switched off from the end.

    ``forward`` is the network's; :meth:`set_width` picks the utilisation level p (each group of N
    channels keeps its first ``ceil(p N)``). ``config`` is the network's full-size
    :class:`~retinaface.recognition.models.EmbedderConfig`; ``adaptive_spec`` (plain data: pruned
    ``channels``, switchable ``layers``, ``group_sizes``, trained ``widths``) rebuilds it with
    :func:`build_adaptive_embedder`. State-dict keys are the network's with a ``net.`` prefix.
    """

    def __init__(self, net: nn.Module, spec: Mapping[str, Any]) -> None:
        super().__init__()
        if int(spec.get("format", 0)) != ADAPTIVE_EMBEDDER_FORMAT:
            raise ValueError("adaptive embedder description of an unknown format")
        self.net = net
        self.config = net.config
        self.embedding_size = getattr(net, "embedding_size", self.config.embedding_size)
        self.adaptive_spec = {"format": ADAPTIVE_EMBEDDER_FORMAT, "channels": dict(spec.get("channels") or {}),
                              "layers": spec["layers"], "group_sizes": [int(n) for n in spec["group_sizes"]],
                              "widths": [float(w) for w in spec["widths"]]}
        self.group_sizes = self.adaptive_spec["group_sizes"]
        self.widths = tuple(self.adaptive_spec["widths"])
        self.width = 1.0

    def set_width(self, width: float) -> "AdaptiveEmbedder":
        keep_count(1, width)  # validates (0, 1]
        for layer in switchable_layers(self.net):
            layer.set_width(width, self.group_sizes)
        self.width = float(width)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_adaptive_embedder(config: Mapping[str, Any], spec: Mapping[str, Any]) -> AdaptiveEmbedder:
    """The (untrained) adaptive embedder a checkpoint's ``config`` and ``adaptive`` entries describe."""
    net = create_embedder(dict(config))
    if spec.get("channels"):
        apply_channels(net, spec["channels"])
    convert_to_switchable(net, spec["layers"])
    return AdaptiveEmbedder(net, spec).set_width(1.0)


def make_adaptive_embedder(pruned: nn.Module, channels: Mapping[str, List[int]],
                           widths: Sequence[float] = DEFAULT_WIDTHS) -> AdaptiveEmbedder:
    """A width-switchable copy of the pruned network (equal outputs at width 1.0)."""
    widths = sorted({float(w) for w in widths}, reverse=True)
    for w in widths:
        keep_count(1, w)
    groups = [g for g in embedder_groups(pruned) if g.prioritized]
    for i, g in enumerate(groups):
        g.gid = i
    spec = {"format": ADAPTIVE_EMBEDDER_FORMAT, "channels": dict(channels), "widths": widths,
            "group_sizes": [g.size for g in groups], "layers": layer_segments(pruned, groups)}
    model = build_adaptive_embedder(pruned.config.to_dict(), spec)
    model.net.load_state_dict(pruned.state_dict())
    device = next(pruned.parameters()).device
    return model.to(device).train(pruned.training)
