"""Checkpoints: ``last.pt`` (everything needed to resume) and ``best.pt`` (weights of the best epoch).

Files are written to a temporary name and renamed, so a worker killed mid-write never leaves a torn file.
Both hold only tensors and plain Python values and load with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = 1

log = logging.getLogger(__name__)


def save(state: dict[str, Any], path: Path) -> Path:
    """Write ``state`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)
    return path


def read(path: Path) -> dict[str, Any]:
    """The saved dict, on the CPU."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a checkpoint written by worker.engine.fit")
    return state


def load_checkpoint(path: Path | str, model: nn.Module) -> dict[str, Any]:
    """Load the weights saved at ``path`` (``last.pt`` or ``best.pt``) into ``model``; return the saved dict."""
    state = read(Path(path))
    model.load_state_dict(state["model"])
    return state


def rng_state(*generators: torch.Generator) -> dict[str, Any]:
    """The global torch RNG states (CPU and, if used, CUDA) and those of ``generators``."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "generators": [g.get_state() for g in generators],
        "generator_devices": [g.device.type for g in generators],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], *generators: torch.Generator) -> None:
    """Restore what ``rng_state`` saved, generator by generator in the same order.

    A trial may resume on another kind of device than it started on (a CPU worker picking up a GPU trial):
    generator states do not carry across device types, so those generators keep their fresh seeding and the
    run goes on, no longer bit-identical to an uninterrupted one.
    """
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):
            log.warning("checkpoint CUDA RNG state does not fit this machine's devices; not restored")
    saved = state["generators"]
    if len(saved) != len(generators):
        raise ValueError(f"checkpoint holds {len(saved)} generator states, expected {len(generators)}")
    devices = state.get("generator_devices", [g.device.type for g in generators])
    for gen, gen_state, device in zip(generators, saved, devices, strict=True):
        if device != gen.device.type:
            log.warning("generator saved on %s, resumed on %s: not restored", device, gen.device.type)
            continue
        gen.set_state(gen_state)
