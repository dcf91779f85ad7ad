"""ChannelsLastBatchNorm2d: channels-last CPU training as exact as NCHW, otherwise nn.BatchNorm2d."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from retinaface.deploy.batch_norm import (CHUNK_BYTES, ChannelsLastBatchNorm2d, batch_norms_all_convertible,
                                   convert_channels_last_batch_norm, restore_batch_norm)

NHWC = torch.channels_last


def _pair(channels: int = 8, **kwargs):
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(channels, **kwargs)
    if plain.affine:
        with torch.no_grad():
            plain.weight.uniform_(0.5, 1.5)
            plain.bias.uniform_(-1.0, 1.0)
    careful = ChannelsLastBatchNorm2d(channels, **kwargs)
    careful.load_state_dict(plain.state_dict())
    return plain, careful


def _run(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, layout=torch.contiguous_format):
    inp = x.detach().clone().contiguous(memory_format=layout).requires_grad_()
    for p in module.parameters():
        p.grad = None
    out = module(inp)
    out.backward(grad.contiguous(memory_format=layout))
    grads = [inp.grad] + [p.grad for p in module.parameters()]
    return out.detach(), grads, [b.detach().clone() for b in module.buffers()]


def _error(a: torch.Tensor, exact: torch.Tensor, scale: float = 0.0) -> float:
    """Max error relative to the largest exact value (or to ``scale``, where that is larger)."""
    return float((a.double() - exact).abs().max() / max(float(exact.abs().max()), scale, 1e-12))


@pytest.mark.parametrize("shape, offset", [((4, 8, 40, 40), 0.0), ((4, 8, 40, 40), 100.0),
                                           ((3, 8, 30, 40), 20.0), ((2, 8, 7, 5), 5.0),
                                           # over CHUNK_BYTES: sums chunk by chunk, the last one partial
                                           ((6, 8, 160, 160), 3.0)])
def test_channels_last_training_is_as_exact_as_nchw(shape, offset):
    """Output, every gradient and the running statistics against float64: the NHWC path no further
    off than PyTorch's NCHW kernel, or than a few float32 units in the last place (a large mean with
    a small spread makes careless sums show)."""
    torch.manual_seed(1)
    x = torch.randn(shape) * 0.5 + offset
    grad = torch.randn(shape)
    if shape[0] == 6:
        assert CHUNK_BYTES < x.numel() * 4 < 2 * CHUNK_BYTES  # two chunks, the second partial
    plain, careful = _pair()
    exact = _run(copy.deepcopy(plain).double(), x.double(), grad.double())
    nchw = _run(copy.deepcopy(plain), x, grad)
    nhwc = _run(careful, x, grad, NHWC)
    assert nhwc[0].is_contiguous(memory_format=NHWC)
    # a mean near 0 is known to float32 precision of the data's spread, not of its own size
    scales = [0.0] * 4 + [0.1 * float(x.std()), 0.0, 0.0]
    for got, ref, want, scale in zip([nhwc[0]] + nhwc[1] + nhwc[2], [nchw[0]] + nchw[1] + nchw[2],
                                     [exact[0]] + exact[1] + exact[2], scales):
        assert _error(got, want, scale) <= max(_error(ref, want, scale), 5e-7)


def test_momentum_none_and_repeated_steps_follow_the_cumulative_average():
    x = [torch.randn(2, 8, 16, 16) * 3 + 1 for _ in range(3)]
    plain, careful = _pair(momentum=None)
    for batch in x:
        _run(plain, batch, torch.ones_like(batch))
        _run(careful, batch, torch.ones_like(batch), NHWC)
    assert int(careful.num_batches_tracked) == 3
    torch.testing.assert_close(careful.running_mean, plain.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(careful.running_var, plain.running_var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(affine=False), dict(track_running_stats=False)])
def test_non_affine_and_untracked_variants_match_pytorch(kwargs):
    x, grad = torch.randn(2, 8, 12, 12) + 2, torch.randn(2, 8, 12, 12)
    plain, careful = _pair(**kwargs)
    expected, got = _run(plain, x, grad), _run(careful, x, grad, NHWC)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(got[1] + got[2], expected[1] + expected[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_other_cases_are_plain_batch_norm_bit_for_bit():
    """NCHW input, eval mode and float64 take nn.BatchNorm2d's own kernel."""
    x = torch.randn(2, 8, 12, 12) * 2 + 3
    plain, careful = _pair()
    assert torch.equal(_run(careful, x, x)[0], _run(plain, x, x)[0])  # NCHW, training
    plain.eval(), careful.eval()
    xl = x.contiguous(memory_format=NHWC)
    assert torch.equal(careful(xl), plain(xl))
    double_plain, double_careful = copy.deepcopy(plain).double().train(), copy.deepcopy(careful).double().train()
    assert torch.equal(double_careful(xl.double()), double_plain(xl.double()))


def test_a_single_value_per_channel_is_refused_as_pytorch_does():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ChannelsLastBatchNorm2d(4).train()(torch.randn(1, 4, 1, 1).contiguous(memory_format=NHWC))


def test_convert_changes_only_plain_batch_norms_in_place_and_restore_undoes_it():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)),
                          nn.SyncBatchNorm(4), nn.BatchNorm1d(4))
    keys, weight, bn = list(model.state_dict()), model[1].weight, model[1]
    assert not batch_norms_all_convertible(model)  # SyncBatchNorm calls its own kernel
    assert convert_channels_last_batch_norm(model) == 2
    assert list(model.state_dict()) == keys
    assert type(model[1]) is ChannelsLastBatchNorm2d and type(model[2][0]) is ChannelsLastBatchNorm2d
    assert model[1] is bn and model[1].weight is weight  # same objects: optimizers stay valid
    assert type(model[3]) is nn.SyncBatchNorm and type(model[4]) is nn.BatchNorm1d
    restore_batch_norm(model)
    assert type(model[1]) is nn.BatchNorm2d and type(model[2][0]) is nn.BatchNorm2d
    assert batch_norms_all_convertible(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))


def test_converted_models_fold_and_group_like_plain_ones():
    """BN folding and channel grouping (pruning, width slicing) see converted batch norms as plain."""
    from retinaface import create_model
    from retinaface.adaptive.groups import find_channel_groups
    from retinaface.deploy.fusion import count_batchnorm, fuse_conv_bn

    plain = create_model("mobilenet0.25").eval()
    converted = copy.deepcopy(plain)
    convert_channels_last_batch_norm(converted)
    assert count_batchnorm(converted) == count_batchnorm(plain) > 0
    assert count_batchnorm(fuse_conv_bn(copy.deepcopy(converted))) == 0
    signature = [(g.size, g.prioritized, [m.name for m in g.members]) for g in find_channel_groups(plain)]
    assert [(g.size, g.prioritized, [m.name for m in g.members]) for g in find_channel_groups(converted)] == signature
