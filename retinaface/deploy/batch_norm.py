"""Batch norm that trains as exactly in channels-last (NHWC) layout as in NCHW on CPU.

PyTorch's CPU ``BatchNorm2d`` kernel for channels-last input sums its statistics far less exactly
than its NCHW kernel, and the error grows with the batch. Against float64, on a 16x16x80x80 batch
its output is 45-95x further off than NCHW's. For mobilenet0.25 at batch 32, 640 px, one step
leaves running statistics 0.1 off (NCHW: 1e-5) and a worst parameter-gradient error of 13 % (NCHW:
0.9 %). On a 32x8x320x320 input its weight gradient is 350x further off. All of this is printed by
``benchmarks/bench_channels_last.py`` (the step figures with ``--batch 32 --size 640``).

:class:`ChannelsLastBatchNorm2d` computes what those sums feed, for channels-last float32 training
input, itself:
- mean and variance, two-pass, correcting for the rounding of the float32 mean;
- the weight and bias gradients;
- every sum in a cascade (``Tensor.sum``), so the float32 error stays near 1e-7 relative.

The input gradient comes from PyTorch's backward kernel, given the exact mean and inverse std; its
own sums only enter small correction terms there. Output, gradients and running statistics are
then no further from float64 than the NCHW kernel's (tests/test_batch_norm.py). A mobilenet0.25
training step (forward + backward) at batch 32, 640 px stays 1.73x faster than NCHW (PyTorch's
NHWC: 1.90x). Every other case (eval mode, NCHW input, CUDA, other dtypes) is plain
``nn.BatchNorm2d``.

:func:`convert_channels_last_batch_norm` turns every plain ``nn.BatchNorm2d`` of a model into one in
place (it only changes their class: state-dict keys, optimizers, DDP and checkpoints see no
difference) and :func:`restore_batch_norm` turns them back, so code that checks for
``type(m) is nn.BatchNorm2d`` (pruning, width slicing) finds plain batch norms after training.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

#: largest temporary the sums make: the allocator reuses blocks this size, where full-size ones
#: of large layers are mapped fresh each call and cost more in page faults than the sums
CHUNK_BYTES = 1 << 22


def _rows(x: Tensor) -> Tensor:
    """A channels-last ``(N, C, H, W)`` tensor as the row-major ``(N*H*W, C)`` matrix it is in memory."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _chunk_rows(rows: Tensor) -> int:
    return max(1, CHUNK_BYTES // (rows.element_size() * rows.shape[1]))


def _column_square_sums(rows: Tensor) -> Tensor:
    """Per-column sums of squares of a row-major ``(M, C)`` matrix, chunk by chunk of rows.
    (``Tensor.sum(0)`` sums each column in a cascade: ~1e-7 relative error in float32.)"""
    chunk = _chunk_rows(rows)
    if chunk >= rows.shape[0]:
        return rows.square().sum(0)
    total = rows.new_zeros(rows.shape[1])
    for start in range(0, rows.shape[0], chunk):
        total += rows[start:start + chunk].square().sum(0)
    return total


def _centered_dot(grad_rows: Tensor, x_rows: Tensor, mean: Tensor) -> Tensor:
    """Per-column ``sum(g * (x - mean))``, chunk by chunk of rows."""
    chunk = _chunk_rows(x_rows)
    if chunk >= x_rows.shape[0]:
        return (x_rows - mean).mul_(grad_rows).sum(0)
    total = x_rows.new_zeros(x_rows.shape[1])
    for start in range(0, x_rows.shape[0], chunk):
        total += (x_rows[start:start + chunk] - mean).mul_(grad_rows[start:start + chunk]).sum(0)
    return total


class _ChannelsLastBatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float
                ) -> Tuple[Tensor, Tensor, Tensor]:
        channels = x.shape[1]
        count = x.numel() // channels
        rough = _rows(x).sum(0).div_(count)  # _rows: a view, x is channels-last
        centered = x - rough.view(1, channels, 1, 1)  # keeps x's channels-last strides
        # the float32 mean is off by up to half a unit in its last place, which matters when the
        # mean is large against the spread: measure that residue and correct for it exactly
        shift = _rows(centered).sum(0).div_(count)
        var = _column_square_sums(_rows(centered)).div_(count).sub_(shift.square()).clamp_min_(0.0)
        invstd = torch.rsqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        offset = -shift * scale if bias is None else bias - shift * scale
        out = torch.addcmul(offset.view(1, channels, 1, 1), centered, scale.view(1, channels, 1, 1), out=centered)
        mean = rough + shift
        ctx.save_for_backward(x, weight, rough, shift, mean, invstd)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor, _grad_mean: Tensor, _grad_var: Tensor):
        x, weight, rough, shift, mean, invstd = ctx.saved_tensors
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # PyTorch's kernel: its own sums only enter small correction terms of grad_x, which
            # comes out as exact as NCHW's once mean and invstd are
            grad_x = torch.ops.aten.native_batch_norm_backward(
                grad_out, x, weight, None, None, mean, invstd, True, ctx.eps, [True, False, False])[0]
        if weight is not None and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            # ... but its weight and bias gradients are those sums: 10x off NCHW's at 3M rows
            grad_rows = _rows(grad_out)
            grad_bias = grad_rows.sum(0)
            grad_weight = _centered_dot(grad_rows, _rows(x), rough).sub_(shift * grad_bias).mul_(invstd)
        return grad_x, grad_weight, grad_bias, None


