#!/usr/bin/env python
"""WIDER FACE easy / medium / hard AP (official protocol by default): ``retinaface eval``."""
import sys

from retinaface.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("eval", sys.argv[1:], prog="tools/widerface_eval.py"))
