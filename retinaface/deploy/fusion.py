"""BatchNorm folding for inference: every provable Conv2d -> BatchNorm2d pair becomes one Conv2d.

Owns :func:`fuse_conv_bn`. A pair is folded only when the forward pass itself shows that the BN
consumes the conv's output and nothing else does: each module holding a conv and a BN as direct
children is traced with :mod:`torch.fx` (its children kept opaque), and a pair qualifies when the BN
call's only input is the conv call, the conv's output has no other user, and each of the two
modules is called exactly once. This covers ``nn.Sequential`` conv/BN blocks (ours and timm's
downsample paths) as well as timm's attribute-ordered pairs (ResNet ``conv1``/``bn1``, EfficientNet
``conv_pw``/``bn1``, ...), without trusting attribute names or registration order. Modules that
cannot be traced (data-dependent control flow) are left as they are, their children still visited.

timm's ``BatchNormAct2d`` (BN, then ``drop``, then ``act`` in one module) is replaced by its dropout
and activation after folding; plain ``BatchNorm2d`` is replaced by ``nn.Identity``. The arithmetic
is :func:`torch.nn.utils.fusion.fuse_conv_bn_eval`.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch.fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .batch_norm import is_plain_batch_norm

try:  # timm is a dependency of the timm backbones only
    from timm.layers import BatchNormAct2d
except ImportError:  # pragma: no cover - timm is installed with the toolkit
    BatchNormAct2d = None


class _ChildrenAsLeaves(torch.fx.Tracer):
    """Traces one module's own forward, treating each direct child as a single opaque call."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return "." not in qualified_name or super().is_leaf_module(module, qualified_name)


def _is_foldable_bn(module: nn.Module) -> bool:
    # only classes whose forward we know: plain BN, and timm's BN -> drop -> act
    known = is_plain_batch_norm(module) or (BatchNormAct2d is not None and type(module) is BatchNormAct2d)
    return known and module.running_mean is not None and module.running_var is not None


def _has_hooks(module: nn.Module) -> bool:
    # a hook could read the conv output or alter the BN input; folding would change what it sees
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks)


def _consecutive_pairs(module: nn.Module) -> List[Tuple[str, str]]:
    """``(conv_name, bn_name)`` direct-child pairs that ``module.forward`` provably runs back to back."""
    children = dict(module.named_children())
    convs = {n for n, m in children.items() if type(m) is nn.Conv2d and not _has_hooks(m)}
    bns = {n for n, m in children.items() if _is_foldable_bn(m) and not _has_hooks(m)}
    if not convs or not bns:
        return []
    try:
        graph = _ChildrenAsLeaves().trace(module)
    except Exception:  # untraceable forward (data-dependent control flow, ...): not provable
        return []
    calls: Dict[str, List[torch.fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(str(node.target), []).append(node)
        elif node.op == "get_attr" and str(node.target).split(".")[0] in convs | bns:
            # something reads a conv/BN parameter directly; leave those modules alone
            name = str(node.target).split(".")[0]
            convs.discard(name)
            bns.discard(name)
    pairs = []
    for bn_name in sorted(bns):
        bn_calls = calls.get(bn_name, [])
        if len(bn_calls) != 1:
            continue
        bn_node = bn_calls[0]
        if len(bn_node.args) != 1 or bn_node.kwargs:
            continue
        source = bn_node.args[0]
        if not isinstance(source, torch.fx.Node) or source.op != "call_module":
            continue
        conv_name = str(source.target)
        if conv_name not in convs or len(calls.get(conv_name, [])) != 1:
            continue
        if list(source.users) != [bn_node]:
            continue
        pairs.append((conv_name, bn_name))
    return pairs


def _bn_replacement(bn: nn.Module) -> nn.Module:
    """What is left of a BN module once its affine transform lives in the conv."""
    if BatchNormAct2d is not None and isinstance(bn, BatchNormAct2d):
        if isinstance(bn.drop, nn.Identity):
            return bn.act
        return nn.Sequential(bn.drop, bn.act)
    return nn.Identity()


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every provably consecutive Conv2d -> BatchNorm2d pair of ``model`` in place; returns it.

    The model must be in eval mode (folding uses the BN running statistics, so a fused model cannot
    be trained further). Folded BNs are replaced by ``nn.Identity`` (or, for timm's ``BatchNormAct2d``,
    by its activation), so the state dict no longer matches the unfused architecture: keep the
    original checkpoint for training and saving.
    """
    if model.training:
        raise RuntimeError("fuse_conv_bn needs a model in eval mode (call model.eval() first): "
                           "folding uses the BatchNorm running statistics")
    # a module reachable under two names could be folded twice or into two different convs
    seen: Dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        seen[id(module)] = seen.get(id(module), 0) + 1
    parents = [m for m in model.modules() if seen[id(m)] == 1]
    plan = [(parent, _consecutive_pairs(parent)) for parent in parents]
    for parent, pairs in plan:
        for conv_name, bn_name in pairs:
            conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
            if seen[id(conv)] != 1 or seen[id(bn)] != 1:
                continue
            setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(parent, bn_name, _bn_replacement(bn))
    return model


def count_batchnorm(model: nn.Module) -> int:
    """How many BatchNorm2d modules (subclasses included) ``model`` still holds."""
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


__all__ = ["count_batchnorm", "fuse_conv_bn"]
