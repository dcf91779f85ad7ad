"""Inference: from images to faces. The input transform (``transform``), decoding and NMS
(``postprocess``), the :class:`~retinaface.inference.detector.Detector` and what is built on it:
test-time augmentation (``tta``), tiling, video, input sources, the ``detect`` and ``embed`` loops over
files (``detect_files``, ``embed_files``), alignment crops (``align``), drawing (``visualize``) and per-stage timing
(``profiling``). The public names are importable from :mod:`retinaface`.
"""
