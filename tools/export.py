#!/usr/bin/env python
"""Export a checkpoint to ONNX / TorchScript with a parity check: ``retinaface export`` (see --help)."""
import sys

from retinaface.cli import run_command

sys.exit(run_command("export", sys.argv[1:], prog="tools/export.py"))
