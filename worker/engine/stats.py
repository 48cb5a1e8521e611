"""Resource figures of a run: parameters, forward FLOPs, peak memory and model FLOPs utilisation."""

from __future__ import annotations

import ctypes
import gc
import sys
import threading

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


class PeakMemory:
    """The peak memory of one trial of a slot process, which runs many: each trial's figure is its own.

    On a GPU: the peak memory allocated by tensors and the peak reserved by PyTorch's caching allocator on the
    trial's device, from :func:`torch.cuda.reset_peak_memory_stats` at the start of the trial. On the CPU: the
    process's peak resident set while the trial ran. It starts from the resident set at the trial's start (the
    interpreter, libraries and the loaded dataset, once the allocator has handed back what earlier trials freed),
    not from the process's lifetime high-water mark (``ru_maxrss``), which only ever grows. Linux resets the
    kernel's own high-water mark (``/proc/self/clear_refs``, read back as ``VmHWM``); elsewhere the resident set
    is sampled every ``SAMPLE_SECONDS`` from a background thread (a shorter spike can be missed).
    """

    SAMPLE_SECONDS = 0.02

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._stop = threading.Event()
        self._sampled = 0
        self._sampler: threading.Thread | None = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            return
        gc.collect()
        _malloc_trim()  # give back the heap earlier trials freed, so the start is what the process holds now
        if not _reset_kernel_peak():
            self._sampled = _rss()
            self._sampler = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
            self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.SAMPLE_SECONDS):
            self._sampled = max(self._sampled, _rss())

    def figures(self) -> dict[str, float]:
        """``peak_memory_bytes`` (GPU: allocated; CPU: resident) and, on a GPU, ``peak_memory_reserved_bytes``."""
        if self.device.type == "cuda":
            return {"peak_memory_bytes": float(torch.cuda.max_memory_allocated(self.device)),
                    "peak_memory_reserved_bytes": float(torch.cuda.max_memory_reserved(self.device))}
        if self._sampler is None:
            return {"peak_memory_bytes": float(_kernel_peak())}
        self._sampled = max(self._sampled, _rss())
        return {"peak_memory_bytes": float(self._sampled)}

    def close(self) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=1.0)


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _reset_kernel_peak() -> bool:
    """Reset this process's resident-set high-water mark (Linux 4.0+); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _kernel_peak() > 0
    except OSError:
        return False


def _kernel_peak() -> int:
    """``VmHWM`` of ``/proc/self/status`` in bytes: the peak resident set since the last reset."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _malloc_trim() -> None:
    """glibc keeps freed heap memory mapped for reuse; ``malloc_trim(0)`` returns it to the system."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing to trim
        pass


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
