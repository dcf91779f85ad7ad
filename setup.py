"""Build step for the one compiled part: region decoding of JPEGs for training
(retinaface/data/_jpeg_region.c, against the system's libjpeg-turbo). It is optional: without a C
compiler or libjpeg-turbo's headers (Debian/Ubuntu: libjpeg-dev) the install goes on without it
and training decodes whole images with OpenCV, as before (same samples, slower)."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("retinaface.data._jpeg_region", ["retinaface/data/_jpeg_region.c"],
                             libraries=["jpeg"], optional=True)])
