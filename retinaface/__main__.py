"""``python -m retinaface <command> ...``: the same as the ``retinaface`` console command."""
import sys

from .cli import main

sys.exit(main())
