"""Checkpoints: saving this toolkit's models and loading them, or Pytorch_Retinaface files, back.

:func:`load_model` is the door to a model from a checkpoint (a file or a zoo name); it rebuilds the
architecture with :func:`retinaface.build.create_model`.

This project's checkpoints are dicts ``{"format": "retinaface", "format_version": 1, "config": {...},
"model": state_dict, ...}`` holding only tensors and plain Python values, so they load with
``torch.load(..., weights_only=True)``; the config rebuilds the architecture with no flags.
Pytorch_Retinaface checkpoints are bare state dicts (keys ``body.*``, ``fpn.*``, ``ssh1.*``, ...,
optionally prefixed ``module.``); their backbone is given or inferred from the keys.
"""
from __future__ import annotations

import pickletools
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from .build import create_model
from .config import ModelConfig
from .fileio import atomic_torch_save
from .models import RetinaFace
from .models.wrappers import unwrap_model
from .zoo import ZooError, resolve_weights

FORMAT_NAME = "retinaface"
FORMAT_VERSION = 1
PathLike = Union[str, Path]


class CheckpointError(RuntimeError):
    """A file is not a usable checkpoint; the message names the file and what is wrong."""


def save_model(model: RetinaFace, path: PathLike, **extra: Any) -> None:
    """Write ``model`` (config + weights) and any ``extra`` entries atomically to ``path``."""
    model = unwrap_model(model)
    payload: Dict[str, Any] = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                               "config": model.config.to_dict(), "model": model.state_dict()}
    payload.update(extra)
    atomic_torch_save(payload, path)


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` and errors that name the file. ``path`` may be a
    zoo name (``retinaface_mnet025``: fetched and verified on first use, see :mod:`retinaface.zoo`)."""
    path = _resolve(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        what = _refused_content(exc, path)
        if what is not None:
            raise CheckpointError(f"{path}: refusing to load it: the file holds code or Python objects "
                                  f"({what}), not only tensors and plain values (a checkpoint is data, "
                                  f"never code)") from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt, truncated or "
                              f"another format: {type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(data).__name__}")
    return data


def _resolve(path: PathLike) -> Path:
    """A file path, or a zoo name fetched and verified (a zoo failure is a :class:`CheckpointError`)."""
    try:
        return resolve_weights(path)
    except ZooError as exc:
        raise CheckpointError(str(exc)) from None


# torch's weights-only unpickler names what it refused: "Unsupported global: GLOBAL x.y was not an
# allowed global" (a class) or "unsupported GLOBAL posix.system whose module posix is blocked" (a
# function: code) in torch 2.4-2.14. For opcodes it does not run it says "Unsupported operand N",
# which garbage bytes give too: then the file itself is scanned (never executed) to tell them apart.
_GLOBAL_RE = re.compile(r"unsupported global(?::\s*global)?\s+([\w.]+)", re.IGNORECASE)
_CODE_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"})


def _pickled_callable(path: Path) -> Optional[str]:
    """The first global (``module.name``) or code-running opcode a plain pickle file holds, found
    by walking its opcodes with :mod:`pickletools` (nothing is executed); None when the file is
    not a well-formed pickle or holds no such opcode."""
    strings: list = []
    try:
        with open(path, "rb") as handle:
            for opcode, arg, _ in pickletools.genops(handle):
                if isinstance(arg, str):
                    strings = (strings + [arg])[-2:]
                if opcode.name == "GLOBAL":
                    return str(arg).replace(" ", ".")
                if opcode.name == "STACK_GLOBAL":
                    return ".".join(strings) if len(strings) == 2 else "a global"
                if opcode.name in _CODE_OPCODES:
                    return f"pickle opcode {opcode.name}"
    except Exception:  # not a pickle (or a damaged one): genops stops at the first bad byte
        return None
    return None


def _refused_content(exc: BaseException, path: Path) -> Optional[str]:
    """What the weights-only unpickler refused (a global's name, an opcode), or None when ``exc``
    is not such a refusal (a damaged or foreign file)."""
    found = _GLOBAL_RE.search(str(exc))
    if found:
        return found.group(1)
    if "weights only load failed" not in str(exc).lower():
        return None
    return _pickled_callable(path)


def first_non_finite(state: Mapping[str, Any]) -> Optional[str]:
    """The name of the first floating-point tensor of ``state`` holding NaN or inf, else None."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


def strip_prefix(state: Mapping[str, Any], prefix: str = "module.") -> Dict[str, Any]:
    """Remove ``prefix`` from every key that has it (DataParallel files)."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def infer_legacy_backbone(state: Mapping[str, Any]) -> str:
    """Which backbone a Pytorch_Retinaface state dict was saved from."""
    if "body.stage1.0.0.weight" in state:
        return "mobilenet0.25"
    if "body.layer4.0.conv1.weight" in state:
        return "resnet50"
    raise CheckpointError("cannot infer the backbone from the keys (neither mobilenet0.25 nor "
                          "ResNet-50 layout); pass backbone=...")


def _legacy_config(state: Mapping[str, Any], backbone: Optional[str]) -> ModelConfig:
    if "fpn.output1.0.weight" not in state or "ClassHead.0.conv1x1.weight" not in state:
        raise CheckpointError("not a RetinaFace state dict (no fpn.output1 / ClassHead.0 keys)")
    width = int(state["fpn.output1.0.weight"].shape[0])
    anchors = int(state["ClassHead.0.conv1x1.weight"].shape[0]) // 2
    config = ModelConfig(backbone=backbone or infer_legacy_backbone(state), fpn_width=width)
    if anchors != config.num_anchors:
        raise CheckpointError(f"checkpoint has {anchors} anchors per location; expected {config.num_anchors}")
    return config


def _describe_mismatch(missing, unexpected) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(sorted(missing)[:4])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(sorted(unexpected)[:4])})")
    return "; ".join(parts)


def split_checkpoint(data: Dict[str, Any], backbone: Optional[str] = None) -> Tuple[ModelConfig, Dict[str, Any]]:
    """``(config, state_dict)`` from a loaded checkpoint of either format."""
    if data.get("format") == FORMAT_NAME:
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise CheckpointError(f"checkpoint format version {data['format_version']} is newer than "
                                  f"this toolkit understands ({FORMAT_VERSION}); upgrade retinaface")
        lacking = [key for key in ("config", "model") if not isinstance(data.get(key), dict)]
        if lacking:
            raise CheckpointError(f"retinaface checkpoint without its {' and '.join(lacking)} entry "
                                  f"(incomplete or damaged file)")
        config = ModelConfig.from_dict(data["config"])
        if backbone is not None and backbone != config.backbone:
            raise CheckpointError(f"checkpoint holds backbone {config.backbone!r}, not {backbone!r}")
        return config, dict(data["model"])
    state = data.get("state_dict", data) if isinstance(data.get("state_dict"), dict) else data
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("neither a retinaface checkpoint nor a state dict of tensors")
    state = strip_prefix(state)
    return _legacy_config(state, backbone), state


def load_model(path: PathLike, backbone: Optional[str] = None, device: Union[str, torch.device] = "cpu",
               eval_mode: bool = True, width: Optional[float] = None) -> RetinaFace:
    """Load a checkpoint of this toolkit or of Pytorch_Retinaface into a ready model.

    ``path`` is a file or a zoo name (``load_model("retinaface_mnet025")``; ``retinaface models``
    lists them): a file of that name wins. ``backbone`` is needed only for Pytorch_Retinaface files whose backbone cannot be inferred.
    ``width`` runs an adaptive (channel-prioritised) checkpoint at that utilisation level.
    Errors name the file and list missing/unexpected keys.
    """
    path = _resolve(path)
    data = read_checkpoint(path)
    try:
        config, state = split_checkpoint(data, backbone)
    except (CheckpointError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    try:
        model = create_model(config, width=width)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    own = model.state_dict()
    # num_batches_tracked is bookkeeping only; older files lack it
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit a {config.backbone} RetinaFace: "
                              f"{_describe_mismatch(missing, unexpected)}")
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise CheckpointError(f"{path}: shape mismatch: {'; '.join(wrong[:3])}")
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(f"{path}: weights are not finite (NaN or inf), first in {bad}; the run that "
                              f"wrote them diverged: use an earlier checkpoint")
    model.load_state_dict(state, strict=False)
    model.to(device)
    return model.eval() if eval_mode else model
