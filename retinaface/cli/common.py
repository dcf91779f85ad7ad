"""What every sub-command shares: range-checked argument types and one-line user errors.

User mistakes (bad flags, missing files, malformed inputs) end with one line on stderr and exit
code 2, never a traceback; Ctrl-C ends with exit code 130 (see :func:`retinaface.cli.run_command`).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable, NoReturn, Optional

from ..zoo import is_zoo_name


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a mistake in the arguments is one line (``prog: error: ...``,
    exit code 2) rather than the usage text followed by the error; ``--help`` shows the usage."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class UserError(Exception):
    """A mistake in what the user asked for or gave us; printed as one line, exit code 2."""


def number_in_range(kind: type = float, low: Optional[float] = None, high: Optional[float] = None,
                    low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type=`` that parses ``kind`` and refuses values outside [low, high]
    (``low_open`` / ``high_open`` exclude the end). The error names the allowed range."""
    lo_b, hi_b = ("(" if low_open else "["), (")" if high_open else "]")
    allowed = f"{lo_b}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi_b}"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not finite; allowed range {allowed}")
        bad = ((low is not None and (value < low or (low_open and value == low))) or
               (high is not None and (value > high or (high_open and value == high))))
        if bad:
            raise argparse.ArgumentTypeError(f"{text} is outside the allowed range {allowed}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = number_in_range(int, 1)
non_negative_int = number_in_range(int, 0)
positive_float = number_in_range(float, 0.0, low_open=True)
non_negative_float = number_in_range(float, 0.0)
probability = number_in_range(float, 0.0, 1.0)


def weights_available(value: str) -> bool:
    """Whether ``--weights VALUE`` names an existing file or a zoo entry (fetched when loaded)."""
    return Path(value).is_file() or is_zoo_name(value)


def fail(prog: str, message: str) -> int:
    """Print ``prog: error: message`` on stderr; return the user-error exit code (2)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2
