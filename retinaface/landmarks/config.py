"""Options of a dense-landmark training run (``retinaface train-landmarks``): :class:`LandmarkConfig`,
a :class:`~retinaface.engine.config.BaseTrainConfig` with the landmark task's own fields. The
command's flags are generated from the fields (help, ranges and choices in their metadata).

``None`` defaults are decided at run time (:meth:`LandmarkConfig.resolved`): the built-in synthetic
faces get :data:`SYNTHETIC_RECIPE` (sized to train in minutes on 2 CPU cores), other data
:data:`DEFAULT_RECIPE`; the input size defaults to the network's own (112 for ``pfld``, 224 for
``mobilenetv3_small`` and ``timm:*``) and the scheme to the data's point count.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple

from ..engine.config import BaseTrainConfig, config_field_table, merge_resume as merge_engine_resume, option, \
    shared_option
from .schemes import SCHEMES

SYNTHETIC_DATA = "synthetic"
DEFAULT_OUTPUT = "runs/landmarks"
SYNTHETIC_ROOT = Path("data/synthetic_landmarks")
LOSSES: Tuple[str, ...] = ("wing", "l1", "mse")
DEFAULT_SCHEME = "wflw98"
# The registry's default input sizes (retinaface.landmarks.models), spelled here so the config and
# `train-landmarks --help` do not import torch; timm networks take 224.
MODEL_INPUT_SIZES: Dict[str, int] = {"pfld": 112, "mobilenetv3_small": 224}

# Real data: the usual PFLD recipe (AdamW, lr 1e-3, cosine, 1 warm-up epoch).
DEFAULT_RECIPE: Dict[str, Any] = dict(epochs=60, input_size=None, model_width=1.0, lr=1e-3, rotation=30.0)
# The synthetic faces: half-width PFLD at 64 px trains ~4x faster than the full one at 112 px on a
# CPU and the faces are simple. Measured on 800 faces: at lr 1e-3 and +-30 degrees the loss stalls
# at a mean-shape-like 6.5 px error for 10 epochs (val NME 0.168); lr 3e-3 with +-15 degrees (the
# faces are drawn turned by up to 35 degrees already) leaves it after 5 epochs.
SYNTHETIC_RECIPE: Dict[str, Any] = dict(epochs=20, input_size=64, model_width=0.5, lr=3e-3, rotation=15.0)


@dataclasses.dataclass
class LandmarkConfig(BaseTrainConfig):
    """Everything a landmark training run needs (see the module docstring)."""

    FIELD_ORDER: ClassVar[Tuple[str, ...]] = (
        "data", "val", "image_root", "scheme", "model", "model_width", "input_size", "loss", "crop_margin",
        "optimizer", "lr", "momentum", "weight_decay", "epochs", "batch_size", "schedule", "decay_epochs", "gamma",
        "warmup_epochs", "min_lr", "sam", "sam_rho", "sam_adaptive", "grad_clip", "augment", "rotation",
        "aug_scale", "shift", "flip", "workers", "output", "overwrite", "resume", "device", "amp", "seed",
        "eval_every", "save_every", "max_steps_per_epoch", "progress", "tensorboard", "synthetic_train",
        "synthetic_val", "synthetic_root")

    data: str = shared_option("data", help="training faces: a WFLW list (list_98pt_rect_attr_*.txt or the "
                              "68-point one), a folder of 300W .pts files (images beside them), or 'synthetic' "
                              "(built-in drawn faces with true points)")
    optimizer: str = shared_option("optimizer", "adamw")
    lr: Optional[float] = shared_option("lr", None, "learning rate (default 1e-3; 3e-3 for the synthetic data)")
    weight_decay: float = shared_option("weight_decay", 1e-4)
    epochs: Optional[int] = shared_option("epochs", None, "epochs (default 60; 20 for the synthetic data)")
    batch_size: int = shared_option("batch_size", 32)
    warmup_epochs: float = shared_option("warmup_epochs", 1.0)
    output: Optional[str] = shared_option("output", help="run folder; one that holds a run is refused without "
                                          f"--resume or --overwrite (default {DEFAULT_OUTPUT}, or "
                                          f"{DEFAULT_OUTPUT}2, 3, ... when that holds a run)")
    eval_every: Optional[int] = shared_option("eval_every", 1, "NME / FR / AUC on the val faces every K epochs "
                                              "(and after the last), 0 never")

    val: Optional[str] = option(None, "val faces (WFLW list or .pts folder), or 'none' (default: the synthetic "
                                "set's val split for synthetic data, else none)", kind=str, resumable=True)
    image_root: Optional[str] = option(None, "folder the WFLW lists' image paths are relative to (default: "
                                       "images/ beside the list when it exists, else the list's folder)",
                                       kind=str, resumable=True)
    scheme: Optional[str] = option(None, "landmark scheme (default: the data's point count; synthetic: "
                                   f"{DEFAULT_SCHEME})", kind=str, choices=tuple(SCHEMES))
    model: str = option("pfld", "landmark network: pfld, mobilenetv3_small or timm:<name>", kind=str)
    model_width: Optional[float] = option(None, "pfld channel multiplier (default 1.0; 0.5 for the synthetic "
                                          "data)", kind=float, low=0, low_open=True)
    input_size: Optional[int] = option(None, "square crop size in pixels (default: the network's own, pfld "
                                       "112, mobilenetv3_small 224; 64 for the synthetic data)", kind=int, low=32)
    loss: str = option("wing", "regression loss: wing (Feng et al. 2018, w=10, eps=2 in input pixels), l1 or "
                       "mse (on normalised crop coordinates)", kind=str, choices=LOSSES)
    crop_margin: float = option(0.1, "crop: the face box's longer side plus this fraction on each side",
                                kind=float, low=0, high=1)
    augment: bool = option(True, "training augmentation (rotation, scale, shift, flip with the scheme's "
                           "mirror permutation, colour)", flag="--no-augment")
    rotation: Optional[float] = option(None, "augmentation: rotation up to +- this many degrees (default 30; "
                                       "15 for the synthetic data)", kind=float, low=0, high=180)
    aug_scale: float = option(0.1, "augmentation: crop side scaled by up to +- this fraction", kind=float,
                              low=0, high=0.9)
    shift: float = option(0.08, "augmentation: crop centre shifted by up to +- this fraction of its side",
                          kind=float, low=0, high=0.9)
    flip: float = option(0.5, "augmentation: horizontal flip probability", kind=float, low=0, high=1)
    tensorboard: bool = option(True, "TensorBoard logs in the run folder when tensorboard is installed",
                               flag="--no-tensorboard", resumable=True)
    synthetic_train: int = option(800, "synthetic data: training faces", kind=int, low=2)
    synthetic_val: int = option(200, "synthetic data: val faces", kind=int, low=1)
    synthetic_root: Optional[str] = option(None, "synthetic data: where it is generated, once (default "
                                           f"{SYNTHETIC_ROOT}/<train>-<val>)", kind=str)

    def resolved(self) -> "LandmarkConfig":
        """A validated copy with the ``None`` defaults of the recipe filled in."""
        self.validate()
        recipe = dict(DEFAULT_RECIPE)
        if self.data == SYNTHETIC_DATA:
            recipe.update(SYNTHETIC_RECIPE)
        if self.model != "pfld":
            recipe.pop("model_width")  # the recipe's half width is PFLD's multiplier; the others have none
        values = dataclasses.asdict(self)
        for key, value in recipe.items():
            if values[key] is None:
                values[key] = value
        if values["input_size"] is None:
            values["input_size"] = MODEL_INPUT_SIZES.get(self.model, 224)
        out = LandmarkConfig(**values)
        out.validate()
        return out

    def validate(self) -> None:
        """Raise ``ValueError`` naming the flag for any impossible value."""
        super().validate()
        if not (self.model.startswith("timm:") or self.model in ("pfld", "mobilenetv3_small")):
            raise ValueError(f"--model: {self.model!r} is not pfld, mobilenetv3_small or timm:<name>")
        if self.model_width is not None and self.model_width != 1.0 and self.model != "pfld":
            raise ValueError(f"--model-width: only pfld has a width multiplier, not {self.model}")
        if self.model == "pfld" and self.input_size is not None and self.input_size % 16:
            raise ValueError(f"--input-size: pfld needs a multiple of 16, got {self.input_size}")

    def model_kwargs(self) -> Dict[str, Any]:
        """The network builder's extra arguments."""
        return {"width": float(self.model_width)} if self.model == "pfld" and self.model_width is not None else {}


FIELDS = config_field_table(LandmarkConfig)


def merge_resume(given: Mapping[str, Any], saved: Mapping[str, Any]) -> Dict[str, Any]:
    """LandmarkConfig keyword arguments of a resumed run (the engine's rule:
    :func:`retinaface.engine.config.merge_resume`)."""
    return merge_engine_resume(given, saved, LandmarkConfig)


def synthetic_root(config: LandmarkConfig) -> Path:
    """Where the synthetic faces of ``config``'s size live (one folder per size)."""
    if config.synthetic_root:
        return Path(config.synthetic_root)
    return SYNTHETIC_ROOT / f"{config.synthetic_train}-{config.synthetic_val}"
