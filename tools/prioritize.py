#!/usr/bin/env python
"""``retinaface prioritize``: see retinaface/cli/prioritize.py (``python tools/prioritize.py --help``)."""
import sys

from retinaface.cli import run_command

sys.exit(run_command("prioritize", sys.argv[1:], prog="tools/prioritize.py"))
