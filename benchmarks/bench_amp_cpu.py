#!/usr/bin/env python
"""Training steps in float32 against bf16 autocast (``--amp``) on this CPU, measured side by side.

    python benchmarks/bench_amp_cpu.py [--data ROOT] [--steps 30] [--rounds 2] [--image-size 512] [--batch-size 8]

Runs the trainer itself (real augmentation, matching, loss, SGD; the CPU default channels-last
layout) for ``--steps`` steps per run, float32 and bf16 alternately for ``--rounds`` rounds from the
same backbone, and prints each run's images/s (the trainer's own figure, start-up excluded), the
median ratio bf16 / float32 and both runs' mean loss (the two should be close: autocast keeps
float32 weights and losses). Data: ``../shared/real/widerface`` when present, else a generated
synthetic WIDER set. bf16 pays only where the CPU has it natively (AVX512-BF16 or AMX; the script
says whether oneDNN sees it); elsewhere it is emulated and slower.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from retinaface.engine import Trainer, TrainConfig  # noqa: E402


def run(data: Path, output: Path, amp: bool, args: argparse.Namespace, backbone_weights) -> dict:
    config = TrainConfig(data=str(data), backbone="mobilenet0.25", backbone_weights=backbone_weights,
                         optimizer="sgd", lr=0.01, epochs=1, batch_size=args.batch_size,
                         image_size=args.image_size, schedule="cosine", warmup_epochs=1, eval_every=0,
                         output=str(output), progress=False, save_every=0, amp=amp,
                         max_steps_per_epoch=args.steps)
    Trainer(config).fit()
    with open(output / "log.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    return {"images_per_s": float(row["images_per_s"]), "loss": float(row["loss"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="a WIDER-layout root (default ../shared/real/widerface)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    real = REPO.parent / "shared" / "real"
    backbone = real / "weights" / "mobilenetV1X0.25_pretrain.tar"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else real / "widerface"
        if not (data / "train" / "label.txt").is_file():
            from retinaface.data.synthetic import generate_synthetic_widerface
            data = Path(tmp) / "synthetic"
            generate_synthetic_widerface(data, num_train=64, num_val=4, seed=0)
        print(f"data {data}; oneDNN native bf16: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}; "
              f"threads {torch.get_num_threads()}")
        results = {False: [], True: []}
        for round_index in range(args.rounds):
            for amp in (False, True):
                result = run(data, Path(tmp) / f"run_{round_index}_{int(amp)}", amp, args,
                             str(backbone) if backbone.is_file() else None)
                results[amp].append(result)
                print(f"round {round_index} {'bf16' if amp else 'fp32'}: {result['images_per_s']:.2f} images/s, "
                      f"mean loss {result['loss']:.4f}")
    ratios = [b["images_per_s"] / f["images_per_s"] for f, b in zip(results[False], results[True])]
    print(f"bf16 / float32 images/s: median {statistics.median(ratios):.2f}x "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
