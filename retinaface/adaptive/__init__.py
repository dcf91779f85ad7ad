"""Channel-prioritised adaptive RetinaFace: one network that runs at 100/75/50 % of its channels.

The method (Tang et al., "Efficient and Adaptive ConvNets ... A Channel Prioritized Approach"):

1. pre-train with batch-norm scales initialised decreasing along the channel index and with
   sparsity and monotonicity penalties (:mod:`.prioritize`);
2. prune every channel whose |gamma| is below a global threshold into a physically smaller network,
   torch-pruning tracking which channels are tied together (:mod:`.groups`, :mod:`.prune`);
3. fine-tune with batch norms frozen and the loss summed over utilisation levels p, where level p
   keeps the first ``ceil(p * N)`` channels of each prioritised layer (:mod:`.slim`; the training
   hooks are in :mod:`retinaface.engine.adaptive_hooks`).

The result is one checkpoint: ``load_model(path, width=0.5)`` runs it at half width with sliced
(not masked) weights. ``retinaface prioritize`` (:mod:`retinaface.engine.prioritize`) runs the
three stages.
"""
from .groups import ChannelGroup, find_channel_groups, layer_segments
from .prioritize import (DEFAULT_LAMBDA_M, DEFAULT_LAMBDA_S, PrioritizedBN, init_monotonic_gamma,
                         monotonic_gamma, monotonicity_penalty, prioritization_penalty, prioritized_bns,
                         sparsity_penalty)
from .prune import DEFAULT_THRESHOLD, PruneReport, apply_channels, layer_shapes, prune_by_threshold
from .slim import (DEFAULT_WIDTHS, AdaptiveRetinaFace, SlimBatchNorm2d, SlimConv2d, keep_count,
                   make_adaptive, materialize_width, set_width)

__all__ = ["AdaptiveRetinaFace", "ChannelGroup", "DEFAULT_LAMBDA_M", "DEFAULT_LAMBDA_S", "DEFAULT_THRESHOLD",
           "DEFAULT_WIDTHS", "PruneReport", "PrioritizedBN", "SlimBatchNorm2d", "SlimConv2d", "apply_channels",
           "find_channel_groups", "init_monotonic_gamma", "keep_count", "layer_segments", "layer_shapes",
           "make_adaptive", "materialize_width", "monotonic_gamma", "monotonicity_penalty",
           "prioritization_penalty",
           "prioritized_bns", "prune_by_threshold", "set_width", "sparsity_penalty"]
