"""Optimizers, Sharpness-Aware Minimization and learning-rate schedules for training.

This module owns how parameters are updated: which optimizer a name means (``build_optimizer``),
the SAM wrapper and the exact order of its two passes with AMP and DDP (``SAM``, ``sam_step``),
per-iteration schedules (``build_scheduler``) and the reference recipes (``REFERENCE_RECIPES``).

Optimizers come from their libraries: ``torch.optim`` (SGD, AdamW), ``adabound`` (AdaBound, L2 weight
decay added to the gradient), ``pytorch_optimizer`` (AdaBoundW: its ``AdaBound`` with
``weight_decouple=True``, decay ``p *= 1 - lr * wd`` applied to the weights, AdamW style; pass
``fixed_decay=True`` for the original AdaBoundW's ``p *= 1 - wd``) and ``adamp`` (SGDP, AdamP).

How the trainer runs one SAM iteration (``sam_step`` does exactly this)::

    optimizer.zero_grad()
    loss = forward(); scaler.scale(loss).backward()        # pass 1, DDP all-reduces as usual
    scaler.unscale_(optimizer.base_optimizer)              # true gradients for the perturbation
    if g overflowed: zero_grad(); scaler.update(); done     # no direction to perturb: skip, like GradScaler
    optimizer.first_step(zero_grad=True)                    # w += rho * g / ||g||
    loss2 = forward(); scaler.scale(loss2).backward()       # pass 2 at the perturbed weights, all-reduced
    optimizer.restore()                                     # weights back before any update
    scaler.step(optimizer); scaler.update()                 # unscales pass 2, skips on inf, base step

The two ``unscale_`` calls go to two different objects (base optimizer, then the SAM wrapper) because a
GradScaler unscales each optimizer at most once per ``update()``; ``update()`` then sees the overflow
checks of both passes. Without AMP: ``loss.backward(); first_step(zero_grad=True); loss2.backward();
second_step()``. With DDP both backward passes must all-reduce: do not run the first pass under
``no_sync()``. Every rank then perturbs along the same global gradient (its norm needs no extra
communication) and the update uses the all-reduced second-pass gradient.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import torch
from pytorch_optimizer import SAM as _LibrarySAM
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

OPTIMIZERS = ("sgd", "adamw", "adabound", "adaboundw", "sgdp", "adamp")
SCHEDULES = ("step", "cosine")

ParamsOrModel = Union[nn.Module, Iterable[Tensor], Iterable[Dict[str, Any]]]

# The reference training recipes (Pytorch_Retinaface), used by the trainer for flags left unset.
REFERENCE_RECIPES: Dict[str, Dict[str, Any]] = {
    "mobilenet0.25": dict(optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4, batch_size=32,
                          image_size=640, epochs=250, decay_epochs=(190, 220), gamma=0.1,
                          schedule="step", warmup_epochs=0),
    "resnet50": dict(optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4, batch_size=24,
                     image_size=840, epochs=100, decay_epochs=(70, 90), gamma=0.1,
                     schedule="step", warmup_epochs=0),
}


def reference_recipe(backbone: str) -> Dict[str, Any]:
    """A copy of the reference recipe for ``backbone``: MobileNet names get the mobilenet0.25 recipe,
    every other (larger) backbone the ResNet-50 one."""
    key = backbone.lower()
    if key not in REFERENCE_RECIPES:
        key = "mobilenet0.25" if key.startswith("mobilenet") else "resnet50"
    return dict(REFERENCE_RECIPES[key])


def parameter_groups(params_or_model: ParamsOrModel, weight_decay: float,
                     no_decay_bn_bias: bool = False) -> List[Dict[str, Any]]:
    """Parameter groups for an optimizer.

    All parameters are included, frozen ones too (they are skipped while they have no gradient, and
    are trained if unfrozen later), as the reference does. With ``no_decay_bn_bias`` the 0-d and 1-d
    tensors (biases, normalization scales and shifts) get weight decay 0. Ready-made groups (dicts)
    are passed through untouched.
    """
    if isinstance(params_or_model, nn.Module):
        params = list(params_or_model.parameters())
    else:
        params = list(params_or_model)
    if params and isinstance(params[0], dict):
        return [dict(group) for group in params]
    if not no_decay_bn_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(name: str, params_or_model: ParamsOrModel, lr: float, momentum: float = 0.9,
                    weight_decay: float = 5e-4, *, no_decay_bn_bias: bool = False, **kw: Any) -> Optimizer:
    """The optimizer ``name`` (one of ``OPTIMIZERS``) over a model's or an iterable's parameters.

    ``momentum`` is used by sgd and sgdp; the adaptive optimizers take ``betas`` through ``kw``.
    Other ``kw`` go to the optimizer's constructor (e.g. ``nesterov``, ``final_lr``, ``gamma``,
    ``amsbound``, ``fixed_decay``).
    """
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    groups = parameter_groups(params_or_model, weight_decay, no_decay_bn_bias)
    if key == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **kw)
    if key == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, **kw)
    if key == "adabound":
        import adabound
        kw.setdefault("final_lr", 0.1)
        return adabound.AdaBound(groups, lr=lr, weight_decay=weight_decay, **kw)
    if key == "adaboundw":
        from pytorch_optimizer import AdaBound as AdaBoundDecoupled
        kw.setdefault("final_lr", 0.1)
        if "amsbound" in kw:  # the adabound package's spelling
            kw["ams_bound"] = kw.pop("amsbound")
        return AdaBoundDecoupled(groups, lr=lr, weight_decay=weight_decay, weight_decouple=True, **kw)
    import adamp
    if key == "sgdp":
        return adamp.SGDP(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **kw)
    return adamp.AdamP(groups, lr=lr, weight_decay=weight_decay, **kw)


class SAM(_LibrarySAM):
    """Sharpness-Aware Minimization around an existing optimizer (Foret et al. 2021; ASAM with
    ``adaptive=True``, Kwon et al. 2021): ``pytorch_optimizer``'s ``SAM`` wrapped for this toolkit.

    The library does the arithmetic: ``first_step`` saves the weights and moves them to
    ``w + rho * g / ||g||`` (adaptive: ``w + rho * T^2 g / ||T g||`` with ``T = |w|``), the norm taken
    over all parameters with a gradient; ``second_step`` restores them and runs the base optimizer
    with the gradients computed at the perturbed weights. This class adds what the trainers' AMP and
    DDP order needs (see the module docstring and ``sam_step``): it wraps an optimizer already built
    (``build_optimizer``'s parameter groups), ``restore`` puts the weights back without a step, and
    ``step()`` without a closure is restore + base step (what ``GradScaler.step`` calls).
    ``param_groups`` and ``state`` are the base optimizer's own objects, so LR schedulers,
    ``zero_grad`` and GradScaler work on the wrapper. ``state_dict`` holds the base optimizer's state
    dict with ``rho`` and ``adaptive`` (the format checkpoints have always had; a plain base state dict
    also loads).
    """

    def __init__(self, base_optimizer: Optimizer, rho: float = 0.05, adaptive: bool = False,
                 eps: float = 1e-12) -> None:
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        if isinstance(base_optimizer, SAM):
            raise TypeError("SAM cannot wrap another SAM")
        # the library builds its base optimizer from the groups it made; hand it the one we have
        super().__init__(base_optimizer.param_groups, lambda groups, **_: base_optimizer, rho=rho,
                         adaptive=adaptive, perturb_eps=eps)
        self.rho = float(rho)
        self.adaptive = bool(adaptive)
        self._share_base()

    def _share_base(self) -> None:
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.defaults = self.base_optimizer.defaults
        for group in self.param_groups:  # what the library's first_step reads from each group
            group["rho"], group["adaptive"] = self.rho, self.adaptive
            group.setdefault("foreach", None)

    @property
    def perturbed(self) -> bool:
        """Whether the weights are currently moved by ``first_step``."""
        return any("old_p" in s for s in self.state.values())

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Save the weights and move them uphill by ``rho`` (scaled) along the gradient."""
        if self.perturbed:
            raise RuntimeError("first_step called twice without restore/second_step")
        super().first_step(zero_grad=zero_grad)

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights saved by ``first_step`` (a no-op when not perturbed)."""
        for p, state in self.state.items():
            if "old_p" in state:
                p.copy_(state.pop("old_p"))

    def second_step(self, zero_grad: bool = False) -> None:
        """Restore the weights, then update them with the base optimizer and the current gradients."""
        self.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Without closure: restore, then base step (what ``GradScaler.step`` calls). With a closure
        (gradients at the current weights already in ``.grad``): the full SAM step, the closure
        recomputing loss and gradients at the perturbed weights."""
        if closure is None:
            self.restore()
            return self.base_optimizer.step()
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.restore()
        self.base_optimizer.step()
        return loss

    def state_dict(self) -> Dict[str, Any]:
        if self.perturbed:
            raise RuntimeError("state_dict taken between first_step and second_step")
        return {"base_optimizer": self.base_optimizer.state_dict(), "rho": self.rho,
                "adaptive": self.adaptive}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if "base_optimizer" in state_dict:
            self.rho = float(state_dict.get("rho", self.rho))
            self.adaptive = bool(state_dict.get("adaptive", self.adaptive))
            state_dict = state_dict["base_optimizer"]
        self.base_optimizer.load_state_dict(state_dict)
        self._share_base()  # loading replaces the base's group dicts: share the new ones

    def __repr__(self) -> str:
        return f"SAM(rho={self.rho}, adaptive={self.adaptive}, base={self.base_optimizer!r})"


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Batch norms keep normalizing with batch statistics but do not update their running ones
    (SAM's second forward pass runs at perturbed weights, not a real step)."""
    saved = []
    if enabled:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                saved.append((m, m.momentum))
                m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum


def _loss_tensor(output: Any) -> Tensor:
    return output.total if hasattr(output, "total") else output


def _grads_finite(optimizer: torch.optim.Optimizer) -> bool:
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads])).all())


