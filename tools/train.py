#!/usr/bin/env python
"""``retinaface train``: see retinaface/cli/train.py (``python tools/train.py --help``)."""
import sys

from retinaface.cli import run_command

sys.exit(run_command("train", sys.argv[1:], prog="tools/train.py"))
