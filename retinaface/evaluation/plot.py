"""Precision-recall plots of a WIDER FACE evaluation, in the style of the WIDER FACE result figures
(recall on x, precision on y, AP in the legend). Uses matplotlib's Agg canvas directly, so it
works headless and never touches pyplot's global state."""
from __future__ import annotations

import io
import os
from typing import Optional, Union

import numpy as np

from ..fileio import atomic_write
from ..formats.ground_truth import SETTINGS
from .widerface import WiderEvalResult

PathLike = Union[str, "os.PathLike[str]"]

_COLOURS = {"easy": "#1f77b4", "medium": "#2ca02c", "hard": "#d62728"}


def plot_pr_curves(result: WiderEvalResult, path: PathLike, title: Optional[str] = None,
                   dpi: int = 120) -> None:
    """Draw the easy / medium / hard precision-recall curves of ``result`` and save them as PNG
    (atomically) at ``path``. The title names the evaluation protocol (after ``title`` if given)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 5.0), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    aps = result.as_dict()
    for setting in SETTINGS:
        if setting not in result.curves:
            continue
        recall, precision = (np.asarray(a, dtype=np.float64) for a in result.curves[setting])
        # Thresholds where nothing was proposed have no precision (NaN): leave them out.
        ok = np.isfinite(recall) & np.isfinite(precision)
        ax.plot(recall[ok], precision[ok], color=_COLOURS[setting], linewidth=2.0,
                label=f"{setting} (AP {aps[setting]:.4f})")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    protocol = f"{result.protocol} protocol"
    ax.set_title(f"{title} ({protocol})" if title is not None else f"WIDER FACE val: precision-recall ({protocol})")
    ax.grid(True, linestyle=":", linewidth=0.8)
    ax.legend(loc="lower left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())
