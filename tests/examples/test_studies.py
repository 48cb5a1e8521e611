"""Every study spec under examples/studies/ (one per experiment of ../shared/studies/): accepted by the real API,
every model it can build trained two steps on synthetic data of its shape through the worker's real training
path, and the parameter counts the studies state matched exactly.

Which models are trained: every point of a matrix (a single run is one point); for a search, the base point and
each bound and choice of its space (``search_corners``, what the submission check builds). Points that differ
only in what does not change the model or its data's shape (learning rate, batch size, epochs) are trained
once, and so are points whose models and images are the same but for the dataset's name (their synthetic twins
read alike). Points whose model or images are large (more than ``SLOW_PARAMS`` parameters or ``SLOW_PIXELS``
pixels an image: the 224-pixel fine-tunes) are marked slow.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import vitmodels
from server.core.queue import Claim
from server.core.spec import ExperimentSpec
from server.core.spec.plan import search_corners
from tests.conftest import SQLITE_ONLY
from worker.engine import EpochReport
from worker.training import SpecTrainer, TrainingJob

STUDIES = Path(__file__).resolve().parents[2] / "examples" / "studies"
SPECS = sorted(STUDIES.glob("*.yaml"))
YAML = {"content-type": "application/yaml"}
CPU = torch.device("cpu")
# Classes of the datasets the studies use (the synthetic stand-in gets as many).
CLASSES = {"cifar10": 10, "stl10": 10, "tiny_imagenet": 200, "fashion_mnist": 10, "dogs_vs_cats": 2, "digits": 10}
SLOW_PARAMS = 20_000_000
SLOW_PIXELS = 128 * 128

# Parameter counts the studies state, in the order of the spec's points (``grid_points``), built with the
# dataset's number of classes.
PERCEIVER_SIZES = [293_362, 1_151_730, 4_428_262]  # study 000, "Result: CIFAR-10": Medium, Large, XLarge
EXPECTED_PARAMS: dict[str, list[int]] = {
    "000-perceiver-cifar10-sizes.yaml": PERCEIVER_SIZES,
    "000-perceiver-stl10-sizes.yaml": PERCEIVER_SIZES,  # the same weights: Fourier features follow the size
    "000-perceiver-cifar10-dropout-aug.yaml": [PERCEIVER_SIZES[0]] * 3,  # "the small CIFAR-10 Perceiver"
    # Not in the report's text: the study notebook prints 1,504,652 for its CIFAR-10 Perceiver IO; STL-10's and
    # TinyImageNet's are upstream PerceiverIO's with their tables' keywords.
    "000-perceiver-io-scratch.yaml": [1_504_652, 5_785_228, 2_094_688],
}


def spec_data(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def param_count(spec: ExperimentSpec) -> int:
    """Parameters of the spec's model as the worker builds it (on the meta device: nothing allocated)."""
    with torch.device("meta"):
        model = vitmodels.create_model(
            spec.model.name, num_classes=CLASSES[spec.dataset.name], img_size=spec.dataset.img_size,
            in_chans=spec.dataset.in_chans, code_size=spec.model.code_size, stn=spec.model.stn, **spec.model.arch,
        )
    return sum(p.numel() for p in model.parameters())


# -- (a) accepted by the real API ------------------------------------------------------------------------------


