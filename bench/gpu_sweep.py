"""Sweep throughput: the same 16-trial sweep the studies' way and through the service, on one device.

For each model (ViT-tiny and ViT-S on CIFAR-shaped random data: 50,000 training and 10,000 validation images
of 3x32x32 uint8 with random labels, written once in CIFAR-10's own file format, so that both sides read the
same arrays and the service loads them as a ``cifar10`` dataset in a second), in one run on the same device:

  (a) the studies' way: one trial at a time; a torch DataLoader with 8 worker processes over a Dataset that
      applies torchvision transforms to each PIL image (RandomCrop(32, padding=4), RandomHorizontalFlip,
      ToTensor, Normalize); fp32; plain AdamW; batch 128; a validation pass every epoch;
  (b) the service: the real API (``vitsweep server``) and worker (``vitsweep worker`` with ``--slots``
      slots on the device), the sweep submitted over REST as a ``matrix`` over the learning rate, with the
      spec's fast options (device-resident data and augmentation, bf16 autocast, torch.compile, batch 512).

Both train the same model on the same data for the same epochs, with the same 16 learning rates. Printed
per side: aggregate training images/s (all trials' training images over the wall time, set-up included),
trials per hour, mean GPU utilisation (``nvidia-smi`` sampled every 0.5 s), MFU against the device's dense
bf16 peak (3x forward FLOPs per training image), and the ratio (b)/(a).

On an H100 (about 9 minutes for ViT-tiny, 1 epoch per trial; run ViT-S as a second command)::

    .venv/bin/python bench/gpu_sweep.py --device cuda:0 --models vit_tiny --epochs 1 --slots 4
    .venv/bin/python bench/gpu_sweep.py --device cuda:0 --models vit_s --epochs 1 --slots 2

``--slots 4,auto,1`` runs the service once per slot count, against one run of the studies' way; the JSON
(``--json``) is rewritten after every side, so a run cut short keeps what it measured.

On the CPU with tiny sizes (a check that everything runs; its figures mean nothing)::

    .venv/bin/python bench/gpu_sweep.py --device cpu --tiny --trials 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset


def vitsweep_command() -> list[str]:
    """The ``vitsweep`` console script next to this Python, or the CLI module where vitsweep is not installed
    (on the GPU machine the tree runs from ``PYTHONPATH``, without its entry points)."""
    script = Path(sys.executable).parent / "vitsweep"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]


MODELS: dict[str, dict[str, Any]] = {
    # ViT-tiny: 2.7M parameters; ViT-S: 10.7M parameters, 4.3 GFLOP per training image at 32x32.
    "vit_tiny": {"patch_size": 4, "num_layers": 6, "num_heads": 3, "hidden_dim": 192, "mlp_dim": 768},
    "vit_s": {"patch_size": 4, "num_layers": 6, "num_heads": 6, "hidden_dim": 384, "mlp_dim": 1536},
    "tiny": {"patch_size": 4, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64},
}
# The service's batch per model (the anchors: ViT-tiny at 512 for one process, ViT-S at 2048).
SERVICE_BATCH = {"vit_tiny": 512, "vit_s": 1024, "tiny": 32}
NUM_CLASSES = 10


@dataclass
class Side:
    """The figures of one way of running the sweep."""

    name: str
    trials: int = 0
    train_images: int = 0
    wall_s: float = 0.0
    trial_images_per_s: list[float] = field(default_factory=list)
    gpu_util: list[float] = field(default_factory=list)
    flops_per_image: float = 0.0
    peak_flops: float | None = None
    notes: str = ""

    @property
    def images_per_s(self) -> float:
        return self.train_images / self.wall_s if self.wall_s else 0.0

    @property
    def trials_per_hour(self) -> float:
        return 3600 * self.trials / self.wall_s if self.wall_s else 0.0

    @property
    def mfu(self) -> float | None:
        if not self.peak_flops or not self.flops_per_image:
            return None
        return 3 * self.flops_per_image * self.images_per_s / self.peak_flops

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "trials": self.trials, "train_images": self.train_images, "wall_s": self.wall_s,
            "images_per_s": self.images_per_s, "trials_per_hour": self.trials_per_hour,
            "median_trial_images_per_s": statistics.median(self.trial_images_per_s) if self.trial_images_per_s else None,
            "gpu_util_mean": statistics.fmean(self.gpu_util) if self.gpu_util else None,
            "mfu": self.mfu, "flops_per_image": self.flops_per_image, "notes": self.notes,
        }


# -- GPU utilisation --------------------------------------------------------------------------------------------


class GpuSampler:
    """Samples ``utilization.gpu`` of one GPU every 0.5 s with ``nvidia-smi -lms`` (nothing on the CPU)."""

    def __init__(self, device: str) -> None:
        self.samples: list[float] = []
        self._proc: subprocess.Popen[str] | None = None
        if not device.startswith("cuda") or shutil.which("nvidia-smi") is None:
            return
        index = device.partition(":")[2] or "0"
        visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        if visible and int(index) < len(visible):
            index = visible[int(index)].strip()
        self._argv = ["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                      "-lms", "500"]

    @contextmanager
    def sampling(self, into: list[float]) -> Iterator[None]:
        if not hasattr(self, "_argv"):
            yield
            return
        proc = subprocess.Popen(self._argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    into.append(float(line.strip()))
                except ValueError:
                    pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            reader.join(timeout=5)


# -- data ---------------------------------------------------------------------------------------------------------


def write_random_cifar(root: Path, num_train: int, num_val: int, seed: int = 0) -> None:
    """Random uint8 images and labels as CIFAR-10 python batches under ``root/cifar-10-batches-py``."""
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_batch = -(-num_train // 5)
    sizes = [min(per_batch, num_train - i * per_batch) for i in range(5)]
    for name, n in [*((f"data_batch_{i + 1}", sizes[i]) for i in range(5)), ("test_batch", num_val)]:
        batch = {b"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
                 b"labels": rng.integers(0, NUM_CLASSES, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [f"class_{k}".encode() for k in range(NUM_CLASSES)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def load_data(args: argparse.Namespace, root: Path) -> Any:
    from worker.data import load_dataset

    write_random_cifar(root, args.num_train, args.num_val)
    return load_dataset("cifar10", root=root, img_size=args.img_size)


def learning_rates(n: int) -> list[float]:
    """``n`` log-spaced learning rates from 1e-4 to 3e-3, rounded so that the spec carries them exactly."""
    if n == 1:
        return [1e-3]
    return [float(f"{1e-4 * (30 ** (i / (n - 1))):.3g}") for i in range(n)]


# -- (a) the studies' way ---------------------------------------------------------------------------------------


class StudiesDataset(Dataset[tuple[Any, int]]):
    """CIFAR-10 the way torchvision holds it: HWC uint8 arrays, a PIL image per item, transforms per item."""

    def __init__(self, images: Any, labels: Any, transform: Any) -> None:
        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()  # N,H,W,C like torchvision's CIFAR10
        self.targets = [int(x) for x in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        img = Image.fromarray(self.data[index])
        return self.transform(img), self.targets[index]


def run_studies_way(args: argparse.Namespace, model_name: str, data: Any, lrs: list[float], sampler: GpuSampler) -> Side:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    from vitmodels import create_model
    from worker.engine import stats

    device = torch.device(args.device)
    side = Side("(a) studies' way")
    normalize = T.Normalize(data.mean, data.std)
    size = args.img_size
    train_tf = T.Compose([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    val_tf = T.Compose([T.ToTensor(), normalize])
    train_set = StudiesDataset(data.train.images, data.train.labels, train_tf)
    val_set = StudiesDataset(data.val.images, data.val.labels, val_tf)
    workers = args.baseline_workers
    side.notes = f"DataLoader {workers} workers, torchvision transforms per PIL image, fp32, AdamW, batch {args.baseline_batch}"
    start = time.perf_counter()
    with sampler.sampling(side.gpu_util):
        for lr in lrs:
            torch.manual_seed(0)
            model = create_model("vit", num_classes=NUM_CLASSES, img_size=size, **MODELS[model_name]).to(device)
            if not side.flops_per_image:
                side.flops_per_image = float(stats.forward_flops(model, (3, size, size), device))
            optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
            criterion = torch.nn.CrossEntropyLoss()
            train_loader = DataLoader(train_set, batch_size=args.baseline_batch, shuffle=True, num_workers=workers,
                                      pin_memory=device.type == "cuda")
            val_loader = DataLoader(val_set, batch_size=args.baseline_batch, shuffle=False, num_workers=workers,
                                    pin_memory=device.type == "cuda")
            for _epoch in range(args.epochs):
                model.train()
                seen, t0 = 0, time.perf_counter()
                for images, labels in train_loader:
                    images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                    loss = criterion(model(images), labels)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    seen += len(labels)
                _ = loss.item()  # the usual per-epoch print of the last loss
                side.trial_images_per_s.append(seen / (time.perf_counter() - t0))
                side.train_images += seen
                model.eval()
                correct = 0
                with torch.no_grad():
                    for images, labels in val_loader:
                        out = model(images.to(device, non_blocking=True))
                        correct += int((out.argmax(1).cpu() == labels).sum())
            side.trials += 1
            del model, optimizer
    side.wall_s = time.perf_counter() - start
    return side


# -- (b) the service ------------------------------------------------------------------------------------------


def service_spec(args: argparse.Namespace, model_name: str, lrs: list[float]) -> dict[str, Any]:
    on_gpu = args.device.startswith("cuda")
    train: dict[str, Any] = {
        "epochs": args.epochs, "batch_size": args.service_batch or SERVICE_BATCH[model_name], "optimizer": "adamw",
        "lr": lrs[0],
        "weight_decay": 0.05, "scheduler": "constant", "precision": "bf16" if on_gpu else "fp32",
        "compile": on_gpu and not args.no_compile, "svc_probe": False, "plots": False,
        "checkpoint_every": args.epochs, "seed": 0,
    }
    train.update(json.loads(args.service_train) if args.service_train else {})
    return {
        "name": f"bench-{model_name}",
        "dataset": {"name": "cifar10", "img_size": args.img_size, "augment": "standard"},
        "model": {"name": "vit", "arch": MODELS[model_name]},
        "train": train,
        "matrix": {"train.lr": lrs},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``vitsweep server`` and ``vitsweep worker`` as subprocesses on a private home directory."""

    def __init__(self, home: Path, device: str, slots: str, data_dir: Path) -> None:
        self.home = home
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("VITSWEEP_")}
        self.env.update({"VITSWEEP_HOME": str(home), "VITSWEEP_API_PORT": str(port), "VITSWEEP_API_URL": self.url,
                         "VITSWEEP_POLL_SECONDS": "0.2", "VITSWEEP_DATA_DIR": str(data_dir)})
        self.device, self.slots = device, slots
        self.procs: list[subprocess.Popen[bytes]] = []
        self.worker_log = home / "worker.log"

    def start(self) -> None:
        import httpx

        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "api.log", "wb") as log:
            self.procs.append(subprocess.Popen([*vitsweep_command(), "server"], env=self.env, stdout=log,
                                               stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError(f"the API did not start; see {self.home / 'api.log'}")
            time.sleep(0.3)
        with open(self.worker_log, "wb") as log:
            self.procs.append(subprocess.Popen(
                [*vitsweep_command(), "worker", "--devices", self.device, "--slots-per-device", self.slots],
                env=self.env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 300
        while not re.search(r"worker \S+ started", self.worker_log.read_text(errors="replace")):  # a slot's claim loop
            if time.monotonic() > deadline or self.procs[1].poll() is not None:
                raise RuntimeError(f"the worker did not start; see {self.worker_log}")
            time.sleep(0.3)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=90)
            except subprocess.TimeoutExpired:
                p.kill()


def run_service(
    args: argparse.Namespace, model_name: str, lrs: list[float], sampler: GpuSampler, home: Path, data_dir: Path,
    slots: str,
) -> Side:
    import httpx

    side = Side(f"(b) service, {slots} slot(s)")
    spec = service_spec(args, model_name, lrs)
    from server.core.spec import TrainSpec

    t = TrainSpec.model_validate(spec["train"])  # the spec's own defaults for what the bench leaves unset
    side.notes = (f"batch {t.batch_size}, {t.precision}, compile {t.compile} ({t.compile_mode}), fused optimizer "
                  f"{t.fused_optimizer}, fused attention {t.fused_attention}, data on device {t.data_on_device}")
    service = Service(home, args.device, slots, data_dir)
    try:
        service.start()
        with sampler.sampling(side.gpu_util):
            submitted = time.time()
            response = httpx.post(f"{service.url}/api/v1/sweeps", json=spec, timeout=120)
            response.raise_for_status()
            sweep_id = response.json()["id"]
            deadline = time.monotonic() + args.service_timeout
            while True:
                state = httpx.get(f"{service.url}/api/v1/sweeps/{sweep_id}", timeout=30).json()["state"]
                if state not in ("pending", "running"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sweep {sweep_id} still {state} after {args.service_timeout}s; see {service.worker_log}")
                time.sleep(0.5)
        trials = httpx.get(f"{service.url}/api/v1/sweeps/{sweep_id}/trials", timeout=30).json()
    finally:
        service.stop()
    bad = [t for t in trials if t["state"] != "completed"]
    if bad:
        raise RuntimeError(f"{len(bad)} trial(s) did not complete: {[(t['number'], t['state'], t['error']) for t in bad][:3]}")
    last_end = max(datetime.fromisoformat(t["finished_at"]).timestamp() for t in trials)
    side.wall_s = last_end - submitted
    side.trials = len(trials)
    for t in trials:
        m = t.get("metrics") or {}
        side.train_images += int(m.get("inputs_seen", 0))
        rate = m.get("median_images_per_second", m.get("images_per_second"))  # the latter: older stores
        if rate:
            side.trial_images_per_s.append(float(rate))
        side.flops_per_image = float(m.get("flops_per_image", side.flops_per_image))
    slots_used = len({t["worker_id"] for t in trials})
    side.notes += f"; {slots_used} slot(s) took trials"
    return side


# -- report -------------------------------------------------------------------------------------------------------


def print_table(model_name: str, sides: list[Side]) -> None:
    print(f"\n== {model_name}: {sides[0].trials} trials ==")
    print(f"{'':34} {'images/s':>10} {'trials/h':>9} {'trial img/s':>12} {'GPU util':>9} {'MFU':>7} {'wall s':>8}")
    for s in sides:
        d = s.as_dict()
        util = f"{d['gpu_util_mean']:.0f}%" if d["gpu_util_mean"] is not None else "n/a"
        mfu = f"{100 * d['mfu']:.1f}%" if d["mfu"] is not None else "n/a"
        trial = d["median_trial_images_per_s"] or 0.0
        print(f"{s.name:34} {d['images_per_s']:10,.0f} {d['trials_per_hour']:9,.1f} {trial:12,.0f} {util:>9} "
              f"{mfu:>7} {d['wall_s']:8.1f}")
    for s in sides:
        print(f"  {s.name}: {s.notes}")
    a = sides[0]
    if a.name.startswith("(a)") and a.images_per_s:
        for b in sides[1:]:
            if b.images_per_s:
                print(f"ratio (b)/(a), {b.name[4:]}: images/s {b.images_per_s / a.images_per_s:.2f}x, "
                      f"trials/h {b.trials_per_hour / a.trials_per_hour:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0", help="cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="Tiny model and data (for a CPU check)")
    parser.add_argument("--models", default=None, help="Comma-separated: vit_tiny, vit_s, tiny")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--num-train", type=int, default=None, help="Training images (50,000; tiny: 200)")
    parser.add_argument("--num-val", type=int, default=None, help="Validation images (10,000; tiny: 40)")
    parser.add_argument("--slots", default="4",
                        help="Service slots on the device: a number or auto, or several separated by commas (one "
                             "service run each)")
    parser.add_argument("--baseline-batch", type=int, default=None)
    parser.add_argument("--baseline-workers", type=int, default=None)
    parser.add_argument("--service-batch", type=int, default=None, help="Default: 512 for ViT-tiny, 1024 for ViT-S")
    parser.add_argument("--service-train", default=None, help="JSON merged into the service spec's train section")
    parser.add_argument("--no-compile", action="store_true", help="Service trials without torch.compile")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument("--service-timeout", type=float, default=3600.0)
    parser.add_argument("--json", type=Path, help="Also write the figures to this file (after every side)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="Keep the data and each service's home (api.log, worker.log) here instead of a "
                             "temporary folder removed at the end")
    args = parser.parse_args(argv)
    tiny = args.tiny
    args.models = args.models or ("tiny" if tiny else "vit_tiny,vit_s")
    args.num_train = args.num_train or (200 if tiny else 50_000)
    args.num_val = args.num_val or (40 if tiny else 10_000)
    args.img_size = 16 if tiny else 32
    args.baseline_batch = args.baseline_batch or (32 if tiny else 128)
    args.baseline_workers = args.baseline_workers if args.baseline_workers is not None else (1 if tiny else 8)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    slot_counts = [v.strip() for v in args.slots.split(",") if v.strip()]
    bad = [v for v in slot_counts if v != "auto" and not (v.isdigit() and 1 <= int(v) <= 64)]
    if bad or not slot_counts:
        parser.error(f"--slots takes 1-64 or auto, comma-separated, got {args.slots!r}")

    import torch

    from worker.engine import stats

    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    peak = stats.peak_flops(device, "bf16") if device.type == "cuda" else None
    print(f"device: {name}; torch {torch.__version__}; {platform.node()}; {date.today().isoformat()}")
    if device.type == "cuda" and peak is None:
        print("  (device not in worker.engine.stats.PEAK_FLOPS: MFU not shown)")
    lrs = learning_rates(args.trials)
    sampler = GpuSampler(args.device)
    results: dict[str, Any] = {"device": name, "date": date.today().isoformat(),
                               "args": vars(args) | {"json": None, "workdir": None}}

    def save() -> None:
        if args.json:
            tmp = args.json.with_name(args.json.name + ".tmp")
            tmp.write_text(json.dumps(results, indent=2, default=str))
            os.replace(tmp, args.json)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="vitsweep-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    failed = 0
    try:
        made = time.perf_counter()
        data = load_data(args, work / "data")
        made = time.perf_counter() - made
        print(f"data: {len(data.train)} train + {len(data.val)} val random images, {args.img_size}x{args.img_size}, "
              f"written and read in {made:.1f}s; {args.trials} trials x {args.epochs} epoch(s); learning rates "
              f"{lrs[0]:g}..{lrs[-1]:g}")
        for model_name in models:
            sides: list[Side] = []
            results[model_name] = []
            plan = ([] if args.skip_baseline else [None]) + ([] if args.skip_service else slot_counts)
            for slots in plan:  # None: the studies' way
                label = "(a) studies' way" if slots is None else f"(b) service, {slots} slot(s)"
                try:
                    if slots is None:
                        side = run_studies_way(args, model_name, data, lrs, sampler)
                    else:
                        side = run_service(args, model_name, lrs, sampler, work / f"service-{model_name}-{slots}",
                                           work / "data", slots)
                except Exception as exc:  # one side failing leaves the others' figures standing
                    failed += 1
                    print(f"{label} failed: {type(exc).__name__}: {exc}", flush=True)
                    results[model_name].append({"name": label, "error": f"{type(exc).__name__}: {exc}"})
                    save()
                    continue
                side.peak_flops = peak
                sides.append(side)
                results[model_name].append(side.as_dict())
                save()
            if sides:
                print_table(model_name, sides)
            sys.stdout.flush()
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    save()
    if failed or any(math.isnan(s["images_per_s"]) for m in models for s in results.get(m, []) if "error" not in s):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
