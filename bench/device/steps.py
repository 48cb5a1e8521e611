"""The steps of the GPU check, one per process: ``python bench/device/steps.py STEP --figures FILE ...``.

``check.py`` runs each step in its own process group with a time box. A step writes its figures to ``FILE``
(JSON) after every part it finishes, so that a step cut at its time box, or killed by a CUDA fault, still
reports what it measured before. A step exits 0 when everything it ran worked, 1 otherwise.

Steps (``--tiny`` makes each a seconds-long CPU check of the same code path; its figures mean nothing):

- ``env``: interpreter, torch and its CUDA device, the driver, and every carried package importable at a
  version that satisfies what the other carried packages ask for (torch must be the device's, not carried);
- ``cuda_tests``: ``pytest -m cuda`` over the test files that carry the marker;
- ``models``: 20 bf16 training steps of every registered model, through ``worker.engine.fit``: images/s, peak
  memory, a finite loss;
- ``vit_s``: one ViT-S trial on the service's fast path: the trial summary's MFU;
- ``fast_path``: ViT-tiny with the fast-path switches turned on one at a time: images/s and data wait;
- ``sweep``: ``bench/gpu_sweep.py`` with ViT-tiny, the studies' way against the service with several slot
  counts;
- ``hang``: writes one figure and sleeps, with a child in a process group of its own; only for the tests
  of the time box.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))  # gpu_sweep: the bench's model sizes, batches and sweep
import gpu_sweep  # noqa: E402
from device.wheelset import DROPS, canonical  # noqa: E402

MiB = 2**20
# Every registered model's defaults at 32x32 on a GPU; on the CPU (tiny) these small overrides, as in
# tests/vitmodels/test_models.py, keep each run to a second or two.
TINY_ARCH: dict[str, dict[str, Any]] = {
    "convmixer": {"dim": 32, "depth": 2},
    "mlp_mixer": {"num_blocks": 2, "embed_dim": 32},
    "mlp_mixer_b16": {"num_blocks": 1, "embed_dim": 64},
    "mlp_mixer_s16": {"num_blocks": 1, "embed_dim": 64},
    "perceiver": {"depth": 1, "num_latents": 16, "latent_dim": 32},
    "perceiver_io": {"depth": 1, "num_latents": 16, "latent_dim": 32, "queries_dim": 32},
    "swin": {"embed_dim": 16, "depths": [1, 1, 2, 1], "num_heads": [1, 2, 2, 4]},
    "tnt": {"depth": 1, "patch_dim": 32},
    "tnt_s": {"depth": 1},
    "vit": {"num_layers": 2, "hidden_dim": 64, "mlp_dim": 64},
    "vit_conv": {"depth": 2, "dim": 64, "mlp_dim": 64},
    "vit_stn": {"num_layers": 2, "hidden_dim": 64, "mlp_dim": 64},
}
# What every carried package is imported as, for the env step (the device lacks them; see wheelset.py).
CARRIED_IMPORTS = ("optuna", "mlflow", "sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "pydantic",
                   "pydantic_core", "pydantic_settings", "typer", "cmaes", "kornia", "kornia_rs", "perceiver_pytorch",
                   "transformer_in_transformer", "einops", "httpx", "rich", "server.main", "worker.worker")


@dataclass(frozen=True)
class Sizes:
    """The sizes of one check: the GPU's, or the tiny CPU ones."""

    img_size: int
    model_batch: int
    model_steps: int
    num_train: int  # fast path, ViT-S and the sweep share one data size, so compiled graphs are reused
    num_val: int
    loader_workers: int
    fast_model: str  # a key of gpu_sweep.MODELS
    mfu_model: str
    epochs: int  # fast path and ViT-S: the first epoch pays for compilation; the figures are the last one's
    sweep_trials: int
    sweep_slots: str

    @staticmethod
    def of(tiny: bool) -> Sizes:
        if tiny:
            return Sizes(img_size=16, model_batch=8, model_steps=3, num_train=256, num_val=64, loader_workers=1,
                         fast_model="tiny", mfu_model="tiny", epochs=2, sweep_trials=2, sweep_slots="1,auto")
        # ViT-tiny and ViT-S at 32x32; 20,000 training images keep a ViT-tiny epoch near a second on an H100.
        # Slot counts in order of value, since the sweep is the step most likely to reach its time box: the
        # README's 4 first, then auto, then one trial at a time.
        return Sizes(img_size=32, model_batch=128, model_steps=20, num_train=20_000, num_val=5_000,
                     loader_workers=8, fast_model="vit_tiny", mfu_model="vit_s", epochs=3, sweep_trials=8,
                     sweep_slots="4,auto,1,2")


