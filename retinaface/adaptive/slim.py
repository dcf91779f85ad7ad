"""Width switching: one network that runs at any utilisation level p by slicing its weights.

At level p every prioritised channel group of N channels keeps its first ``ceil(p * N)`` channels
(the most important ones after prioritisation). The switchable layers compute with the kept part of
their weights, so a lower width really does less work:

* :class:`SlimConv2d` -- ``weight[out_kept][:, in_kept]``; a depthwise conv slices its channels and
  its groups together. A dimension that is one group takes a prefix (``narrow``, a view); one that
  concatenates several groups (a head reading the SSH concat of the 3x3, 5x5 and 7x7 branches) keeps
  the union of each branch's first channels with ``index_select``.
* :class:`SlimBatchNorm2d` (and :class:`SlimBatchNormAct2d` for timm) -- the kept scales, shifts and
  running statistics; at width 1 it is the plain batch norm.

Sliced weights are computed once per width and cached while gradients are off (inference); in
training they are sliced on every forward so gradients reach the shared full-size weights. At width
1.0 nothing is sliced and the outputs are exactly those of the plain (pruned) network.

:class:`AdaptiveRetinaFace` is a RetinaFace with ``set_width(p)``; :func:`make_adaptive` converts a
(pruned) plain RetinaFace into one, storing the slicing description in ``config.adaptive`` so that
``create_model(config)`` and ``load_model(path, width=p)`` rebuild it from a checkpoint.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from ..deploy.batch_norm import is_plain_batch_norm
from ..models import RetinaFace, _build_retinaface, _create_body
from ..models.wrappers import unwrap_model
from .groups import find_channel_groups, is_depthwise, layer_segments
from .prune import apply_channels, record_channels

DEFAULT_WIDTHS: Tuple[float, ...] = (1.0, 0.75, 0.5)
ADAPTIVE_FORMAT = 1

# a kept-channel selection: None = all, int k = the first k, tensor = these indices (sorted)
Selection = Union[None, int, Tensor]

# optimizer steps taken in this process. Some optimizers (AdamP, SGDP, AdaBound) write through
# ``p.data``, which leaves the parameter's version counter alone, so the weight cache also checks this.
_optimizer_steps = 0


def _count_optimizer_step(optimizer, args, kwargs) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)


def keep_count(size: int, width: float) -> int:
    """How many of a group's ``size`` channels width ``width`` keeps: ``ceil(width * size)``, at least 1."""
    if not 0.0 < width <= 1.0:
        raise ValueError(f"width must be in (0, 1], got {width}")
    return max(1, math.ceil(width * size - 1e-9))  # 1e-9: 0.7 * 10 is 7.000000000000001


def kept_selection(segments: Sequence[Sequence[int]], group_sizes: Sequence[int], width: float) -> Selection:
    """The channels a dimension made of ``segments`` ([[group id, count], ...]; id -1 never shrinks)
    keeps at ``width``."""
    pieces: List[Tuple[int, int]] = []  # (start, kept) per segment
    position = 0
    for gid, count in segments:
        kept = count if gid < 0 else keep_count(group_sizes[gid], width)
        pieces.append((position, kept))
        position += count
    if all(kept == count for (_, kept), (_, count) in zip(pieces, segments)):
        return None
    if all(kept == count for (_, kept), (_, count) in zip(pieces[:-1], segments[:-1])):
        return pieces[-1][0] + pieces[-1][1]  # only the last segment shrinks: a prefix
    return torch.cat([torch.arange(start, start + kept) for start, kept in pieces])


def _take(tensor: Optional[Tensor], dim: int, selection: Selection) -> Optional[Tensor]:
    if tensor is None or selection is None:
        return tensor
    if isinstance(selection, int):
        return tensor.narrow(dim, 0, selection)
    return tensor.index_select(dim, selection.to(tensor.device))


def selection_size(selection: Selection, full: int) -> int:
    if selection is None:
        return full
    return selection if isinstance(selection, int) else int(selection.numel())


