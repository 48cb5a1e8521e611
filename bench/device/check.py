"""The GPU check in one call: every step of ``steps.py`` in its own time-boxed process, figures to ``--out``.

Each step runs in a process group of its own with a time box (its nominal box, cut to what is left of the
whole budget), so a hang or a CUDA fault costs that step only. After every step ``results.json`` in ``--out``
is rewritten with everything so far: per step its status (``ok``, ``failed``, ``timeout``, or ``skipped``
when no time was left), seconds, the figures it wrote before it ended, and the tail of its log. The full logs
go to ``logs.tar.gz`` beside it, rewritten likewise, so that whatever ends the call, what was measured comes
back. Steps run in order of value: the cheap correctness checks first, the long sweep last.

On the GPU machine ``check.sh`` installs the carried wheels and calls this; here, without a GPU::

    .venv/bin/python bench/device/check.py --device cpu --tiny --out /tmp/check
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# Step -> nominal time box in seconds on the GPU; None takes whatever the budget has left. The sum of the
# others leaves the sweep about three minutes of the default eight when each uses its whole box.
BOXES: dict[str, float | None] = {
    "env": 45, "cuda_tests": 90, "models": 90, "vit_s": 120, "fast_path": 180, "sweep": None, "hang": None,
}
DEFAULT_STEPS = ("env", "cuda_tests", "models", "vit_s", "fast_path", "sweep")
RESERVE_S = 10.0  # kept back from the budget for writing the results after the last step
MIN_BOX_S = 5.0  # with less than this left of the budget, a step is skipped rather than started
TAIL_CHARS = 3000


def log(msg: str) -> None:
    print(f"[check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_boxes(items: list[str]) -> dict[str, float]:
    """``NAME=SECONDS`` overrides of the nominal time boxes."""
    boxes: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in BOXES:
            raise ValueError(f"--box names a step: one of {', '.join(BOXES)}, got {item!r}")
        try:
            seconds = float(value)
        except ValueError:
            raise ValueError(f"--box takes NAME=SECONDS, got {item!r}") from None
        if seconds <= 0:
            raise ValueError(f"--box seconds must be positive, got {item!r}")
        boxes[name] = seconds
    return boxes


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren, ...), read from /proc; empty where there is
    no /proc. Collected before a kill, since the slots of a worker leave their parent's process group."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a step: its process group and every process it started, by id."""
    below = descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in below:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


class Check:
    """One run of the check: the steps, their time boxes, and the results written after each."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.work: Path = args.work
        self.deadline = args.started + args.budget
        self.logs = self.work / "logs"
        self.env = self._step_env()
        self.results: dict[str, Any] = {
            "check": {"device": args.device, "tiny": args.tiny, "budget_s": args.budget, "steps": args.steps,
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(args.started)),
                      "argv": sys.argv[1:], "python": sys.executable},
            "steps": {},
        }

    def _step_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VITSWEEP_")}
        path = env.get("PYTHONPATH", "")
        if str(ROOT) not in path.split(os.pathsep):
            env["PYTHONPATH"] = os.pathsep.join(p for p in (path, str(ROOT)) if p)
        env["PYTHONUNBUFFERED"] = "1"
        # One torch.compile cache for every step, as the service shares one per machine: the sweep's trials
        # load what the fast-path step compiled for the same model and batch, and a second call on the same
        # (still warm) machine what the first compiled.
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(self.args.compile_cache))
        env.setdefault("TRITON_CACHE_DIR", str(self.args.compile_cache / "triton"))
        return env

    def left(self) -> float:
        """Seconds of the budget left for steps."""
        return self.deadline - RESERVE_S - time.time()

    def box(self, step: str) -> float:
        """The step's time box: its nominal one (or the override), cut to what the budget has left."""
        nominal = self.args.boxes.get(step, BOXES[step])
        return self.left() if nominal is None else min(nominal, self.left())

    def run_step(self, step: str) -> dict[str, Any]:
        if self.left() < MIN_BOX_S:
            log(f"{step}: skipped, {max(self.left(), 0):.0f}s left of the budget")
            return {"status": "skipped", "seconds": 0.0, "box_s": 0.0, "figures": {}, "log_tail": "",
                    "reason": "no time left in the budget"}
        box = self.box(step)
        figures = self.work / f"{step}.json"
        figures.unlink(missing_ok=True)
        argv = [sys.executable, str(HERE / "steps.py"), step, "--device", self.args.device,
                "--figures", str(figures), "--work", str(self.work)]
        if self.args.tiny:
            argv.append("--tiny")
        log_path = self.logs / f"{step}.log"
        log(f"{step}: start, time box {box:.0f}s")
        start = time.monotonic()
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc: int | None = proc.wait(timeout=box)
                status = "ok" if rc == 0 else "failed"
            except subprocess.TimeoutExpired:
                kill_tree(proc)
                rc, status = None, "timeout"
            try:  # whatever the step left behind in its group
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        seconds = time.monotonic() - start
        try:
            found = json.loads(figures.read_text())
        except (OSError, ValueError):
            found = {}
        tail = log_path.read_text(errors="replace")[-TAIL_CHARS:]
        log(f"{step}: {status} in {seconds:.1f}s" + ("" if rc in (0, None) else f" (exit {rc})"))
        return {"status": status, "seconds": round(seconds, 1), "box_s": round(box, 1), "rc": rc,
                "figures": found, "log_tail": tail}

    def save(self) -> None:
        self.results["summary"] = summarise(self.results["steps"])
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=1, default=str))
        os.replace(tmp, self.out / "results.json")
        with tarfile.open(self.out / "logs.tar.gz.tmp", "w:gz") as tar:
            for path in sorted(self.logs.glob("*.log")):
                tar.add(path, arcname=f"logs/{path.name}")
            for path in sorted((self.work / "sweep").glob("service-*/*.log")):  # the sweep's API and workers
                tar.add(path, arcname=f"sweep/{path.parent.name}/{path.name}")
            for path in sorted(self.work.glob("*.json")):
                tar.add(path, arcname=f"figures/{path.name}")
            info = tarfile.TarInfo("README")
            text = b"logs/: each step's output; sweep/: the service's API and worker logs; figures/: raw figures\n"
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
        os.replace(self.out / "logs.tar.gz.tmp", self.out / "logs.tar.gz")

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        log(f"steps {', '.join(self.args.steps)} on {self.args.device}; {self.deadline - time.time():.0f}s "
            f"of the {self.args.budget:.0f}s budget left; work in {self.work}")
        self.save()
        for step in self.args.steps:
            self.results["steps"][step] = self.run_step(step)
            self.save()
        statuses = {step: r["status"] for step, r in self.results["steps"].items()}
        log(f"done: {statuses}")
        log(f"summary: {json.dumps(self.results['summary'])}")
        return 0 if all(s == "ok" for s in statuses.values()) else 1


