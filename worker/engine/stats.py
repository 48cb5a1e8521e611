"""Resource figures of a run: parameters, forward FLOPs, peak memory and model FLOPs utilisation."""

from __future__ import annotations

import resource
import sys

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Dense peak FLOP/s by device-name fragment: (bf16/fp16 tensor cores, tf32, plain fp32). First match wins,
# so more specific names come first. Figures are the vendors' dense (no sparsity) numbers.
PEAK_FLOPS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("H200", (989e12, 494.7e12, 66.9e12)),
    ("H100 PCIe", (756e12, 378e12, 51.2e12)),
    ("H100 NVL", (835e12, 417.5e12, 60e12)),
    ("H100", (989e12, 494.7e12, 66.9e12)),
    ("GH200", (989e12, 494.7e12, 66.9e12)),
    ("B200", (2250e12, 1100e12, 80e12)),
    ("A100", (312e12, 156e12, 19.5e12)),
    ("L40S", (362e12, 183e12, 91.6e12)),
    ("L40", (181e12, 90.5e12, 90.5e12)),
    ("L4", (121e12, 60e12, 30.3e12)),
    ("A10G", (70e12, 35e12, 31.2e12)),
    ("A10", (125e12, 62.5e12, 31.2e12)),
    ("RTX 4090", (165e12, 82.6e12, 82.6e12)),
    ("RTX 3090", (71e12, 35.6e12, 35.6e12)),
    ("V100", (125e12, 15.7e12, 15.7e12)),
    ("T4", (65e12, 8.1e12, 8.1e12)),
)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> int:
    """FLOPs of one forward pass on one input of ``input_shape`` ([C,H,W]), in eval mode.

    Counted with autograd on, as training runs: without it ``nn.MultiheadAttention`` (torchvision's ViT) takes
    its fused inference path, whose projections the counter cannot see (a third of ViT-S's FLOPs went
    missing, and its MFU with them), and models that pass parameters into submodules (perceiver) break the
    counter's module tracking.
    """
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *input_shape, device=device)
        counter = FlopCounterMode(display=False)
        with torch.enable_grad(), counter:
            model(x)
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)


def reset_peak_memory(device: torch.device) -> None:
    """Start the peak-memory figure afresh, so that each trial of a slot process reports its own (CUDA only: a
    process's peak resident set cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: peak memory allocated on ``device`` since :func:`reset_peak_memory` (the trial's own, not the GPU's);
    CPU: the process's peak resident set."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak FLOP/s at ``precision`` (fp32 / fp16 / bf16), ``None`` if not in the table."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, (half, tf32, fp32) in PEAK_FLOPS:
        if fragment in name:
            if precision in ("bf16", "fp16"):
                return half
            return tf32 if torch.backends.cuda.matmul.allow_tf32 else fp32
    return None


def mfu(flops_per_image: float, images_per_second: float, device: torch.device, precision: str) -> float | None:
    """Model FLOPs utilisation of training: 3x forward FLOPs (forward plus backward) per second over the peak."""
    peak = peak_flops(device, precision)
    if peak is None or flops_per_image <= 0:
        return None
    return 3.0 * flops_per_image * images_per_second / peak
