#!/usr/bin/env python
"""Peak memory of a detect call per input megapixel: the figure behind ``retinaface detect``'s
``--max-pixels`` default (retinaface.inference.detect_files.DEFAULT_MAX_PIXELS).

Each size runs in a fresh process (peak RSS is per process and never goes down): load the model,
note the RSS at rest, run ``Detector.detect`` once on a random image of that size, note the peak
RSS. Prints the extra MiB per size and per megapixel; the default cap divided by the slope is
the memory a capped pass needs.

    python benchmarks/bench_forward_memory.py [--weights W] [--sizes 1000x2000 2000x4000 3000x4000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_PROBE = """
import json, resource, sys
import numpy as np, torch
import retinaface
torch.set_num_threads(2)
weights, height, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = retinaface.create_model("mobilenet0.25").eval() if weights == "untrained" else retinaface.load_model(weights)
detector = retinaface.Detector(model)
detector.detect(np.zeros((64, 64, 3), np.uint8))  # warm: allocator and kernels loaded
image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
at_rest = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
detector.detect(image)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rest_kib": at_rest, "peak_kib": peak}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="untrained",
                        help="checkpoint or zoo name (default: untrained mobilenet0.25; memory does not depend on weights)")
    parser.add_argument("--sizes", nargs="+", default=["1000x2000", "2000x4000", "3000x4000"], help="HxW")
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes:
        height, width = (int(v) for v in size.lower().split("x"))
        out = subprocess.run([sys.executable, "-c", _PROBE, args.weights, str(height), str(width)], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        kib = json.loads(out)
        extra_mib = (kib["peak_kib"] - kib["rest_kib"]) / 1024  # ru_maxrss is in KiB on Linux
        megapixels = height * width / 1e6
        rows.append((size, megapixels, extra_mib))
        print(f"{size:>10}  {megapixels:5.1f} MP  +{extra_mib:7.0f} MiB  {extra_mib / megapixels:5.1f} MiB/MP", flush=True)
    # slope between the smallest and largest sizes: the per-megapixel cost without the fixed part
    (_, mp0, mib0), (_, mp1, mib1) = rows[0], rows[-1]
    if mp1 > mp0:
        slope = (mib1 - mib0) / (mp1 - mp0)
        from retinaface.inference.detect_files import DEFAULT_MAX_PIXELS

        print(f"slope {slope:.1f} MiB/MP: the default --max-pixels ({DEFAULT_MAX_PIXELS / 1e6:g} MP) needs about "
              f"{slope * DEFAULT_MAX_PIXELS / 1e6 / 1024:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
