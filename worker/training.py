"""Training one trial, as the trial runner hands it over: a :class:`TrainingJob` in, a ``FitResult`` out.

The runner takes any :data:`TrainFn` (tests and benchmarks pass their own); the real one is :class:`SpecTrainer`:
the spec's dataset (cached across the trials of a slot), its model, then ``worker.engine.fit``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import vitmodels
from server.core import queue
from server.core.datapaths import confine
from server.core.spec import ExperimentSpec
from worker.engine.results import EpochReport, FitResult
from worker.exceptions import DataNotFoundError


@dataclass(frozen=True)
class TrainingJob:
    """One attempt at a trial's training, as the runner hands it to its train function.

    ``on_epoch`` must be called after every epoch (it reports and may raise :class:`TrialPruned` or
    :class:`TrialStopped`); ``stop`` is polled at epoch boundaries; ``resume`` is the checkpoint to carry on
    from, with ``epochs_done`` epochs already trained; ``guard`` must be called before every file written to
    ``workdir`` (it raises :class:`TrialStopped` once the trial's lease is lost, so a stale worker writes nothing).
    """

    claim: queue.Claim
    spec: ExperimentSpec
    device: torch.device
    workdir: Path
    resume: Path | None
    epochs_done: int
    on_epoch: Callable[[EpochReport], None]
    stop: Callable[[], bool]
    guard: Callable[[], None] | None = None


TrainFn = Callable[[TrainingJob], FitResult]


class DataCache:
    """Keeps the last few loaded datasets: the trials of one sweep nearly always share theirs."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()

    def get(self, spec: ExperimentSpec, root: Path, download: bool) -> Any:
        from worker.data import load_dataset

        ds = spec.dataset
        key = json.dumps([ds.model_dump(mode="json", exclude={"augment"}), spec.train.seed, str(root)], sort_keys=True)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        data = load_dataset(
            ds.name, root=root, img_size=ds.img_size, in_chans=ds.in_chans, val_fraction=ds.val_fraction,
            seed=spec.train.seed, download=download, normalization=ds.normalization(), **ds.options,
        )
        self._items[key] = data
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return data


class SpecTrainer:
    """The real training of a job: the spec's data (cached across trials), its model, then ``engine.fit``."""

    def __init__(self, data_dir: Path, download: bool) -> None:
        self.data_dir = data_dir
        self.download = download
        self.data = DataCache()

    def __call__(self, job: TrainingJob) -> FitResult:
        from worker.engine import fit

        spec = job.spec
        data = self.data.get(spec, self.data_dir, self.download)
        pretrained = confine(self.data_dir, spec.model.pretrained, "model.pretrained") if spec.model.pretrained else None
        if pretrained is not None and not pretrained.is_file():
            raise DataNotFoundError(f"model.pretrained: expected the weights file {pretrained}, which does not exist")
        torch.manual_seed(spec.train.seed)
        model = vitmodels.create_model(
            spec.model.name, num_classes=data.num_classes, img_size=spec.dataset.img_size,
            in_chans=spec.dataset.in_chans, code_size=spec.model.code_size, pretrained=pretrained,
            stn=spec.model.stn, **spec.model.arch,
        )
        return fit(model, data, spec, device=job.device, on_epoch=job.on_epoch, workdir=job.workdir,
                   resume=job.resume, stop=job.stop, guard=job.guard)
