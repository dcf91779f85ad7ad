"""The state a training run carries between processes and across restarts.

* RNG state (torch, numpy, Python, CUDA) captured and restored exactly (:func:`rng_state`);
* :class:`CheckpointPolicy` -- which files an epoch writes (``last.pth``, ``best.pth``,
  ``epoch_NNN.pth``) and how "best" is scored;
* run folders -- a new run never replaces an earlier one (:func:`resolve_run_folder`), and the
  temporaries of a killed run's interrupted writes are cleaned at the next start
  (:func:`prepare_run_folder`);
* :func:`read_resume_state` -- a checkpoint that can be resumed, and its saved settings.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..checkpoint import read_checkpoint
from ..fileio import claim_fresh_folder, clean_stale_temporaries

logger = logging.getLogger(__name__)

#: Files whose presence means a folder holds a training run.
RUN_MARKERS: Tuple[str, ...] = ("last.pth", "best.pth", "log.csv")


class RunFolderError(ValueError):
    """An output folder holds an earlier run that the new one would replace."""


# --------------------------------------------------------------------------- RNG
def rng_state() -> Dict[str, Any]:
    """Every generator's state as tensors and plain values (``weights_only``-loadable)."""
    # numpy's position / cached Gaussian and Python's cached Gaussian are part of the state too
    _, keys, pos, has_gauss, cached = np.random.get_state()
    _, py_internal, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": keys.tolist(),
             "numpy_extra": [int(pos), int(has_gauss), float(cached)],
             "python": list(py_internal), "python_gauss": py_gauss}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    np_state = np.random.get_state()
    pos, has_gauss, cached = state.get("numpy_extra", np_state[2:])
    np.random.set_state((np_state[0], np.asarray(state["numpy"], dtype=np.uint32), int(pos), int(has_gauss),
                         float(cached)))
    py_state = random.getstate()
    random.setstate((py_state[0], tuple(state["python"]), state.get("python_gauss", py_state[2])))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- checkpoint policy
@dataclasses.dataclass
class CheckpointPolicy:
    """Which checkpoints an epoch writes: always ``last.pth``; ``best.pth`` when the score
    improves: the ``metric`` column where the epoch was evaluated (hard AP for detection; negated
    when lower is better), else minus the training loss; ``epoch_NNN.pth`` every ``save_every``
    epochs and, with the step schedule, every ``save_every // 2`` after the first decay (the
    reference: every 10, every 5 after it)."""

    folder: Path
    save_every: int = 10
    schedule: str = "step"
    decay_epochs: Sequence[int] = ()
    metric: Optional[str] = "ap_hard"
    higher_is_better: bool = True

    @property
    def last(self) -> Path:
        return self.folder / "last.pth"

    @property
    def best(self) -> Path:
        return self.folder / "best.pth"

    def epoch_path(self, epoch: int) -> Path:
        return self.folder / f"epoch_{epoch:03d}.pth"

    def score(self, row: Dict[str, float]) -> float:
        if self.metric is not None and self.metric in row:
            return row[self.metric] if self.higher_is_better else -row[self.metric]
        return -row["loss"]

    def epoch_due(self, epoch: int) -> bool:
        if not self.save_every:
            return False
        if epoch % self.save_every == 0:
            return True
        half = self.save_every // 2
        return (self.schedule == "step" and bool(self.decay_epochs) and half > 0
                and epoch > min(self.decay_epochs) and epoch % half == 0)


