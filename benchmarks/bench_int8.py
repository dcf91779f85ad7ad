#!/usr/bin/env python
"""INT8 vs float latency on ONNX Runtime and OpenVINO, for several choices of layers kept float.

For each backbone: export a static float ONNX file at ``--size``, quantise it (QDQ, per-channel
int8 weights, uint8 activations, calibration on ``--calibration-images`` synthetic training images)
once per float-layer policy, then time every file on ONNX Runtime and OpenVINO in rotating blocks
(:func:`retinaface.deploy.quantize.median_latency_ms`). Ratios are against the float file on the same
runtime and against the fastest float runtime, all measured in this run. ``--weights`` gives a
trained checkpoint for a backbone (``name=path``) so that the accuracy report (AP of float and
INT8 on the synthetic val split) means something; untrained backbones are timed only.

Policies: ``tail`` keeps Transpose / Reshape / Concat / Softmax float (the output tail);
``tail+stem`` also the first convolution (the default); ``tail+stem+dw`` also the depthwise
convolutions; ``all`` quantises everything it can.
Example: python benchmarks/bench_int8.py --weights mobilenet0.25=runs/ref_synthetic/best.pth
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

POLICIES = {
    "tail": dict(keep_first_conv_float=False),
    "tail+stem": dict(keep_first_conv_float=True),
    "tail+stem+dw": dict(keep_first_conv_float=True, keep_depthwise_float=True),
    "all": dict(keep_first_conv_float=False, float_op_types=()),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["mobilenet0.25", "resnet50"])
    parser.add_argument("--weights", nargs="*", default=["mobilenet0.25=runs/ref_synthetic/best.pth"],
                        help="name=checkpoint pairs (missing files fall back to untrained weights)")
    parser.add_argument("--size", nargs=2, type=int, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-accuracy", action="store_true", help="skip the AP report of trained models")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    import retinaface
    from retinaface.deploy.export import export_onnx
    from retinaface.deploy.openvino_backend import openvino_available
    from retinaface.deploy.quantize import accuracy_report, calibration_images, median_latency_ms, quantize_onnx
    from retinaface.deploy.runtime import load_runtime

    torch.set_num_threads(args.threads)
    weights = dict(item.split("=", 1) for item in args.weights)
    runtimes = ["onnxruntime"] + (["openvino"] if openvino_available() else [])
    if len(runtimes) == 1:
        print("openvino not installed: timing ONNX Runtime only (pip install openvino)")
    images, source = calibration_images("synthetic", args.calibration_images)
    h, w = args.size
    print(f"{h}x{w} (HxW), batch 1, {args.threads} threads, calibration {source}, method {args.method}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backbones:
            path = weights.get(name)
            if path and Path(path).is_file():
                model, trained = retinaface.load_model(path), True
            else:
                torch.manual_seed(0)
                model, trained = retinaface.create_model(name).eval(), False
            float_path = Path(tmp) / f"{name}.onnx"
            export_onnx(model, float_path, size=(h, w))
            detector = retinaface.Detector(load_runtime(float_path))
            files = {"float": float_path}
            for policy in args.policies:
                out = Path(tmp) / f"{name}-{policy}.onnx"
                quantize_onnx(float_path, out, detector, images, method=args.method,
                              calibration_source=source, **POLICIES[policy])
                files[f"int8 {policy}"] = out
            x = torch.randn(1, 3, h, w) * 50
            calls = {}
            for runtime in runtimes:
                for label, file in files.items():
                    net = load_runtime(file, runtime, threads=args.threads)
                    calls[(runtime, label)] = (lambda n=net: n(x))
            ms = median_latency_ms({f"{r}|{l}": fn for (r, l), fn in calls.items()}, args.runs, args.rounds)
            best_float = min(ms[f"{r}|float"] for r in runtimes)
            print(f"\n## {name} ({'trained: ' + path if trained else 'untrained'})\n")
            print("| runtime | model | median ms | vs float, same runtime | vs fastest float |")
            print("|---|---|---|---|---|")
            for runtime in runtimes:
                base = ms[f"{runtime}|float"]
                for label in files:
                    value = ms[f"{runtime}|{label}"]
                    print(f"| {runtime} | {label} | {value:.2f} | {base / value:.2f}x | {best_float / value:.2f}x |")
            if trained and not args.no_accuracy:
                for policy in args.policies:
                    report = accuracy_report(float_path, files[f"int8 {policy}"], "synthetic",
                                             threads=args.threads, latency_repeats=8)
                    drop = report.ap_drop
                    print(f"\n{name} int8 {policy}: AP drop easy {drop['easy']:+.4f} medium {drop['medium']:+.4f} "
                          f"hard {drop['hard']:+.4f} (float {report.float_ap['easy']:.4f} / "
                          f"{report.float_ap['medium']:.4f} / {report.float_ap['hard']:.4f}); "
                          f"reproduced {100 * report.reproduced:.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
