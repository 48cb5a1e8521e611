"""Augmentation throughput on the CPU: every preset as kornia ops (what trials run) against the hand-written ops
it replaced (``bench/baseline/``), images/s side by side with the ratio kornia / hand-written.

``standard`` (and the crop-and-flip of ``cutout``) runs the hand-written gather in both columns: that is the
fast path a pipeline keeps (README, "Augmentation"); ``standard (kornia)`` is the same two ops through kornia,
for the figure that decided it. Short by design (a few batches per preset, well under a minute):

    .venv/bin/python bench/augment.py --batch 256 --img-size 32 --repeats 3
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/baseline, run as a script from the root

from bench.baseline import BASELINES
from worker.augment import Pipeline, build_augment, list_augments, preset_recipe


def images_per_second(fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor], images: torch.Tensor,
                      repeats: int) -> float:
    """Best of ``repeats`` timed calls on one batch, after one warm-up call."""
    gen = torch.Generator().manual_seed(0)
    fn(images, gen)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(images, gen)
        best = min(best, time.perf_counter() - start)
    return images.shape[0] / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: comparable figures)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = args.img_size
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, size, size), generator=gen, dtype=torch.uint8)
    print(f"CPU: {platform.processor() or platform.machine()}, {args.threads} thread(s); torch {torch.__version__}; "
          f"{date.today().isoformat()}; batch {args.batch} of 3x{size}x{size} uint8")
    kornia_standard = Pipeline(img_size=size, ops=preset_recipe("standard", img_size=size)["ops"], random_apply=False)
    rows: list[tuple[str, Callable | None, Callable]] = [
        (name, BASELINES[name](img_size=size) if name in BASELINES else None, build_augment(name, img_size=size))
        for name in list_augments() if name != "none"
    ]
    rows.insert(0, ("standard (kornia)", BASELINES["standard"](img_size=size), kornia_standard))
    print(f"{'preset':22} {'hand-written img/s':>19} {'kornia img/s':>13} {'kornia / hand':>14}")
    for name, baseline, pipeline in rows:
        ours = images_per_second(pipeline, images, args.repeats)
        if baseline is None:
            print(f"{name:22} {'-':>19} {ours:13,.0f} {'-':>14}")
            continue
        theirs = images_per_second(baseline, images, args.repeats)
        print(f"{name:22} {theirs:19,.0f} {ours:13,.0f} {ours / theirs:13.2f}x")


if __name__ == "__main__":
    main()