def _takes_careful_path(module: nn.BatchNorm2d, x: Tensor) -> bool:
    batch_stats = module.training or module.running_mean is None
    return (batch_stats and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            and x.numel() // x.shape[1] > 1)


class ChannelsLastBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose CPU training statistics for channels-last float32 input are computed
    as carefully as the NCHW kernel's (see the module docstring); otherwise the parent's forward."""

    def forward(self, x: Tensor) -> Tensor:
        if not _takes_careful_path(self, x):
            return super().forward(x)
        out, mean, var = _ChannelsLastBatchNormFunction.apply(x, self.weight, self.bias, self.eps)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                count = x.numel() // x.shape[1]
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(var * (count / (count - 1)), factor)  # unbiased, as PyTorch's
        return out


def convert_channels_last_batch_norm(module: nn.Module) -> int:
    """Make every plain ``nn.BatchNorm2d`` in ``module`` a :class:`ChannelsLastBatchNorm2d`, in place
    (the class changes, nothing else: parameters, buffers, hooks and references held by optimizers
    or DDP stay valid); subclasses such as SyncBatchNorm are left alone. Returns how many changed."""
    changed = 0
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = ChannelsLastBatchNorm2d
            changed += 1
    return changed


def restore_batch_norm(module: nn.Module) -> None:
    """Undo :func:`convert_channels_last_batch_norm`: plain ``nn.BatchNorm2d`` again, in place."""
    for m in module.modules():
        if type(m) is ChannelsLastBatchNorm2d:
            m.__class__ = nn.BatchNorm2d


def is_plain_batch_norm(module: nn.Module) -> bool:
    """``nn.BatchNorm2d`` itself or its channels-last-exact twin (same state, same eval output):
    what BN folding, pruning and width slicing may treat as a plain batch norm."""
    return type(module) in (nn.BatchNorm2d, ChannelsLastBatchNorm2d)


def batch_norms_all_convertible(module: nn.Module) -> bool:
    """Whether every batch norm in ``module`` is a plain ``nn.BatchNorm2d`` (or already converted):
    only then does NHWC training get exact statistics everywhere (timm's BatchNormAct2d and the
    width-switchable SlimBatchNorm2d call PyTorch's kernel themselves)."""
    return all(is_plain_batch_norm(m) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