class _Switchable:
    """Shared state of the switchable layers: segments, the current selections and a weight cache."""

    out_segments: Optional[List[List[int]]]
    in_segments: Optional[List[List[int]]]

    def _init_switch(self, out_segments, in_segments=None) -> None:
        self.out_segments = [list(s) for s in out_segments] if out_segments else None
        self.in_segments = [list(s) for s in in_segments] if in_segments else None
        self.out_sel: Selection = None
        self.in_sel: Selection = None
        self.width = 1.0
        self._cache: Dict[Any, Tuple[Tuple[Tuple[int, int, int], ...], Tuple[Optional[Tensor], ...]]] = {}

    def set_width(self, width: float, group_sizes: Sequence[int]) -> None:
        self.width = float(width)
        self.out_sel = kept_selection(self.out_segments, group_sizes, width) if self.out_segments else None
        self.in_sel = kept_selection(self.in_segments, group_sizes, width) if self.in_segments else None

    def _cached(self, tensors: Sequence[Optional[Tensor]], make) -> Tuple[Optional[Tensor], ...]:
        """``make()`` (the sliced tensors), cached per width while no gradient is recorded; entries
        are refreshed when a weight changes in place (its version counter) or an optimizer steps."""
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
            return make()
        key = (self.width, torch.is_inference_mode_enabled())
        try:
            # data_ptr: moving the model to another device or dtype swaps a parameter's storage
            versions = tuple((0, 0, 0) if t is None else (id(t), t._version, t.data_ptr()) for t in tensors)
            versions += ((_optimizer_steps, 0, 0),)
        except RuntimeError:  # inference tensors have no version counter: do not cache
            return make()
        hit = self._cache.get(key)
        if hit is not None and hit[0] == versions:
            return hit[1]
        made = tuple(None if t is None else t.contiguous() for t in make())
        self._cache[key] = (versions, made)
        return made


class SlimConv2d(_Switchable, nn.Conv2d):
    """A Conv2d computing with the kept slice of its weight at the current width."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, out_segments=None, in_segments=None) -> "SlimConv2d":
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta")
        new.weight = conv.weight  # share the parameters: conversion copies nothing
        if conv.bias is not None:
            new.bias = conv.bias
        new.depthwise = is_depthwise(conv)
        new._init_switch(out_segments, None if new.depthwise else in_segments)
        new.train(conv.training)
        return new

    def _sliced(self) -> Tuple[Tensor, Optional[Tensor]]:
        weight = _take(self.weight, 0, self.out_sel)
        if not self.depthwise:
            weight = _take(weight, 1, self.in_sel)
        return weight, _take(self.bias, 0, self.out_sel)

    def forward(self, x: Tensor) -> Tensor:
        if self.out_sel is None and self.in_sel is None:
            return super().forward(x)
        weight, bias = self._cached((self.weight, self.bias), self._sliced)
        groups = weight.shape[0] if self.depthwise else self.groups
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)


class SlimBatchNorm2d(_Switchable, nn.BatchNorm2d):
    """A BatchNorm2d normalizing the kept channels with their own scales and statistics.

    Running statistics are shared by all widths (fine-tuning keeps batch norms frozen). In training
    mode at a lower width they are updated through views when the kept channels are a prefix.
    """

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d, out_segments) -> "SlimBatchNorm2d":
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, device="meta")
        new._share(bn)
        new._init_switch(out_segments)
        new.train(bn.training)
        return new

    def _share(self, bn: nn.Module) -> None:
        if bn.affine:
            self.weight, self.bias = bn.weight, bn.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(self, name, getattr(bn, name))

    def _normalize(self, x: Tensor) -> Tensor:
        if self.out_sel is None:
            return super().forward(x)
        use_batch = self.training or self.running_mean is None
        factor = 0.0
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        weight, bias = self._cached((self.weight, self.bias), lambda: (_take(self.weight, 0, self.out_sel),
                                                                       _take(self.bias, 0, self.out_sel)))
        # prefix selections are views, so a training-mode update reaches the full-size buffers
        mean = _take(self.running_mean, 0, self.out_sel)
        var = _take(self.running_var, 0, self.out_sel)
        return F.batch_norm(x, mean, var, weight, bias, use_batch, factor, self.eps)

    def forward(self, x: Tensor) -> Tensor:
        return self._normalize(x)


class SlimBatchNormAct2d(SlimBatchNorm2d):
    """timm's BatchNormAct2d (batch norm, dropout, activation in one module), width-switchable."""

    @classmethod
    def from_bn(cls, bn: nn.Module, out_segments) -> "SlimBatchNormAct2d":
        new = super().from_bn(bn, out_segments)
        new.drop, new.act = bn.drop, bn.act
        return new

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(self._normalize(x)))


