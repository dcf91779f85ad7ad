"""Train a face-embedding network: ``python tools/train_recognition.py --help``."""
import sys

from retinaface.cli import run_command

sys.exit(run_command("train-recognition", sys.argv[1:], prog="tools/train_recognition.py"))