def summarise(steps: dict[str, Any]) -> dict[str, Any]:
    """The goals' figures (bench/RESULTS.md), where the steps got that far: the sweep's best service side
    against the studies' way, the ViT-S trial's MFU, and the data wait of the fastest fast-path row with its
    data on the device."""
    out: dict[str, Any] = {}
    sweep = (steps.get("sweep") or {}).get("figures") or {}
    for model, sides in sweep.items():
        if not isinstance(sides, list):
            continue
        base = next((s for s in sides if s.get("name", "").startswith("(a)") and s.get("images_per_s")), None)
        service = [s for s in sides if s.get("name", "").startswith("(b)") and s.get("images_per_s")]
        if base and service:
            best = max(service, key=lambda s: s["images_per_s"])
            out["sweep_ratio"] = {"model": model, "ratio": round(best["images_per_s"] / base["images_per_s"], 2),
                                  "best": best["name"], "goal": ">= 10"}
    vit_s = (steps.get("vit_s") or {}).get("figures") or {}
    if vit_s.get("mfu") is not None:
        out["vit_s_mfu"] = {"mfu": vit_s["mfu"], "goal": ">= 0.25"}
    rows = [r for r in ((steps.get("fast_path") or {}).get("figures") or {}).get("rows", [])
            if "data_wait" in r and r["switches"].get("data_on_device") is True]  # the fast path's data
    if rows:
        fastest = max(rows, key=lambda r: r["images_per_s"])
        out["data_wait"] = {"row": fastest["row"], "data_wait": fastest["data_wait"], "goal": "<= 0.05"}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0", help="cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="Tiny sizes: a CPU check that the kit runs")
    parser.add_argument("--out", type=Path, default=os.environ.get("OUT"),
                        help="Where results.json and logs.tar.gz go (default: $OUT)")
    parser.add_argument("--budget", type=float, default=480.0, help="Seconds for the whole check (default 480)")
    parser.add_argument("--started", type=float, default=None,
                        help="When the budget began, in seconds since the epoch (check.sh passes its own start, "
                             "so that installing the wheels counts)")
    parser.add_argument("--steps", default=",".join(DEFAULT_STEPS),
                        help=f"Comma-separated steps in order (default {','.join(DEFAULT_STEPS)})")
    parser.add_argument("--box", action="append", default=[], metavar="STEP=SECONDS",
                        help="Override a step's nominal time box (repeatable)")
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a new temporary one)")
    parser.add_argument("--compile-cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "vitsweep-check-compile-cache",
                        help="torch.compile's cache, kept between calls (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.out is None:
        parser.error("--out is required where $OUT is not set")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        parser.error(f"--device must be cpu or cuda:N, got {args.device!r}")
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget}")
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in args.steps if s not in BOXES]
    if unknown or not args.steps:
        parser.error(f"unknown step(s) {unknown}; choose from {', '.join(BOXES)}")
    try:
        args.boxes = parse_boxes(args.box)
    except ValueError as exc:
        parser.error(str(exc))
    args.started = time.time() if args.started is None else args.started
    args.out = args.out.resolve()
    args.work = (args.work or Path(tempfile.mkdtemp(prefix="vitsweep-check-"))).resolve()
    return Check(args).run()


if __name__ == "__main__":
    raise SystemExit(main())
