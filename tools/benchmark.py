#!/usr/bin/env python
"""Params, GFLOPs and latency of backbones or a checkpoint: ``retinaface benchmark`` (see --help)."""
import sys

from retinaface.cli import run_command

sys.exit(run_command("benchmark", sys.argv[1:], prog="tools/benchmark.py"))