class Figures:
    """The figures of one step, rewritten to ``path`` (atomically) after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


@dataclass
class Context:
    """What every step gets: the device, the sizes, the shared scratch folder and its own figures."""

    device: str
    tiny: bool
    work: Path
    figures: Figures
    sizes: Sizes

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- shared pieces -----------------------------------------------------------------------------------------


def experiment(model: str, arch: dict[str, Any], *, img_size: int, augment: str = "standard",
               **train: Any) -> Any:
    """A one-trial ``ExperimentSpec`` as the service would validate it (the engine takes nothing else)."""
    from server.core.spec import ExperimentSpec

    base = {"epochs": 1, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "scheduler": "constant",
            "svc_probe": False, "plots": False, "seed": 0}
    return ExperimentSpec.model_validate({
        "name": f"check-{model}".replace("_", "-"),
        "dataset": {"name": "synthetic", "img_size": img_size, "augment": augment},
        "model": {"name": model, "arch": arch},
        "train": base | train,
        "matrix": {"train.seed": [0]},
    })


def synthetic(ctx: Context, num_samples: int, num_classes: int = 10) -> Any:
    """The generated, learnable data set at the check's image size (80% training, 20% validation)."""
    from worker.data import load_dataset

    return load_dataset("synthetic", root=ctx.work / "data", img_size=ctx.sizes.img_size, in_chans=3,
                        num_samples=num_samples, num_classes=num_classes)


