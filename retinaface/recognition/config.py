"""Options of face-embedding training: :class:`RecognitionConfig`, the flags of
``retinaface train-recognition``.

It is a :class:`~retinaface.engine.config.BaseTrainConfig`: the options every training task
shares (optimizer, schedule, SAM, AMP, run folder, resume, ...) are declared there once and only
re-declared here where recognition has another default or help; the recognition options (network,
margin loss, augmentation, verification pairs, the synthetic identities) are its own.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple

from ..engine.config import BaseTrainConfig, config_field_table, merge_resume as merge_engine_resume, option, shared_option

SYNTHETIC_DATA = "synthetic"
SYNTHETIC_ROOT = Path("data/synthetic_identities")
DEFAULT_OUTPUT = "runs/recognition"
LOSSES = ("arcface", "cosface", "softmax-center")


# Defaults of the fields left None. The synthetic identities (2,000 crops of 100 people) train in
# about 10 minutes on 2 CPU cores: MobiFace at half width with the pooled head (~60 M multiply-adds
# instead of 225 M; ~16 s an epoch on a quiet 2-core machine), 20 epochs, verification every 5, and
# for ArcFace a softer scale and margin (s=32, m=0.3): with the standard s=64, m=0.5 the loss
# first rises and 12 epochs reached only 0.63 verification accuracy.
DEFAULT_RECIPE: Dict[str, Any] = dict(network_width=1.0, epochs=20, eval_every=1)
SYNTHETIC_RECIPE: Dict[str, Any] = dict(network_width=0.5, head="pool", epochs=20, eval_every=5)
SYNTHETIC_ARCFACE: Dict[str, Any] = dict(scale=32.0, margin=0.3)


@dataclasses.dataclass
class RecognitionConfig(BaseTrainConfig):
    """Everything a recognition training run needs. The ``retinaface train-recognition`` flags are
    generated from these fields (help, ranges and choices in their metadata)."""

    FIELD_ORDER: ClassVar[Tuple[str, ...]] = (
        "data", "val", "val_root", "network", "embedding_size", "network_width", "head", "loss", "margin", "scale",
        "optimizer", "lr", "momentum", "weight_decay", "epochs", "batch_size", "schedule", "decay_epochs", "gamma",
        "warmup_epochs", "min_lr", "sam", "sam_rho", "sam_adaptive", "grad_clip", "rotation", "aug_scale", "shift",
        "flip", "workers", "output", "overwrite", "resume", "device", "amp", "seed", "eval_every", "eval_flip",
        "save_every", "max_steps_per_epoch", "progress", "tensorboard", "synthetic_identities",
        "synthetic_test_identities", "synthetic_images", "synthetic_root")

    data: str = shared_option("data", help="training data: a folder with one sub-folder of aligned crops per "
                              "identity, an insightface .rec file, or 'synthetic' (built-in identities)")
    optimizer: str = shared_option("optimizer")
    lr: float = shared_option("lr", 0.1)
    epochs: Optional[int] = shared_option("epochs", None, "epochs (default 20)")
    batch_size: int = shared_option("batch_size", 64)
    schedule: str = shared_option("schedule")
    decay_epochs: Tuple[int, ...] = shared_option("decay_epochs", (10, 15))
    warmup_epochs: float = shared_option("warmup_epochs", 1.0)
    grad_clip: Optional[float] = shared_option("grad_clip", 5.0, "clip the gradient norm to this (margin losses "
                                               "start with large gradients)")
    output: Optional[str] = shared_option("output", help="run folder; one that holds a run is refused without "
                                          f"--resume or --overwrite (default {DEFAULT_OUTPUT}, or runs/recognition2, "
                                          "3, ... when that holds a run)")
    eval_every: Optional[int] = shared_option("eval_every", None, "verification every K epochs (and after the "
                                              "last), 0 never (default 1; 5 for the synthetic data)")

    val: Optional[str] = option(None, "verification pairs: a pairs.txt (LFW format), an insightface .bin, a "
                                "folder holding pairs.txt, or 'none' (default: the synthetic set's held-out "
                                "pairs for synthetic data, else none)", kind=str, resumable=True)
    val_root: Optional[str] = option(None, "image folder the --val pairs.txt names refer to (default: its "
                                     "folder)", kind=str, resumable=True)
    network: str = option("mobiface", "embedding network (mobiface, mobilefacenet, timm:<name>)", kind=str)
    embedding_size: int = option(512, "embedding dimension", kind=int, low=2)
    network_width: Optional[float] = option(None, "channel multiplier of the network (default 1.0; 0.5 for the "
                                            "synthetic data)", kind=float, low=0, low_open=True)
    head: Optional[str] = option(None, "mobiface embedding head: 'flatten' (the paper's FC over the 7x7 map) or "
                                 "'pool' (global average pooling first, 12.6M fewer parameters; default: the "
                                 "network's own, 'pool' for the synthetic data)", kind=str, choices=("flatten", "pool"))
    loss: str = option("arcface", "training objective", kind=str, choices=LOSSES)
    margin: Optional[float] = option(None, "loss margin (default: the loss's own: ArcFace 0.5, CosFace 0.35; "
                                     "ArcFace on the synthetic data 0.3)",
                                     kind=float, low=0)
    scale: Optional[float] = option(None, "logit scale s (default: the loss's own, 64; ArcFace on the synthetic "
                                    "data 32)", kind=float, low=0,
                                    low_open=True)
    rotation: float = option(45.0, "augmentation: random rotation up to +- this many degrees", kind=float,
                             low=0, high=180)
    aug_scale: float = option(0.15, "augmentation: random scale up to +- this fraction", kind=float, low=0,
                              high=0.9)
    shift: float = option(0.15, "augmentation: random shift up to +- this fraction of the size", kind=float,
                          low=0, high=0.9)
    flip: float = option(0.5, "augmentation: horizontal flip probability", kind=float, low=0, high=1)
    eval_flip: bool = option(False, "verification with flip-feature fusion", resumable=True)
    tensorboard: bool = option(True, "TensorBoard logs in the run folder when tensorboard is installed",
                               flag="--no-tensorboard", resumable=True)
    synthetic_identities: int = option(100, "synthetic data: training identities", kind=int, low=2)
    synthetic_test_identities: int = option(40, "synthetic data: held-out identities for verification",
                                            kind=int, low=2)
    synthetic_images: int = option(20, "synthetic data: images per identity", kind=int, low=2)
    synthetic_root: Optional[str] = option(None, "synthetic data: where it is generated, once (default "
                                           f"{SYNTHETIC_ROOT}/<identities>-<held-out>-<images>)", kind=str)

    def resolved(self) -> "RecognitionConfig":
        """A validated copy with the ``None`` defaults filled in: :data:`SYNTHETIC_RECIPE` for the
        synthetic identities (sized to train in about 10 minutes on 2 CPU cores), else
        :data:`DEFAULT_RECIPE`."""
        self.validate()
        recipe = dict(DEFAULT_RECIPE)
        if self.data == SYNTHETIC_DATA:
            recipe.update(SYNTHETIC_RECIPE)
            if self.loss == "arcface":
                recipe.update(SYNTHETIC_ARCFACE)
        values = dataclasses.asdict(self)
        for key, value in recipe.items():
            if values[key] is None:
                values[key] = value
        if values["network"] != "mobiface":
            values["head"] = self.head
        out = RecognitionConfig(**values)
        out.validate()
        return out

    def validate(self) -> None:
        """Raise ``ValueError`` naming the flag and its allowed range for any impossible value."""
        super().validate()
        if self.loss == "softmax-center" and (self.margin is not None or self.scale is not None):
            raise ValueError("--margin / --scale: the softmax-center loss has neither (ArcFace and CosFace do)")
        if self.head is not None and self.network != "mobiface":
            raise ValueError(f"--head: only the mobiface network has a choice of head, not {self.network}")


FIELDS = config_field_table(RecognitionConfig)
RESUMABLE = tuple(n for n, f in FIELDS.items() if f.metadata.get("resumable"))


def merge_resume(given: Mapping[str, Any], saved: Mapping[str, Any]) -> Dict[str, Any]:
    """RecognitionConfig keyword arguments for a resumed run: the ``given`` options over the
    resumed run's ``saved`` settings, by the detection trainer's rule
    (:func:`retinaface.engine.config.merge_resume`): what describes this machine (workers,
    progress) is this invocation's; a given option that may not change on resume and differs is a
    ``ValueError``."""
    return merge_engine_resume(given, saved, RecognitionConfig)


def synthetic_root(config: RecognitionConfig) -> Path:
    """Where the synthetic identities of ``config``'s size live (one folder per size, so another
    size never collides with a set already generated)."""
    if config.synthetic_root:
        return Path(config.synthetic_root)
    return SYNTHETIC_ROOT / f"{config.synthetic_identities}-{config.synthetic_test_identities}-{config.synthetic_images}"
