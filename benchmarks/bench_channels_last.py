"""Why training keeps NCHW by default on CPU: NHWC (channels-last) steps are faster, but their
float32 gradients are further from float64 ones.

    python benchmarks/bench_channels_last.py [--backbone mobilenet0.25] [--size 320] [--batch 16]
                                             [--train-epochs 4]

Prints the median training-step time (forward + backward of a simple loss, train-mode batch norm)
for NCHW and NHWC input, timed in alternation, and for each layout the worst relative gradient
error ``||g32 - g64|| / ||g64||`` over the parameters whose float64 gradient norm exceeds 1e-3.
With ``--train-epochs N`` it then trains on the synthetic set for N epochs (the synthetic recipe,
same seed) with NCHW and with NHWC batches and prints both runs' AP and images/s: the default
should follow the AP, not the gradient error alone.
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
from retinaface.profiling import paired_latency  # noqa: E402


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.backbone).train()
    state = copy.deepcopy(model.state_dict())
    images = torch.randn(args.batch, 3, args.size, args.size) * 50  # mean-subtracted pixel scale
    nhwc = images.contiguous(memory_format=torch.channels_last)

    nchw_s, nhwc_s = paired_latency([lambda: gradients(model, images), lambda: gradients(model, nhwc)],
                                    repeats=args.repeats, warmup=1)
    print(f"{args.backbone}, batch {args.batch} at {args.size}, {args.threads} threads")
    print(f"training step NCHW : {nchw_s * 1e3:8.1f} ms")
    print(f"training step NHWC : {nhwc_s * 1e3:8.1f} ms  (x{nchw_s / nhwc_s:.2f})")

    errors = {}
    for name, batch in (("NCHW", images), ("NHWC", nhwc)):
        model.load_state_dict(state)  # batch-norm running statistics back to the same start
        errors[name] = gradients(model, batch)
    exact_model = copy.deepcopy(model).double()
    exact_model.load_state_dict(state)
    exact = gradients(exact_model, images.double())
    for name, grads in errors.items():
        worst = max(float((grads[k].double() - exact[k]).norm() / exact[k].norm())
                    for k in exact if exact[k].norm() > 1e-3)
        print(f"worst relative gradient error, {name} float32 vs float64: {worst:.2%}")
    batch_norm_error()
    if args.train_epochs:
        train_both(args.backbone, args.train_epochs, args.seeds)


def batch_norm_error() -> None:
    """Training-mode BatchNorm2d alone, float32 vs float64, in both layouts: where NHWC's gradient
    error comes from (the CPU channels-last kernel sums its statistics less carefully)."""
    torch.manual_seed(0)
    print("\n| BatchNorm2d input (16x16x80x80) | NCHW max error | NHWC max error | ratio |\n|---|---|---|---|")
    for offset in (0.0, 100.0):
        x = torch.randn(16, 16, 80, 80) * 0.5 + offset
        grad = torch.randn_like(x)
        errors = {}
        for name, layout in (("NCHW", torch.contiguous_format), ("NHWC", torch.channels_last)):
            inp = x.detach().clone().contiguous(memory_format=layout).requires_grad_()
            exact = x.detach().double().requires_grad_()
            out, ref = nn.BatchNorm2d(16).train()(inp), nn.BatchNorm2d(16).double().train()(exact)
            out.backward(grad)
            ref.backward(grad.double())
            errors[name] = (float((out.detach().double() - ref.detach()).abs().max()),
                            float((inp.grad.double() - exact.grad).abs().max() / exact.grad.abs().max()))
        for i, kind in enumerate(("output", "relative input gradient")):
            a, b = errors["NCHW"][i], errors["NHWC"][i]
            print(f"| mean {offset:g}, {kind} | {a:.1e} | {b:.1e} | x{b / a:.0f} |")


def train_both(backbone: str, epochs: int, seeds=(0,)) -> None:
    """Synthetic-data training with NCHW and with NHWC batches, once per seed: AP and images/s of
    each run, then the mean AP of each layout (one seed is not enough to tell layouts apart)."""
    import statistics
    import tempfile

    from retinaface.engine.trainer import TrainConfig, Trainer

    print("\n| layout | seed | AP easy | AP medium | AP hard | images/s (last epoch) |\n|---|---|---|---|---|---|")
    aps: Dict[str, list] = {"NCHW": [], "NHWC": []}
    for seed in seeds:
        for channels_last in (False, True):
            layout = "NHWC" if channels_last else "NCHW"
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
        print(f"| {layout} | mean | {means[0]:.4f} | {means[1]:.4f} | {means[2]:.4f} | |")


if __name__ == "__main__":
    main()
