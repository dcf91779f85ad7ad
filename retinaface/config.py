"""``ModelConfig``: everything needed to rebuild a RetinaFace model, stored inside checkpoints."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

from .conventions import BOX_VARIANCES, FEATURE_STRIDES, PRIOR_MIN_SIZES


@dataclasses.dataclass
class ModelConfig:
    """Architecture of one RetinaFace variant.

    ``fpn_width=None`` takes the backbone's default (64 for mobilenet0.25, 256 otherwise).
    ``backbone_kwargs`` go to the backbone builder (e.g. a width multiplier).
    ``channels`` (set by pruning) maps layer names to pruned shapes, ``[in, out]`` for a conv and
    ``[n]`` for a batch norm; ``adaptive`` (set by :func:`retinaface.adaptive.make_adaptive`) makes
    the model width-switchable. Both are plain data, applied by :func:`retinaface.build.create_model`.
    ``steps`` must be the backbone's feature strides (checked when the model is built);
    ``num_classes`` is fixed at 2.
    """

    backbone: str = "mobilenet0.25"
    fpn_width: Optional[int] = None
    min_sizes: Tuple[Tuple[int, ...], ...] = PRIOR_MIN_SIZES
    steps: Tuple[int, ...] = FEATURE_STRIDES
    variances: Tuple[float, float] = BOX_VARIANCES
    num_classes: int = 2
    backbone_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    channels: Optional[Dict[str, List[int]]] = None
    adaptive: Optional[Dict[str, Any]] = None

    def __post_init__(self) -> None:
        self.min_sizes = tuple(tuple(int(v) for v in level) for level in self.min_sizes)
        self.steps = tuple(int(s) for s in self.steps)
        self.variances = (float(self.variances[0]), float(self.variances[1]))
        if len(self.min_sizes) != len(self.steps):
            raise ValueError(f"min_sizes has {len(self.min_sizes)} levels but steps has {len(self.steps)}")
        if len(self.steps) != len(FEATURE_STRIDES):
            raise ValueError(f"steps {self.steps} give {len(self.steps)} levels, but every backbone returns "
                             f"{len(FEATURE_STRIDES)} feature maps (strides {FEATURE_STRIDES}): one level each")
        if self.num_classes != 2:
            # heads, loss, decoding and export all treat class 1 as "face": other counts are not supported
            raise ValueError(f"num_classes must be 2 (background, face), got {self.num_classes}")
        if len({len(level) for level in self.min_sizes}) != 1:
            raise ValueError("every level needs the same number of anchor sizes")
        if self.fpn_width is not None and (self.fpn_width <= 0 or self.fpn_width % 4):
            raise ValueError(f"fpn_width must be a positive multiple of 4, got {self.fpn_width}")
        if self.channels is not None:
            self.channels = {str(name): [int(n) for n in shape] for name, shape in self.channels.items()}

    @property
    def num_anchors(self) -> int:
        return len(self.min_sizes[0])

    def to_dict(self) -> Dict[str, Any]:
        """Plain Python types only, so a checkpoint holding it loads with ``weights_only=True``."""
        out = dataclasses.asdict(self)
        out["min_sizes"] = [list(level) for level in self.min_sizes]
        out["steps"] = list(self.steps)
        out["variances"] = list(self.variances)
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config fields {unknown}")
        return cls(**data)
