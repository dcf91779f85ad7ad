"""Build step for the two optional compiled parts. Without a C compiler (or, for the first,
libjpeg-turbo's headers; Debian/Ubuntu: libjpeg-dev) the install goes on without them and the
library takes its pure-Python paths: the same results, slower.

- retinaface/data/_jpeg_region.c: region decoding of training JPEGs against the system's
  libjpeg-turbo (otherwise whole images are decoded with OpenCV);
- retinaface/_detect_kernels.c: candidate selection and greedy NMS of the Detector's
  post-processing (otherwise NumPy and torchvision.ops.nms).
"""
import os

from setuptools import Extension, setup

# no fused multiply-add: the NMS must round every operation as torchvision's does
_EXACT_FLOAT = [] if os.name == "nt" else ["-ffp-contract=off"]

setup(ext_modules=[
    Extension("retinaface.data._jpeg_region", ["retinaface/data/_jpeg_region.c"], libraries=["jpeg"],
              optional=True),
    Extension("retinaface._detect_kernels", ["retinaface/_detect_kernels.c"],
              extra_compile_args=_EXACT_FLOAT, libraries=[] if os.name == "nt" else ["m"], optional=True),
])