@pytest.fixture
def settings(settings, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The shared settings, told not to look for the datasets and weights the studies name (none are here)."""
    from server.core.config import Settings

    monkeypatch.setenv("VITSWEEP_CHECK_DATA", "false")
    return Settings()


def test_every_study_has_specs() -> None:
    assert {p.name[:3] for p in SPECS} >= {"000"}, SPECS
    for path in SPECS:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# Study ") and "studies/" in first, f"{path.name}: header must name its report"


@SQLITE_ONLY
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_study_spec_is_accepted(client: Any, path: Path) -> None:
    r = client.post("/api/v1/sweeps", content=path.read_text(), headers=YAML)
    assert r.status_code == 201, r.text
    spec = ExperimentSpec.model_validate(spec_data(path))
    assert r.json()["n_trials"] == spec.planned_trials()


# -- (b) every model trains two steps --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One model of one spec, to train; ``error`` holds why the spec could not be expanded at collection."""

    path: Path
    point: dict[str, Any]
    error: str | None = None
    slow: bool = False


def _spec_cases(path: Path) -> list[Any]:
    """The distinct models of one spec, each a case (marked slow where large)."""
    spec = ExperimentSpec.model_validate(spec_data(path))
    cases: list[Any] = []
    seen: set[str] = set()
    for i, (point, _) in enumerate(search_corners(spec)):
        resolved = spec.resolve(point)
        ds = resolved.dataset.model_dump(mode="json", exclude={"name", "options"})  # the twin's data differ only
        ds["classes"] = CLASSES[resolved.dataset.name]  # in their number of classes (and the spec's own settings)
        key = json.dumps([resolved.model.model_dump(mode="json"), ds, resolved.train.loss], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        slow = resolved.dataset.img_size**2 > SLOW_PIXELS or param_count(resolved) > SLOW_PARAMS
        marks = [pytest.mark.slow] if slow else []
        cases.append(pytest.param(Case(path, point, slow=slow), id=f"{path.stem}[{i}]", marks=marks))
    return cases


def _cases() -> list[Any]:
    cases: list[Any] = []
    for path in SPECS:
        try:
            cases.extend(_spec_cases(path))
        except Exception as exc:  # reported by the spec's own case, so that every other spec still runs
            cases.append(pytest.param(Case(path, {}, error=f"{type(exc).__name__}: {exc}"), id=path.stem))
    return cases


def synthetic_twin(spec: ExperimentSpec, data_dir: Path) -> ExperimentSpec:
    """The trial's spec on generated images of its dataset's shape and classes, cut to two steps of 4 images.

    Its pretrained weights file, if any, is written under ``data_dir``: the model's own freshly initialised
    backbone (the upstream model's keys, as a timm checkpoint holds them), which the trial then loads.
    """
    classes = CLASSES[spec.dataset.name]
    data = spec.model_dump(mode="json", exclude={"matrix"})
    # At least two images a class (the generator's rule), but a trial reads the 8 training images of its two
    # steps and 4 validation images: Tiny ImageNet's 200 classes would otherwise make the validation pass and the
    # SVC probe's embeddings hundreds of forward passes (minutes for a TnT on 256 patches, or a Swin-B at 224).
    options = {"num_samples": max(2 * classes, 40), "num_classes": classes, "max_train": 8, "max_val": 4}
    data["dataset"].update(name="synthetic", options=options)
    data["train"].update(epochs=1, max_steps=2, max_inputs=None, batch_size=4, num_workers=0, plots=False)
    if data["train"].get("precision") in ("fp16", "bf16"):  # half precision on a CPU is emulated: minutes a step
        data["train"]["precision"] = "fp32"
    if spec.model.pretrained:
        model = vitmodels.create_model(
            spec.model.name, num_classes=classes, img_size=spec.dataset.img_size, in_chans=spec.dataset.in_chans,
            code_size=spec.model.code_size, **spec.model.arch,
        )
        weights = data_dir / spec.model.pretrained
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(getattr(model, "backbone", model).state_dict(), weights)
        del model
    return ExperimentSpec.model_validate(data)


def claim_for(spec: ExperimentSpec) -> Claim:
    """The claim a worker would hold for the trial (the trainer reads only its spec from the job)."""
    return Claim(row_id=1, sweep_id=1, number=0, attempts=1, params={}, slug=None, optuna_trial_id=None,
                 optuna_trial_number=None, mlflow_run_id=None, epochs_done=0, sweep_name=spec.name,
                 spec=spec.model_dump(mode="json"), study_name=spec.name, parent_run_id=None)


@pytest.mark.parametrize("case", _cases())
def test_study_model_trains_two_steps(case: Case, tmp_path: Path) -> None:
    assert case.error is None, f"{case.path.name} cannot be expanded: {case.error}"
    resolved = ExperimentSpec.model_validate(spec_data(case.path)).resolve(case.point)
    reports: list[EpochReport] = []
    try:
        spec = synthetic_twin(resolved, tmp_path / "data")
        job = TrainingJob(claim=claim_for(spec), spec=spec, device=CPU, workdir=tmp_path / "trial", resume=None,
                          epochs_done=0, on_epoch=reports.append, stop=lambda: False)
        result = SpecTrainer(tmp_path / "data", download=False)(job)
        assert Path(result.checkpoints["best"]).is_file(), result.checkpoints
    finally:  # a Swin-B case writes 1.4 GB (weights, checkpoints with Adam's state): 20 GB a run if kept
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert [r.epoch for r in reports] == [1]
    assert result.final["inputs_seen"] == 8 and math.isfinite(result.final["train_loss"]), result.final
    assert result.summary["param_count"] == param_count(resolved), result.summary


# -- (c) the parameter counts the studies state ----------------------------------------------------------------


def test_every_expected_count_names_a_spec() -> None:
    assert set(EXPECTED_PARAMS) <= {p.name for p in SPECS}


def without_augment(data: dict[str, Any]) -> dict[str, Any]:
    """The spec without its augmentation (base and matrix), which no parameter count depends on: the counts are
    checked whatever the augmentation keys a branch accepts."""
    data["dataset"].pop("augment", None)
    matrix = data.get("matrix") or {}
    matrix.pop("dataset.augment", None)
    for point in [*matrix.get("include", []), *matrix.get("exclude", [])]:
        point.pop("dataset.augment", None)
    return data


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_stated_parameter_counts(name: str) -> None:
    spec = ExperimentSpec.model_validate(without_augment(spec_data(STUDIES / name)))
    counts = [param_count(spec.resolve(point)) for point in spec.grid_points()]
    assert counts == EXPECTED_PARAMS[name]
