"""Channels-last (NHWC) training on CPU: step time, gradient error and AP against NCHW.

    python benchmarks/bench_channels_last.py [--backbone mobilenet0.25] [--size 320] [--batch 16]
                                             [--train-epochs 12 --seeds 0 1 2 3]

Prints the median training-step time (forward + backward of a simple loss, train-mode batch norm)
for NCHW input, NHWC input with PyTorch's BatchNorm2d and NHWC input with the trainer's
``ChannelsLastBatchNorm2d`` (retinaface/deploy/batch_norm.py), timed in alternation, and for each
the worst relative gradient error ``||g32 - g64|| / ||g64||`` over the parameters whose float64
gradient norm exceeds 1e-3, and the worst batch-norm running-statistics error after the step. A
table of BatchNorm2d alone, float32 against float64, shows where PyTorch's NHWC error comes from.
With ``--train-epochs N`` it then trains on the synthetic set for N epochs per seed (the synthetic
recipe) with NCHW and with NHWC batches, as the trainer does them, and prints both runs' AP and
images/s: the CPU default follows the AP, not the gradient error alone.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from retinaface import create_model  # noqa: E402
from retinaface.deploy.batch_norm import ChannelsLastBatchNorm2d, convert_channels_last_batch_norm  # noqa: E402
from retinaface.inference.profiling import paired_latency  # noqa: E402


def gradients(model: nn.Module, images: torch.Tensor) -> Dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loc, conf, landms = model(images)
    (loc.square().mean() + conf.square().mean() + landms.square().mean()).backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet0.25")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--train-epochs", type=int, default=0, help="also train NCHW vs NHWC for N epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (one run per layout each)")
    parser.add_argument("--layouts", nargs="+", default=["NCHW", "NHWC"], choices=["NCHW", "NHWC"],
                        help="layouts to train (NCHW runs are deterministic: rerun only what changed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.backbone).train()
    state = copy.deepcopy(model.state_dict())
    images = torch.randn(args.batch, 3, args.size, args.size) * 50  # mean-subtracted pixel scale
    nhwc = images.contiguous(memory_format=torch.channels_last)

    exact_bn = copy.deepcopy(model)
    convert_channels_last_batch_norm(exact_bn)
    runs = {"NCHW": (model, images), "NHWC, PyTorch BatchNorm2d": (model, nhwc),
            "NHWC, ChannelsLastBatchNorm2d": (exact_bn, nhwc)}
    seconds = paired_latency([lambda m=m, x=x: gradients(m, x) for m, x in runs.values()],
                             repeats=args.repeats, warmup=1)
    exact_model = copy.deepcopy(model).double()
    exact_model.load_state_dict(state)
    exact = gradients(exact_model, images.double())
    exact_buffers = dict(exact_model.named_buffers())
    print(f"{args.backbone}, batch {args.batch} at {args.size}, {args.threads} threads\n")
    print("| training step | ms | vs NCHW | worst gradient error vs float64 | worst running-stat error |\n"
          "|---|---|---|---|---|")
    for (name, (m, batch)), step_s in zip(runs.items(), seconds):
        m.load_state_dict(state)  # batch-norm running statistics back to the same start
        grads = gradients(m, batch)
        worst = max(float((grads[k].double() - exact[k]).norm() / exact[k].norm())
                    for k in exact if exact[k].norm() > 1e-3)
        stats = max(float((b.double() - exact_buffers[k]).abs().max()) for k, b in m.named_buffers()
                    if k.endswith(("running_mean", "running_var")))
        print(f"| {name} | {step_s * 1e3:.1f} | x{seconds[0] / step_s:.2f} | {worst:.2%} | {stats:.1e} |")
    batch_norm_error()
    if args.train_epochs:
        train_both(args.backbone, args.train_epochs, args.seeds, args.layouts)


def batch_norm_error() -> None:
    """Training-mode batch norm alone, float32 vs float64: PyTorch's BatchNorm2d in both layouts
    (its NHWC kernel sums the statistics less carefully) and ChannelsLastBatchNorm2d in NHWC."""
    torch.manual_seed(0)
    print("\n| BatchNorm2d, float32 vs float64 | NCHW | NHWC, PyTorch | NHWC, ChannelsLastBatchNorm2d |\n"
          "|---|---|---|---|")
    variants = (("NCHW", nn.BatchNorm2d, torch.contiguous_format), ("NHWC", nn.BatchNorm2d, torch.channels_last),
                ("exact", ChannelsLastBatchNorm2d, torch.channels_last))
    for shape, offset in (((16, 16, 80, 80), 0.0), ((16, 16, 80, 80), 100.0), ((32, 8, 320, 320), 3.0)):
        channels = shape[1]
        x = torch.randn(shape) * 0.5 + offset
        grad = torch.randn_like(x)
        exact = x.detach().double().requires_grad_()
        ref_bn = nn.BatchNorm2d(channels).double().train()
        ref = ref_bn(exact)
        ref.backward(grad.double())
        errors = []
        for _, cls, layout in variants:
            inp = x.detach().clone().contiguous(memory_format=layout).requires_grad_()
            bn = cls(channels).train()
            out = bn(inp)
            out.backward(grad.contiguous(memory_format=layout))
            errors.append((float((out.detach().double() - ref.detach()).abs().max()),
                           float((inp.grad.double() - exact.grad).abs().max() / exact.grad.abs().max()),
                           float((bn.weight.grad.double() - ref_bn.weight.grad).abs().max()
                                 / ref_bn.weight.grad.abs().max())))
        for i, kind in enumerate(("output, max error", "input gradient, max relative error",
                                  "weight gradient, max relative error")):
            print(f"| {'x'.join(map(str, shape))}, mean {offset:g}: {kind} | "
                  + " | ".join(f"{e[i]:.1e}" for e in errors) + " |")


def train_both(backbone: str, epochs: int, seeds=(0,), layouts=("NCHW", "NHWC")) -> None:
    """Synthetic-data training with NCHW and with NHWC batches (the trainer's: NHWC with
    ChannelsLastBatchNorm2d), once per seed: AP and images/s of each run, then the mean AP of each
    layout (one seed is not enough to tell layouts apart)."""
    import statistics
    import tempfile

    from retinaface.engine.trainer import TrainConfig, Trainer

    print("\n| layout | seed | AP easy | AP medium | AP hard | images/s (last epoch) |\n|---|---|---|---|---|---|")
    aps: Dict[str, list] = {layout: [] for layout in layouts}
    for seed in seeds:
        for layout in layouts:
            channels_last = layout == "NHWC"
            with tempfile.TemporaryDirectory() as out:
                config = TrainConfig(data="synthetic", backbone=backbone, epochs=epochs, channels_last=channels_last,
                                     seed=seed, progress=False, save_every=0, output=str(Path(out) / "run"))
                summary = Trainer(config).fit()
            m, row = summary.metrics, summary.history[-1]
            ap = [m.get(k, float("nan")) for k in ("easy", "medium", "hard")]
            aps[layout].append(ap)
            print(f"| {layout} | {seed} | {ap[0]:.4f} | {ap[1]:.4f} | {ap[2]:.4f} | {row['images_per_s']:.2f} |",
                  flush=True)
    for layout, runs in aps.items():
        means = [statistics.fmean(run[i] for run in runs) for i in range(3)]
        medians = [statistics.median(run[i] for run in runs) for i in range(3)]
        print(f"| {layout} | mean | {means[0]:.4f} | {means[1]:.4f} | {means[2]:.4f} | |")
        print(f"| {layout} | median | {medians[0]:.4f} | {medians[1]:.4f} | {medians[2]:.4f} | |")
    if len(aps) == 2 and len(seeds) > 1:
        # paired by seed: the seed-to-seed spread (0.01-0.05 here) would drown an unpaired comparison
        for i, name in enumerate(("easy", "medium", "hard")):
            diffs = [b[i] - a[i] for a, b in zip(aps["NCHW"], aps["NHWC"])]
            spread = statistics.stdev(diffs)
            t = statistics.fmean(diffs) / (spread / len(diffs) ** 0.5) if spread > 0 else float("inf")
            print(f"AP {name}: NHWC - NCHW paired by seed {statistics.fmean(diffs):+.4f} "
                  f"(sd {spread:.4f}, t = {t:.2f}, NHWC higher in {sum(d > 0 for d in diffs)}/{len(diffs)})")


if __name__ == "__main__":
    main()
