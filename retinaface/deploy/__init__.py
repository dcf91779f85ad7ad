"""Deployment: exported files and the runtimes that run them. Writers and metadata (``export``),
running ONNX / TorchScript / OpenVINO files (``runtime``, ``openvino_backend``), INT8 quantization
(``quantize``), parity checks against PyTorch (``parity``) and BatchNorm folding (``fusion``,
``batch_norm``). Formats are registered in :data:`retinaface.runtime_interface.EXPORT_FORMATS`.
"""