def switchable_layers(model: nn.Module) -> List[_Switchable]:
    return [m for m in model.modules() if isinstance(m, _Switchable)]


def convert_to_switchable(model: nn.Module, layers: Dict[str, Dict[str, List[List[int]]]]) -> None:
    """Replace, in place, the modules named in ``layers`` (``config.adaptive["layers"]``) by their
    switchable versions, sharing parameters and buffers."""
    modules = dict(model.named_modules())
    for name, dims in layers.items():
        module = modules.get(name)
        if module is None:
            raise ValueError(f"adaptive layer {name!r} does not exist in this architecture")
        if isinstance(module, nn.Conv2d):
            new = SlimConv2d.from_conv(module, dims.get("out"), dims.get("in"))
        elif is_plain_batch_norm(module):
            new = SlimBatchNorm2d.from_bn(module, dims.get("out"))
        elif type(module).__name__ == "BatchNormAct2d":
            new = SlimBatchNormAct2d.from_bn(module, dims.get("out"))
        else:
            raise ValueError(f"cannot make {type(module).__name__} {name} width-switchable")
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


class AdaptiveRetinaFace(RetinaFace):
    """A (pruned) RetinaFace whose prioritised channels can be switched off from the end.

    Built by :func:`retinaface.build.create_model` from a config with ``adaptive`` set; call
    :meth:`set_width` to choose the utilisation level (1.0 by default).
    """

    def __init__(self, body: nn.Module, config, fpn: Optional[nn.Module] = None) -> None:
        super().__init__(body, config, fpn)
        spec = config.adaptive
        if not spec or int(spec.get("format", 0)) != ADAPTIVE_FORMAT:
            raise ValueError("config.adaptive is missing or of an unknown format")
        if config.channels:
            apply_channels(self, config.channels)
        convert_to_switchable(self, spec["layers"])
        self.group_sizes: List[int] = [int(n) for n in spec["group_sizes"]]
        self.widths: Tuple[float, ...] = tuple(float(w) for w in spec["widths"])
        self.width = 1.0
        self.set_width(1.0)

    def set_width(self, width: float) -> "AdaptiveRetinaFace":
        """Run at utilisation level ``width`` (any value in (0, 1]; trained for ``self.widths``)."""
        switch_width(self, width, self.group_sizes)
        self.width = float(width)
        return self


def set_width(model: nn.Module, width: float) -> nn.Module:
    """``model.set_width(width)`` for an adaptive model (any network of this toolkit with a
    ``set_width`` method: detector, embedder, landmark network; DDP/compile wrappers are looked
    through); a plain model accepts only 1.0."""
    inner = unwrap_model(model)
    if callable(getattr(inner, "set_width", None)):
        inner.set_width(width)
    elif float(width) != 1.0:
        raise ValueError(f"width {width} needs an adaptive (channel-prioritised) model; this one "
                         f"runs at width 1.0 only")
    return model


def switch_spec(model: nn.Module, widths: Sequence[float] = DEFAULT_WIDTHS) -> Dict[str, Any]:
    """The plain-data slicing description of ``model``'s prioritised channel groups:
    ``{"widths": trained levels (descending), "group_sizes": [...], "layers": {module: segments}}``
    (:func:`~retinaface.adaptive.groups.layer_segments`, groups renumbered 0..G-1), what
    :func:`convert_to_switchable` and ``set_width`` need to rebuild and run it."""
    widths = sorted({float(w) for w in widths}, reverse=True)
    for w in widths:
        keep_count(1, w)
    groups = [g for g in find_channel_groups(model) if g.prioritized]
    for i, g in enumerate(groups):
        g.gid = i
    return {"widths": widths, "group_sizes": [g.size for g in groups], "layers": layer_segments(model, groups)}


