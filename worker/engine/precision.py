"""Mixed precision: the autocast dtype a ``precision`` setting means on a device, and its grad scaler."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch

PrecisionName = Literal["fp32", "fp16", "bf16", "auto"]


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``dtype`` is the autocast dtype, ``None`` for plain float32."""

    name: Literal["fp32", "fp16", "bf16"]
    device_type: str

    @property
    def dtype(self) -> torch.dtype | None:
        return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[self.name]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to ``dtype`` on the device, or a no-op for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, enabled for fp16 only (bf16 has float32's range and needs none)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")


def resolve_precision(name: PrecisionName, device: torch.device) -> Precision:
    """``auto`` is bf16 on a CUDA device that supports it and fp32 everywhere else."""
    if name == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return Precision("bf16" if cuda_bf16 else "fp32", device.type)
    if name not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"unknown precision {name!r}; valid: fp32, fp16, bf16, auto")
    return Precision(name, device.type)
