#!/usr/bin/env python
"""Detect faces in images, folders, videos and webcams: ``retinaface detect`` (see --help)."""
import sys

from retinaface.cli import run_command

sys.exit(run_command("detect", sys.argv[1:], prog="tools/detect.py"))