def train(ctx: Context, model: Any, data: Any, spec: Any, workdir: Path) -> Any:
    """``worker.engine.fit`` on the check's device, reporting nowhere, checkpoints under ``workdir``."""
    import torch

    from worker.engine import fit

    result = fit(model, data, spec, device=torch.device(ctx.device), on_epoch=lambda _: None, workdir=workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def release(device: str) -> None:
    """Forget the last run: its compiled graphs (the next run compiles its own, from the disk cache where it
    can, as the next trial of a slot does) and its GPU memory, so that each run's peak is its own."""
    import gc

    import torch
    import torch._dynamo

    torch._dynamo.reset()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


# -- env ---------------------------------------------------------------------------------------------------


def step_env(ctx: Context) -> bool:
    """Where everything comes from: a wrong torch or a missing package shows here first, in seconds."""
    import importlib

    import torch

    fig = ctx.figures
    fig.set("python", platform.python_version())
    fig.set("torch", torch.__version__)
    fig.set("torch_path", str(Path(torch.__file__).parent))
    fig.set("cuda_available", torch.cuda.is_available())
    fig.set("cpu_count", os.cpu_count())
    site = os.environ.get("CHECK_SITE")  # where check.sh installed the carried wheels, if it did
    fig.set("carried_site", site)
    ok = True
    if site and Path(torch.__file__).resolve().is_relative_to(Path(site).resolve()):
        log(f"torch comes from the carried wheels at {site}, not from the device")
        ok = False
    if ctx.on_gpu:
        if not torch.cuda.is_available():
            log(f"--device {ctx.device} but torch sees no CUDA device")
            return False
        dev = torch.device(ctx.device)
        fig.set("device_name", torch.cuda.get_device_name(dev))
        fig.set("capability", ".".join(map(str, torch.cuda.get_device_capability(dev))))
        fig.set("bf16_supported", torch.cuda.is_bf16_supported())
        fig.set("memory_gib", round(torch.cuda.get_device_properties(dev).total_memory / 2**30, 1))
        fig.set("cuda_runtime", torch.version.cuda)
        fig.set("cudnn", torch.backends.cudnn.version())
        fig.set("driver", _nvidia_smi("--query-gpu=driver_version,clocks.max.sm,power.limit"))
    imports: dict[str, str] = {}
    for name in CARRIED_IMPORTS:
        try:
            mod = importlib.import_module(name)
            imports[name] = str(getattr(mod, "__version__", "ok"))
        except Exception as exc:  # any failure to import is the finding
            imports[name] = f"ERROR {type(exc).__name__}: {exc}"
            ok = False
    fig.set("imports", imports)
    problems = _unsatisfied(site) if site else []
    fig.set("unsatisfied_requirements", problems)
    for line in problems:
        log(f"requirement not met: {line}")
    ok &= not [p for p in problems if "on purpose" not in p]
    for name, value in imports.items():
        log(f"import {name}: {value}")
    return ok


def _nvidia_smi(query: str) -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "nvidia-smi timed out"
    return out.stdout.strip() or out.stderr.strip()


def _unsatisfied(site: str) -> list[str]:
    """Requirements of the carried distributions that what is importable does not meet (``pip check`` for the
    carried part: the device's own packages at their versions against our pins' needs). What wheelset.py
    leaves out on purpose is marked as such."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    env = {"extra": ""}
    problems = []
    for dist in md.distributions(path=[site]):
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            try:
                have = md.version(req.name)
            except md.PackageNotFoundError:
                why = DROPS.get(canonical(req.name))
                problems.append(f"{dist.metadata['Name']} needs {req}, which is missing"
                                + (f" (left out on purpose: {why})" if why else ""))
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{dist.metadata['Name']} needs {req}, found {req.name} {have}")
    return sorted(problems)


# -- cuda_tests ----------------------------------------------------------------------------------------------


def step_cuda_tests(ctx: Context) -> bool:
    """The tests marked ``cuda`` (they skip without a GPU), run from the test files that carry the marker."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                   if "pytest.mark.cuda" in p.read_text(errors="replace"))
    ctx.figures.set("files", files)
    if not files:
        log("no test file carries pytest.mark.cuda")
        return False
    xml = ctx.work / "cuda-tests.xml"
    argv = [sys.executable, "-m", "pytest", "-o", "addopts=-ra", "-m", "cuda", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *files]
    log(" ".join(argv))
    rc = subprocess.run(argv, cwd=ROOT).returncode
    ctx.figures.set("pytest_rc", rc)
    if not xml.exists():
        return False
    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        log(f"no testsuite in {xml}")
        return False
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    ctx.figures.set("collected", counts["tests"])
    ctx.figures.set("passed", counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"])
    ctx.figures.set("failed", counts["failures"] + counts["errors"])
    ctx.figures.set("skipped", counts["skipped"])
    ctx.figures.set("failures", failed)
    if ctx.on_gpu and counts["skipped"]:
        log(f"{counts['skipped']} CUDA test(s) skipped on {ctx.device}")
        return False
    return rc == 0 and counts["tests"] > 0


# -- models ------------------------------------------------------------------------------------------------


def step_models(ctx: Context) -> bool:
    """A short bf16 training run of every registered model: each family's GPU path runs, and what it costs."""
    import torch

    from vitmodels import create_model, list_models

    s = ctx.sizes
    data = synthetic(ctx, num_samples=math.ceil(s.model_batch * s.model_steps / 0.8) + 2 * s.model_batch)
    names = list_models()
    ctx.figures.set("models", {})
    ctx.figures.set("steps", s.model_steps)
    ctx.figures.set("batch", s.model_batch)
    ok = True
    for name in names:
        arch = TINY_ARCH.get(name, {}) if ctx.tiny else {}
        row: dict[str, Any] = {}
        start = time.perf_counter()
        try:
            spec = experiment(name, arch, img_size=s.img_size, batch_size=s.model_batch, precision="bf16",
                              max_inputs=s.model_batch * s.model_steps)
            torch.manual_seed(0)
            model = create_model(name, num_classes=data.num_classes, img_size=s.img_size, **arch)
            result = train(ctx, model, data, spec, ctx.work / "runs" / name)
            loss = result.final["train_loss"]
            row = {"param_count": int(result.summary["param_count"]), "images_per_s": round(result.final["images_per_second"], 1),
                   "peak_memory_mib": round(result.summary["peak_memory_bytes"] / MiB, 1),
                   "train_loss": round(loss, 4), "finite": math.isfinite(loss)}
            ok &= row["finite"]
        except Exception as exc:  # a family that fails is the finding; the others still run
            row = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            traceback.print_exc()
            ok = False
        row["seconds"] = round(time.perf_counter() - start, 2)
        log(f"{name}: {row}")
        ctx.figures.data["models"][name] = row
        ctx.figures.save()
        release(ctx.device)
    return ok


# -- fast path -------------------------------------------------------------------------------------------------

# Each row turns one more switch of TrainSpec on, from the studies' way (fp32, foreach AdamW, the math
# attention kernel, a DataLoader, eager) to the service's fast path; the last row is the fast path with a
# DataLoader instead of device-resident data, to show what the data path alone is worth.
FAST_PATH: tuple[tuple[str, dict[str, Any]], ...] = (
    ("studies: fp32, foreach AdamW, math attention, DataLoader, eager",
     {"precision": "fp32", "fused_optimizer": False, "fused_attention": False, "data_on_device": False}),
    ("+ bf16 autocast", {"precision": "bf16"}),
    ("+ fused AdamW", {"fused_optimizer": True}),
    ("+ SDPA fused attention", {"fused_attention": True}),
    ("+ data on device", {"data_on_device": True}),
    ("+ torch.compile", {"compile": True}),
    ("+ compile reduce-overhead (CUDA graphs)", {"compile_mode": "reduce-overhead"}),
    ("fast path with a DataLoader instead", {"compile_mode": "default", "data_on_device": False}),
)


def step_fast_path(ctx: Context) -> bool:
    """ViT-tiny, switch by switch: images/s and data wait of the last epoch (the first pays for compiling)."""
    import torch

    from vitmodels import create_model

    s = ctx.sizes
    arch = gpu_sweep.MODELS[s.fast_model]
    batch = gpu_sweep.SERVICE_BATCH[s.fast_model]
    data = synthetic(ctx, num_samples=s.num_train + s.num_val)
    ctx.figures.set("model", s.fast_model)
    ctx.figures.set("batch", batch)
    ctx.figures.set("rows", [])
    switches: dict[str, Any] = {"num_workers": s.loader_workers}
    ok, reference = True, None
    for label, change in FAST_PATH:
        switches |= change
        row: dict[str, Any] = {"row": label, "switches": dict(switches)}
        if ctx.tiny and switches.get("compile"):
            # Compiling on two CPU cores takes minutes; tests/worker/test_engine.py covers compile on the CPU.
            row["skipped"] = "compile is measured on the GPU only"
            ctx.figures.data["rows"].append(row)
            ctx.figures.save()
            continue
        start = time.perf_counter()
        try:
            spec = experiment("vit", arch, img_size=s.img_size, batch_size=batch, epochs=s.epochs, **switches)
            torch.manual_seed(0)
            model = create_model("vit", num_classes=data.num_classes, img_size=s.img_size, **arch)
            result = train(ctx, model, data, spec, ctx.work / "runs" / "fast-path")
            last = result.history[-1]
            row |= {"images_per_s": round(last["images_per_second"], 1), "data_wait": round(last["data_wait"], 4),
                    "first_epoch_s": round(result.history[0]["epoch_seconds"], 2),
                    "last_epoch_s": round(last["epoch_seconds"], 2),
                    "peak_memory_mib": round(result.summary["peak_memory_bytes"] / MiB, 1),
                    "train_loss": round(last["train_loss"], 4)}
            reference = reference or row["images_per_s"]
            row["speedup"] = round(row["images_per_s"] / reference, 2) if reference else None
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
            traceback.print_exc()
            ok = False
        row["seconds"] = round(time.perf_counter() - start, 2)
        log(f"{label}: {row}")
        ctx.figures.data["rows"].append(row)
        ctx.figures.save()
        release(ctx.device)
    return ok


# -- ViT-S MFU -----------------------------------------------------------------------------------------------


def step_vit_s(ctx: Context) -> bool:
    """One ViT-S trial as the service runs it (bf16, compiled, fused, data on device): the summary's MFU."""
    import torch

    from vitmodels import create_model
    from worker.engine import stats
    from worker.engine.precision import resolve_precision

    s = ctx.sizes
    arch = gpu_sweep.MODELS[s.mfu_model]
    batch = gpu_sweep.SERVICE_BATCH[s.mfu_model]
    data = synthetic(ctx, num_samples=s.num_train + s.num_val)
    fast: dict[str, Any] = {"precision": "bf16", "compile": True} if ctx.on_gpu else {}
    spec = experiment("vit", arch, img_size=s.img_size, batch_size=batch, epochs=s.epochs, **fast)
    ctx.figures.set("model", s.mfu_model)
    ctx.figures.set("batch", batch)
    ctx.figures.set("train", spec.train.model_dump(include={"precision", "compile", "compile_mode", "fused_optimizer",
                                                            "fused_attention", "data_on_device"}))
    torch.manual_seed(0)
    model = create_model("vit", num_classes=data.num_classes, img_size=s.img_size, **arch)
    result = train(ctx, model, data, spec, ctx.work / "runs" / "vit-s")
    summary, last = result.summary, result.history[-1]
    device = torch.device(ctx.device)
    ctx.figures.set("epochs", [{"images_per_s": round(h["images_per_second"], 1), "seconds": round(h["epoch_seconds"], 2),
                                "data_wait": round(h["data_wait"], 4)} for h in result.history])
    ctx.figures.set("flops_per_image", summary["flops_per_image"])
    ctx.figures.set("param_count", int(summary["param_count"]))
    ctx.figures.set("peak_memory_mib", round(summary["peak_memory_bytes"] / MiB, 1))
    ctx.figures.set("images_per_s", round(summary["median_images_per_second"], 1))  # the median epoch, as the summary has it
    ctx.figures.set("mfu", summary.get("mfu"))  # the trial summary's figure (None off the GPU table)
    precision = resolve_precision(spec.train.precision, device).name
    ctx.figures.set("mfu_last_epoch", stats.mfu(summary["flops_per_image"], last["images_per_second"], device, precision))
    log(f"ViT-S: {ctx.figures.data}")
    return math.isfinite(last["train_loss"])


# -- sweep -----------------------------------------------------------------------------------------------------


def step_sweep(ctx: Context) -> bool:
    """``bench/gpu_sweep.py``: the studies' way, then the service with each slot count; it rewrites this
    step's figures after every side, and keeps the service's logs under the work folder."""
    s = ctx.sizes
    argv = ["--device", ctx.device, "--models", s.fast_model, "--trials", str(s.sweep_trials), "--epochs", "1",
            "--slots", s.sweep_slots, "--num-train", str(s.num_train), "--num-val", str(s.num_val),
            "--json", str(ctx.figures.path), "--workdir", str(ctx.work / "sweep")]
    if ctx.tiny:
        argv.append("--tiny")
    log("gpu_sweep.py " + " ".join(argv))
    return gpu_sweep.main(argv) == 0


# -- hang (tests only) -------------------------------------------------------------------------------------------


def step_hang(ctx: Context) -> bool:
    """Writes one figure and sleeps, with a child that left the process group as a worker's slots do: the
    tests cut it with a small time box and check that both are gone."""
    child = subprocess.Popen([sys.executable, "-c", "import os, time; os.setpgrp(); time.sleep(3600)"])
    ctx.figures.set("child_pid", child.pid)
    time.sleep(3600)
    return True


STEPS: dict[str, Callable[[Context], bool]] = {
    "env": step_env,
    "cuda_tests": step_cuda_tests,
    "models": step_models,
    "vit_s": step_vit_s,
    "fast_path": step_fast_path,
    "sweep": step_sweep,
    "hang": step_hang,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=list(STEPS))
    parser.add_argument("--device", default="cuda:0", help="cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="Tiny sizes: a CPU check that the step runs")
    parser.add_argument("--figures", type=Path, required=True, help="JSON file the step's figures go to")
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder shared by the steps")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        parser.error(f"--device must be cpu or cuda:N, got {args.device!r}")
    args.work.mkdir(parents=True, exist_ok=True)
    ctx = Context(args.device, args.tiny, args.work, Figures(args.figures), Sizes.of(args.tiny))
    ctx.figures.save()
    log(f"step {args.step} on {args.device}{' (tiny)' if args.tiny else ''}")
    try:
        ok = STEPS[args.step](ctx)
    except Exception:
        traceback.print_exc()
        ok = False
    log(f"step {args.step}: {'ok' if ok else 'failed'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