def sam_step(model: nn.Module, optimizer: SAM, closure_fn: Callable[[], Any],
             scaler: Optional["torch.amp.GradScaler"] = None, *, clip_grad_norm: Optional[float] = None,
             freeze_bn_second_pass: bool = True) -> Any:
    """One SAM training iteration: two forward/backward passes, one parameter update.

    ``closure_fn()`` runs the forward pass (under autocast when using AMP) and returns the loss, a
    scalar tensor or an object with ``.total`` (``LossOutput``); it must not call ``backward`` or
    ``zero_grad``. ``model`` may be DDP-wrapped; both passes all-reduce. Returns the first pass's
    output (the loss at the actual weights, for logging). The LR scheduler is stepped by the caller.
    Gradient accumulation is not supported.
    """
    use_scaler = scaler is not None and scaler.is_enabled()
    optimizer.zero_grad(set_to_none=True)
    output = closure_fn()
    (scaler.scale(_loss_tensor(output)) if use_scaler else _loss_tensor(output)).backward()
    if use_scaler:
        # unscaled under the base optimizer's id; the wrapper's own id stays free for scaler.step
        scaler.unscale_(optimizer.base_optimizer)
        if not _grads_finite(optimizer):
            # no perturbation direction: an update now would be a plain, unperturbed step. Skip it
            # as GradScaler skips any overflowed step (update() lowers the scale from the record
            # unscale_ made). Gradients are all-reduced, so every DDP rank takes this branch.
            optimizer.zero_grad(set_to_none=True)
            scaler.update()
            return output
    optimizer.first_step(zero_grad=True)
    try:
        with frozen_bn_stats(model, freeze_bn_second_pass):
            second = closure_fn()
            (scaler.scale(_loss_tensor(second)) if use_scaler else _loss_tensor(second)).backward()
    finally:
        optimizer.restore()  # weights go back even if the second pass fails or overflows
    if clip_grad_norm is not None:
        if use_scaler:
            scaler.unscale_(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)  # skipped when pass-2 gradients overflowed
        scaler.update()         # lowers the scale if either pass overflowed
    else:
        optimizer.step()
    return output


