"""Build step for the optional compiled part, retinaface/_detect_kernels.c: the input fill,
candidate selection, decoding and greedy NMS of the Detector's post-processing. Without a C
compiler the install goes on without it and the library takes its NumPy / torchvision.ops.nms
path: the same results, slower (benchmarks/bench_detect_overhead.py measures the difference).
"""
import os

from setuptools import Extension, setup

# no fused multiply-add: the NMS must round every operation as torchvision's does
_EXACT_FLOAT = [] if os.name == "nt" else ["-ffp-contract=off"]

setup(ext_modules=[
    Extension("retinaface._detect_kernels", ["retinaface/_detect_kernels.c"],
              extra_compile_args=_EXACT_FLOAT, libraries=[] if os.name == "nt" else ["m"], optional=True),
])