def switch_width(model: nn.Module, width: float, group_sizes: Sequence[int]) -> None:
    """Set every switchable layer of ``model`` to utilisation level ``width`` (validated, (0, 1])."""
    keep_count(1, width)
    for layer in switchable_layers(model):
        layer.set_width(width, group_sizes)


def make_adaptive(model: RetinaFace, widths: Sequence[float] = DEFAULT_WIDTHS) -> AdaptiveRetinaFace:
    """A width-switchable copy of the (pruned) plain ``model``; at width 1.0 it computes exactly
    what ``model`` does. The slicing description goes into ``config.adaptive``."""
    record_channels(model)
    spec = {"format": ADAPTIVE_FORMAT, **switch_spec(model, widths)}
    config = dataclasses.replace(model.config, adaptive=spec)
    device = next(model.parameters()).device
    body, config = _create_body(config)
    adaptive = AdaptiveRetinaFace(body, config)
    adaptive.load_state_dict(model.state_dict())
    return adaptive.to(device).train(model.training)


def active_parameters(model: nn.Module) -> int:
    """Parameters used at the current width (the sliced parts of switchable layers, all others)."""
    total = 0
    for module in model.modules():
        if isinstance(module, SlimConv2d):
            out_n = selection_size(module.out_sel, module.out_channels)
            in_n = 1 if module.depthwise else selection_size(module.in_sel, module.in_channels) // module.groups
            total += out_n * in_n * math.prod(module.kernel_size) + (out_n if module.bias is not None else 0)
        elif isinstance(module, SlimBatchNorm2d):
            n = selection_size(module.out_sel, module.num_features)
            total += 2 * n if module.affine else 0  # its children (timm's act, drop) are counted as modules
        else:
            total += sum(p.numel() for p in module.parameters(recurse=False))
    return total


@torch.no_grad()
def sliced_state(model: nn.Module, width: float,
                 channels: Optional[Dict[str, List[int]]] = None) -> Tuple[Dict[str, Tensor], Dict[str, List[int]]]:
    """``(state dict, shapes)`` of the plain network ``model`` (an adaptive one with ``set_width``
    and ``width``) computes with at ``width``: every switchable layer's kept weights and statistics,
    and ``channels`` (the pruned shapes, :func:`~retinaface.adaptive.prune.layer_shapes`) updated
    with the sliced layers' shapes, for :func:`~retinaface.adaptive.prune.apply_channels` on a fresh
    build of the same architecture."""
    was = model.width
    model.set_width(width)
    try:
        state = dict(model.state_dict())
        channels = dict(channels or {})
        for name, module in model.named_modules():
            prefix = f"{name}." if name else ""
            if isinstance(module, SlimConv2d):
                weight, bias = module._sliced()
                state[prefix + "weight"] = weight.clone()
                if bias is not None:
                    state[prefix + "bias"] = bias.clone()
                out_n = weight.shape[0]
                in_n = out_n if module.depthwise else weight.shape[1] * module.groups
                channels[name] = [in_n, out_n]
            elif isinstance(module, SlimBatchNorm2d):
                for key in ("weight", "bias", "running_mean", "running_var"):
                    tensor = getattr(module, key)
                    if tensor is not None:
                        state[prefix + key] = _take(tensor, 0, module.out_sel).clone()
                channels[name] = [selection_size(module.out_sel, module.num_features)]
    finally:
        model.set_width(was)
    return state, channels


@torch.no_grad()
def materialize_width(model: AdaptiveRetinaFace, width: float) -> RetinaFace:
    """A plain (pruned) RetinaFace holding only the weights ``model`` uses at ``width``: same
    outputs, no switching machinery, so it can be fused (``fuse()``) or exported like any model."""
    state, channels = sliced_state(model, width, model.config.channels)
    config = dataclasses.replace(model.config, adaptive=None, channels=channels)
    plain = _build_retinaface(config)
    apply_channels(plain, channels)
    plain.load_state_dict(state)
    device = next(model.parameters()).device
    return plain.to(device).train(model.training)