class ScheduleFactor:
    """LR multiplier at iteration ``it`` (0-based): optional linear warm-up, then step decay by epoch
    (the reference: x gamma at the start of each epoch in ``decay_epochs``) or cosine to ``min_factor``.
    A class rather than a closure so schedulers pickle and their state dict round-trips."""

    def __init__(self, kind: str, total_iters: int, steps_per_epoch: int, decay_epochs: Sequence[int],
                 gamma: float, warmup_iters: int, min_factor: float) -> None:
        self.kind = kind
        self.total_iters = int(total_iters)
        self.steps_per_epoch = int(steps_per_epoch)
        self.decay_iters = [int(e) * self.steps_per_epoch for e in decay_epochs]
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.min_factor = float(min_factor)

    def __call__(self, it: int) -> float:
        if self.kind == "step":
            factor = self.gamma ** sum(it >= d for d in self.decay_iters)
            factor = max(factor, self.min_factor)
        else:
            span = max(self.total_iters - self.warmup_iters, 1)
            t = min(max(it - self.warmup_iters, 0), span) / span
            factor = self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
        if it < self.warmup_iters:
            factor *= (it + 1) / self.warmup_iters
        return factor


def build_scheduler(optimizer: Optimizer, name: str = "step", epochs: int = 250, steps_per_epoch: int = 1,
                    decay_epochs: Sequence[int] = (190, 220), gamma: float = 0.1,
                    warmup_epochs: float = 0, min_lr: float = 0.0) -> LambdaLR:
    """A per-iteration schedule (call ``scheduler.step()`` after every optimizer step).

    ``step``: lr x ``gamma`` at each of ``decay_epochs`` (never below ``min_lr``); ``cosine``: from the
    base lr down to ``min_lr`` at iteration ``epochs * steps_per_epoch``, after the warm-up.
    ``warmup_epochs`` (may be fractional): linear ramp, lr x (it + 1) / warmup_iters. ``min_lr`` is
    absolute; each group's base lr is its ``initial_lr`` (if resuming) or ``lr``.
    """
    kind = name.lower()
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError("epochs and steps_per_epoch must be >= 1")
    total = int(epochs) * int(steps_per_epoch)
    warmup = int(round(warmup_epochs * steps_per_epoch))
    factors = []
    for group in optimizer.param_groups:
        base = float(group.get("initial_lr", group["lr"]))
        min_factor = min_lr / base if base > 0 else 0.0
        factors.append(ScheduleFactor(kind, total, steps_per_epoch, decay_epochs, gamma, warmup, min_factor))
    return LambdaLR(optimizer, factors)
