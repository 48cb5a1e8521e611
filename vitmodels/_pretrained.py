"""Start a model from a local weights file: replace the classifier, resize position embeddings, check the rest.

Model hubs are unreachable where the workers run, so ``pretrained`` is always a path. The file may hold a
vitmodels state dict (keys ``backbone.*``, ``code.*``, ``head.*``) or the upstream model's own state dict (e.g. a
timm checkpoint). Backbone weights must fit (after timm's own ``checkpoint_filter_fn`` and position-embedding
resampling); the head and code layer are kept only where their shapes still fit, so a new ``num_classes``
gets a fresh head.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._wrap import Classifier
from .exceptions import PretrainedWeightsError

__all__ = ["load_pretrained", "read_state_dict"]

# Containers that training scripts wrap state dicts in, tried in this order.
_CONTAINER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or torch file (read with ``weights_only=True``: no code is executed).

    Raises:
        PretrainedWeightsError: the file is missing or holds no state dict.
    """
    file = Path(path)
    if not file.is_file():
        raise PretrainedWeightsError(
            f"pretrained weights file {str(file)!r} not found; weights load from local files only "
            "(model hubs are unreachable), so copy the file there first"
        )
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(file), device="cpu")
        else:
            data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: any reader error means the same to the caller
        raise PretrainedWeightsError(f"cannot read pretrained weights {str(file)!r}: {exc}") from exc
    for key in _CONTAINER_KEYS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise PretrainedWeightsError(f"{str(file)!r} does not hold a state dict of tensors")
    # Strip the prefixes DataParallel and torch.compile add.
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in data.items()}


def _resample_tokens(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Resample ``[1, prefix + side**2, D]`` token position embeddings to ``target``'s token count."""
    if value.dim() != 3 or value.shape[0] != 1 or value.shape[-1] != target.shape[-1]:
        return None
    old, new = value.shape[1], target.shape[1]
    old_side, new_side = math.isqrt(old), math.isqrt(new)
    prefix = old - old_side**2
    if prefix != new - new_side**2 or prefix >= min(old_side, new_side):
        return None
    from timm.layers import resample_abs_pos_embed

    resized = resample_abs_pos_embed(
        value, [new_side, new_side], [old_side, old_side], num_prefix_tokens=prefix
    )
    return resized.to(value.dtype)


def _resample_pos(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """``value`` resampled to ``target``'s shape if both look like the same position embedding at two sizes.

    Handles token-last ``[1, N, D]`` (timm, torchvision), channel-first ``[1, D, N]`` (``vit_conv``) and map
    ``[1, D, H, W]`` layouts; anything else returns None and is reported as not fitting.
    """
    if value.dim() == 3:
        resized = _resample_tokens(value, target)
        if resized is None and value.shape[:2] == target.shape[:2]:
            flipped = _resample_tokens(value.transpose(1, 2), target.transpose(1, 2))
            resized = None if flipped is None else flipped.transpose(1, 2).contiguous()
        return resized
    if value.dim() == 4 and target.dim() == 4 and value.shape[:2] == target.shape[:2]:
        resized = F.interpolate(value.float(), size=target.shape[-2:], mode="bicubic", align_corners=False)
        return resized.to(value.dtype)
    return None


def _filter_for(backbone: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply the upstream module's own ``checkpoint_filter_fn`` (timm: format conversion, resizing)."""
    module = sys.modules.get(type(backbone).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is None or not type(backbone).__module__.startswith("timm."):
        return state
    try:
        return filter_fn(state, backbone)
    except (KeyError, RuntimeError, ValueError, AssertionError) as exc:
        raise PretrainedWeightsError(
            f"timm could not adapt the weights to {type(backbone).__name__}: {exc}"
        ) from exc


def _load_backbone(part: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load ``state`` into ``part``, resampling position embeddings; every weight must fit."""
    own = part.state_dict()
    fitted: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, value in state.items():
        if key not in own:
            if not _dropped_classifier(part, key):
                problems.append(f"unexpected {where}{key}")
            continue
        if value.shape != own[key].shape:
            resized = _resample_pos(value, own[key]) if "pos" in key else None
            if resized is None:
                problems.append(
                    f"{where}{key} has shape {tuple(value.shape)}, the model {tuple(own[key].shape)}"
                )
                continue
            value = resized
        fitted[key] = value
    # Buffers derived from the shape (attention masks, index tables) are rebuilt by the model itself.
    problems += [f"missing {where}{k}" for k in own if k not in state and not _rebuilt_buffer(k)]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise PretrainedWeightsError(f"pretrained weights do not fit the model: {shown}")
    part.load_state_dict(fitted, strict=False)


def _rebuilt_buffer(key: str) -> bool:
    return key.endswith(("relative_position_index", "attn_mask"))


def _dropped_classifier(part: nn.Module, key: str) -> bool:
    """Whether ``key`` belongs to a module the model replaced by ``nn.Identity`` (its upstream classifier)."""
    names = key.split(".")[:-1]
    for end in range(1, len(names) + 1):
        try:
            module = part.get_submodule(".".join(names[:end]))
        except AttributeError:
            return False
        if isinstance(module, nn.Identity):
            return True
    return False


def load_pretrained(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load the weights at ``path`` into ``model`` (a :class:`Classifier`) for fine-tuning.

    Raises:
        PretrainedWeightsError: missing file, unreadable file, or backbone weights that do not fit.
    """
    state = read_state_dict(path)
    if not isinstance(model, Classifier):
        _load_backbone(model, state, "")
        return
    if any(k.startswith("backbone.") for k in state):
        backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        extras = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    else:
        backbone, extras = state, {}
    _load_backbone(model.backbone, _filter_for(model.backbone, backbone), "backbone.")
    # The code layer and head are reused only if they still fit whole (same code_size and num_classes).
    for name in ("code", "head"):
        part = getattr(model, name)
        own = part.state_dict()
        part_state = {k.removeprefix(f"{name}."): v for k, v in extras.items() if k.startswith(f"{name}.")}
        if own and part_state.keys() == own.keys() and all(part_state[k].shape == own[k].shape for k in own):
            part.load_state_dict(part_state)
