"""Channel-prioritised landmark networks: one checkpoint that runs at 100 / 75 / 50 % width.

The generic parts live in :mod:`retinaface.adaptive` (channel groups found by torch-pruning,
threshold pruning, the switchable ``SlimConv2d`` / ``SlimBatchNorm2d``); this module applies them to
a :class:`~retinaface.landmarks.models.LandmarkRegressor` and keeps the description next to the
landmark config in the checkpoint (RetinaFace keeps it in its ``ModelConfig``, embedders in their
own checkpoint entry):

* :func:`prune_landmark_model` -- remove, in place, the channels whose batch-norm scales fell below
  the threshold after prioritised pre-training; returns the pruned shapes;
* :func:`make_adaptive_landmark_model` -- the width-switchable copy of the pruned network (same
  outputs at width 1.0, bit for bit);
* :class:`AdaptiveLandmarkRegressor` -- ``set_width(p)`` keeps the first ``ceil(p N)`` channels of
  every prioritised group; ``adaptive_spec`` (plain data) rebuilds it
  (:func:`build_landmark_network`, behind ``load_landmark_model``);
* :func:`materialize_landmark_width` -- a plain network holding only one width's weights.

What shrinks: every channel group with a batch norm whose members are all plain / depthwise
convolutions and batch norms. The regression head's linear layers, and the channels they read
through pooling (PFLD's multi-scale features, MobileNetV3's last 576-channel convolution) or that
have no batch norm to rank them (squeeze-excitation hidden units, PFLD's last 1 x 1 map), keep all
their channels, so the point count is the same at every width.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..adaptive.prune import DEFAULT_THRESHOLD, PruneReport, apply_channels, layer_shapes, prune_channels
from ..adaptive.slim import DEFAULT_WIDTHS, convert_to_switchable, sliced_state, switch_spec, switch_width
from .models import LandmarkModelConfig, LandmarkRegressor, landmark_model_from_config

ADAPTIVE_LANDMARK_FORMAT = 1


class AdaptiveLandmarkRegressor(LandmarkRegressor):
    """A (pruned) landmark network whose prioritised channels can be switched off from the end.

    Same modules and state-dict keys as the plain network (its convolutions and batch norms are
    replaced by their switchable versions in place); :meth:`set_width` picks the utilisation level
    (1.0 after construction). ``adaptive_spec``: ``{"format", "channels" (pruned shapes), "layers",
    "group_sizes", "widths"}``.
    """

    def __init__(self, body: nn.Module, config: LandmarkModelConfig, spec: Mapping[str, Any]) -> None:
        super().__init__(body, config)
        if int(spec.get("format", 0)) != ADAPTIVE_LANDMARK_FORMAT:
            raise ValueError(f"adaptive landmark description of an unknown format {spec.get('format')!r}")
        self.adaptive_spec: Dict[str, Any] = {
            "format": ADAPTIVE_LANDMARK_FORMAT, "channels": {k: [int(n) for n in v] for k, v in
                                                              dict(spec.get("channels") or {}).items()},
            "layers": spec["layers"], "group_sizes": [int(n) for n in spec["group_sizes"]],
            "widths": [float(w) for w in spec["widths"]]}
        if self.adaptive_spec["channels"]:
            apply_channels(self, self.adaptive_spec["channels"])
        convert_to_switchable(self, self.adaptive_spec["layers"])
        self.group_sizes: List[int] = self.adaptive_spec["group_sizes"]
        self.widths: Tuple[float, ...] = tuple(self.adaptive_spec["widths"])
        self.width = 1.0
        self.set_width(1.0)

    def set_width(self, width: float) -> "AdaptiveLandmarkRegressor":
        """Run at utilisation level ``width`` (any value in (0, 1]; trained for ``self.widths``)."""
        switch_width(self, width, self.group_sizes)
        self.width = float(width)
        return self


def build_landmark_network(config: Union[LandmarkModelConfig, Mapping[str, Any]],
                           adaptive: Optional[Mapping[str, Any]] = None,
                           channels: Optional[Mapping[str, List[int]]] = None) -> LandmarkRegressor:
    """The (untrained) network a checkpoint describes: its ``config``, with the pruned ``channels``
    of a materialised width, or the ``adaptive`` description of a channel-prioritised one."""
    plain = landmark_model_from_config(dict(config) if isinstance(config, Mapping) else config)
    if adaptive:
        return AdaptiveLandmarkRegressor(plain.body, plain.config, adaptive)
    if channels:
        apply_channels(plain, channels)
        plain.pruned_channels = {k: [int(n) for n in v] for k, v in channels.items()}
    return plain


def prune_landmark_model(model: LandmarkRegressor, threshold: float = DEFAULT_THRESHOLD,
                         min_channels: int = 1) -> Tuple[Dict[str, List[int]], PruneReport]:
    """Remove, in place, every prioritised channel whose |gamma| is below ``threshold`` in all its
    batch norms (each group keeps at least ``min_channels``). Returns the pruned shapes (relative to
    a fresh build of ``model.config``) and the report."""
    report = prune_channels(model, threshold, min_channels)
    shapes = layer_shapes(model, landmark_model_from_config(model.config))
    return shapes, report


def make_adaptive_landmark_model(pruned: LandmarkRegressor, channels: Mapping[str, List[int]],
                                 widths: Sequence[float] = DEFAULT_WIDTHS) -> AdaptiveLandmarkRegressor:
    """A width-switchable copy of the pruned network (``channels``: its shapes from
    :func:`prune_landmark_model`; ``{}`` for an unpruned one); equal outputs at width 1.0."""
    spec = {"format": ADAPTIVE_LANDMARK_FORMAT, "channels": dict(channels), **switch_spec(pruned, widths)}
    model = build_landmark_network(pruned.config, adaptive=spec)
    model.load_state_dict(pruned.state_dict())
    device = next(pruned.parameters()).device
    return model.to(device).train(pruned.training)


@torch.no_grad()
def materialize_landmark_width(model: AdaptiveLandmarkRegressor, width: float) -> LandmarkRegressor:
    """A plain landmark network holding only the weights ``model`` uses at ``width`` (same outputs,
    no switching machinery; ``pruned_channels`` holds its shapes, which a checkpoint keeps)."""
    state, channels = sliced_state(model, width, model.adaptive_spec["channels"])
    plain = build_landmark_network(model.config, channels=channels)
    plain.load_state_dict(state)
    for name in ("scheme", "crop_margin"):
        if hasattr(model, name):
            setattr(plain, name, getattr(model, name))
    device = next(model.parameters()).device
    return plain.to(device).train(model.training)


__all__ = ["ADAPTIVE_LANDMARK_FORMAT", "AdaptiveLandmarkRegressor", "build_landmark_network",
           "make_adaptive_landmark_model", "materialize_landmark_width", "prune_landmark_model"]