# --------------------------------------------------------------------------- run folders
def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds (part of) a training run: ``last.pth``, ``best.pth`` or ``log.csv``."""
    return any((Path(folder) / name).exists() for name in RUN_MARKERS)


def next_free_folder(base: Path) -> Path:
    """``base`` if it holds no run, else the first of ``base2``, ``base3``, ... that holds none
    (the numbering ultralytics uses)."""
    base = Path(base)
    if not holds_run(base):
        return base
    n = 2
    while holds_run(base.with_name(f"{base.name}{n}")):
        n += 1
    return base.with_name(f"{base.name}{n}")


def resolve_run_folder(output: Optional[str], default: str, resume: Optional[str], overwrite: bool) -> Path:
    """The folder a run writes to, claimed for this run alone (:func:`retinaface.fileio.claim_fresh_folder`):
    two runs started at once never share one. ``output=None`` takes ``default``, or the next
    numbered folder when ``default`` holds a run or another run is starting in it (logged). An
    explicit folder that holds a run is refused (:class:`RunFolderError`) unless the run resumes or
    ``overwrite`` is set; one that another live run has claimed is refused too.

    Under ``torchrun`` only the main process (rank 0) claims; the others take the same choice by
    the holds-a-run rule, as they did before claims existed (their folder must match rank 0's)."""
    main_process = os.environ.get("RANK", "0") == "0"
    if output is None:
        if resume or overwrite:
            chosen = Path(default)
            if main_process:
                _claim_exactly(chosen, "the default output")
            return chosen
        if main_process:
            chosen = claim_fresh_folder(Path(default), is_free=lambda folder: not holds_run(folder))
        else:
            chosen = next_free_folder(Path(default))
        if chosen != Path(default):
            logger.info("%s holds an earlier run or another run is starting there; this run writes to %s",
                        default, chosen)
        return chosen
    folder = Path(output)
    if holds_run(folder) and not resume and not overwrite:
        found = ", ".join(name for name in RUN_MARKERS if (folder / name).exists())
        raise RunFolderError(f"--output {folder} holds an earlier run ({found}); continue it with --resume "
                             f"{folder / 'last.pth'}, replace it with --overwrite, or choose another --output")
    if main_process:
        _claim_exactly(folder, "--output")
    return folder


def _claim_exactly(folder: Path, what: str) -> None:
    """Claim ``folder`` itself (no numbered alternative), or :class:`RunFolderError`."""
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{what} {folder} is an existing file; name a folder")
    try:
        claim_fresh_folder(folder, is_free=lambda _: True, numbered=False)
    except FileExistsError as exc:
        raise RunFolderError(f"{what} {folder}: {exc}; wait for it or choose another --output") from None


def clear_run(folder: Path) -> List[Path]:
    """Remove an earlier run's files from ``folder`` (``--overwrite``): checkpoints, log, sample
    image and TensorBoard events; nothing else in the folder is touched."""
    folder = Path(folder)
    removed = [folder / n for n in RUN_MARKERS + ("sample.jpg",) if (folder / n).is_file()]
    removed += sorted(folder.glob("epoch_[0-9][0-9][0-9]*.pth"))
    for path in removed:
        path.unlink()
    board = folder / "tensorboard"
    if board.is_dir() and all(p.name.startswith("events.out.tfevents") for p in board.iterdir()):
        shutil.rmtree(board)
        removed.append(board)
    return removed


def prepare_run_folder(folder: Path, overwrite: bool, resuming: bool) -> None:
    """Create ``folder``; remove the temporaries a killed run left there; with ``overwrite`` (and
    not resuming) remove the earlier run's files. Main process only."""
    folder.mkdir(parents=True, exist_ok=True)
    stale = clean_stale_temporaries(folder)
    if stale:
        logger.info("removed %d temporary file(s) left by an interrupted write in %s", len(stale), folder)
    if overwrite and not resuming and holds_run(folder):
        removed = clear_run(folder)
        logger.info("--overwrite: removed the earlier run's %d file(s) from %s", len(removed), folder)


# --------------------------------------------------------------------------- resume
def read_resume_state(path: str) -> Dict[str, Any]:
    """The checkpoint at ``path``, checked to hold a training state (not only model weights)."""
    state = read_checkpoint(path)
    if "optimizer" not in state:
        raise ValueError(f"{path}: holds model weights only, not a training state to resume")
    return state


def saved_train_config(path: str) -> Dict[str, Any]:
    """The training settings saved in checkpoint ``path`` ({} for a file without them)."""
    return dict(read_resume_state(path).get("train_config") or {})
