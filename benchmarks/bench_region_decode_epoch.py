#!/usr/bin/env python
"""Does the JPEG region decoder pay for itself in training? Time training steps on real WIDER photos
with it on and off, at the default worker count, alternating legs so drift hits both alike.

The region decoder (``retinaface/data/_jpeg_region.c`` + ``retinaface.data.fast_decode``) decodes
only the crop of a sample's JPEG. Data loading runs in DataLoader workers beside the training
process; on a machine with few cores the workers' CPU time is taken from the forward and backward
passes, so what counts is the step rate of the whole run, printed here as images per second and the
ratio on / off. The project keeps the decoder only if a training epoch is at least 10 % faster.

Measured 2026-12-06 on the idle 2-core machine (2 workers, 640 px, batch 16, 25 steps a leg):
on 8.46 / 8.22, off 8.82 / 8.05 images/s; on/off = 0.989, data wait 1.0-1.2 % of the step time.

Example (on an idle machine; ~4 minutes):
    python benchmarks/bench_region_decode_epoch.py --real ../shared/real --steps 25 --legs 2
"""
from __future__ import annotations

import argparse
import csv
import functools
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", default=str(REPO.parent / "shared" / "real"), help="the shared real-data folder")
    parser.add_argument("--steps", type=int, default=25, help="training steps per leg")
    parser.add_argument("--legs", type=int, default=2, help="on/off pairs")
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    data = Path(args.real) / "widerface"
    if not (data / "train" / "label.txt").is_file():
        raise SystemExit(f"{data}/train/label.txt: real training data not found (see --real)")
    sys.path.insert(0, str(REPO))
    from retinaface.data import augment
    from retinaface.data.fast_decode import region_decoder_available
    from retinaface.engine import TrainConfig, Trainer, builders

    if not region_decoder_available():
        raise SystemExit("the region decoder is not built here; nothing to compare")
    rates = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for leg in range(args.legs):
            for region in (True, False):
                builders.TrainTransform = functools.partial(augment.TrainTransform, region_decode=region)
                out = Path(tmp) / f"leg{leg}_{int(region)}"
                config = TrainConfig(data=str(data), backbone="mobilenet0.25", epochs=1, eval_every=0,
                                     image_size=args.image_size, batch_size=args.batch_size, output=str(out),
                                     progress=False, save_every=0, max_steps_per_epoch=args.steps)
                trainer = Trainer(config)
                trainer.fit()
                with open(out / "log.csv", newline="") as handle:
                    row = list(csv.DictReader(handle))[-1]
                rate = float(row["images_per_s"])
                rates[region].append(rate)
                print(f"leg {leg} region decode {'on ' if region else 'off'}: {rate:.2f} images/s, "
                      f"data wait {float(row['data_wait_share']):.1%}, workers {trainer.config.workers}", flush=True)
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"median images/s: on {on:.2f}, off {off:.2f}; on/off = {on / off:.3f} "
          f"({'pays' if on / off >= 1.10 else 'does not pay'}: the bar is 1.10)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
