"""Missing data said before queueing: where the API sees the data directory (the embedded default), a sweep whose
dataset files or pretrained weights are absent is a 422 naming the file and how to get it, with nothing stored;
with the files written in their real format it is accepted. Where the API cannot see the data
(``VITSWEEP_CHECK_DATA=false``), the first trial that finds its data missing fails the sweep's other trials on
that data at once, with that reason."""

from __future__ import annotations

import json
from typing import Any

import optuna
import pytest
import torch

from server.core.models import Sweep, Trial
from tests.conftest import SQLITE_ONLY
from tests.helpers import blind_client, quick_spec
from tests.server.test_api_spec_keys import _count
from tests.worker.test_data import (
    write_cifar,
    write_fashion,
    write_imagefolder,
    write_kaggle,
    write_stl,
    write_tiny,
)
from worker.worker import Worker, WorkerOptions

WRITERS = {"cifar10": write_cifar, "stl10": write_stl, "fashion_mnist": write_fashion, "tiny_imagenet": write_tiny,
           "dogs_vs_cats": write_kaggle, "imagefolder": lambda root: write_imagefolder(root / "flowers")}
OPTIONS = {"imagefolder": {"path": "flowers"}}
# What the 422 names: the missing folder or file, and where to get it.
MISSING = {
    "cifar10": ["cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar.html", "VITSWEEP_DOWNLOAD=1"],
    "stl10": ["stl10_binary", "VITSWEEP_DOWNLOAD=1"],
    "fashion_mnist": ["fashion", "github.com/zalandoresearch/fashion-mnist"],
    "tiny_imagenet": ["tiny-imagenet-200"],
    "dogs_vs_cats": ["dogs_vs_cats"],
    "imagefolder": ["flowers", "one folder of images per class"],
}


def _dataset(name: str) -> dict[str, Any]:
    return {"name": name, "img_size": 8, "options": OPTIONS.get(name, {})}


def _assert_refused(r: Any, backends: Any, loc: list[Any], fragments: list[str]) -> None:
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    hits = [d for d in detail if d["loc"] == ["body", *loc]]
    assert hits, detail
    for fragment in fragments:
        assert any(fragment in d["msg"] for d in hits), (fragment, detail)
    assert _count(backends, Sweep) == 0 and _count(backends, Trial) == 0
    assert optuna.get_all_study_names(backends.storage) == []


@SQLITE_ONLY
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_missing_dataset_is_a_422_then_its_files_are_accepted(client: Any, settings: Any, backends: Any,
                                                               name: str) -> None:
    spec = quick_spec(dataset=_dataset(name))
    _assert_refused(client.post("/api/v1/sweeps", json=spec), backends, ["dataset", "name"],
                    [str(settings.datasets_dir), *MISSING[name]])
    WRITERS[name](settings.datasets_dir)
    r = client.post("/api/v1/sweeps", json=spec)
    assert r.status_code == 201, r.text


@SQLITE_ONLY
def test_one_file_missing_is_named(client: Any, settings: Any, backends: Any) -> None:
    write_cifar(settings.datasets_dir)
    (settings.datasets_dir / "cifar-10-batches-py" / "test_batch").unlink()
    _assert_refused(client.post("/api/v1/sweeps", json=quick_spec(dataset=_dataset("cifar10"))), backends,
                    ["dataset", "name"], ["cifar-10-batches-py/test_batch"])


@SQLITE_ONLY
def test_every_point_naming_another_dataset_is_checked(client: Any, settings: Any, backends: Any) -> None:
    """A matrix point and a search choice on a dataset without files are refused at that point or choice."""
    write_cifar(settings.datasets_dir)
    matrix = quick_spec(search=None, matrix={"include": [{"dataset": _dataset("cifar10")},
                                                         {"dataset": _dataset("stl10")}]})
    _assert_refused(client.post("/api/v1/sweeps", json=matrix), backends, ["matrix", "include", 1, "dataset"],
                    ["stl10_binary"])
    search = quick_spec(dataset=_dataset("cifar10"), search={"sampler": "random", "n_trials": 2, "space": {
        "dataset.name": {"type": "categorical", "choices": ["cifar10", "fashion_mnist"]}}})
    _assert_refused(client.post("/api/v1/sweeps", json=search), backends, ["search", "space", "dataset.name"],
                    ["fashion"])
    write_fashion(settings.datasets_dir)
    write_stl(settings.datasets_dir)
    for spec in (matrix, search):
        r = client.post("/api/v1/sweeps", json=spec)
        assert r.status_code == 201, r.text


@SQLITE_ONLY
def test_missing_pretrained_weights_are_a_422(client: Any, settings: Any, backends: Any) -> None:
    spec = quick_spec(model={"name": "cnn", "pretrained": "weights/cnn.pt"})
    _assert_refused(client.post("/api/v1/sweeps", json=spec), backends, ["model", "pretrained"],
                    [str(settings.datasets_dir / "weights" / "cnn.pt"), "VITSWEEP_DATA_DIR"])
    (settings.datasets_dir / "weights").mkdir(parents=True)
    torch.save({}, settings.datasets_dir / "weights" / "cnn.pt")
    r = client.post("/api/v1/sweeps", json=spec)
    assert r.status_code == 201, r.text


@SQLITE_ONLY
def test_check_data_off_queues_it(settings: Any, backends: Any) -> None:
    with blind_client(settings, backends) as client:
        r = client.post("/api/v1/sweeps", json=quick_spec(dataset=_dataset("cifar10")))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_first_trial_missing_its_data_fails_the_rest(settings: Any, backends: Any) -> None:
    """The API cannot see the data: the real worker's first trial finds cifar10 missing and fails the sweep's
    other cifar10 trials with that reason at once (run by no one); a digits point of the same grid still runs."""
    spec = quick_spec(search=None, matrix={"dataset": [_dataset("cifar10")], "train.lr": [1e-3, 2e-3, 3e-3],
                                           "include": [{"dataset": {"name": "digits", "img_size": 8}}]})
    with blind_client(settings, backends) as client:
        sweep = client.post("/api/v1/sweeps", json=spec)
        assert sweep.status_code == 201, sweep.text
        worker = Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends)
        worker.run()
        trials = client.get(f"/api/v1/sweeps/{sweep.json()['id']}/trials").json()
        got = client.get(f"/api/v1/sweeps/{sweep.json()['id']}").json()
    cifar = [t for t in trials if t["params"].get("dataset", {}).get("name") == "cifar10"]
    digits = [t for t in trials if t not in cifar]
    assert len(cifar) == 3 and len(digits) == 1, [t["params"] for t in trials]
    first, *rest = sorted(cifar, key=lambda t: t["number"])
    assert first["state"] == "failed" and "DataNotFoundError" in first["error"] and "cifar-10" in first["error"]
    for t in rest:
        assert t["state"] == "failed" and t["mlflow_run_id"] is None and t["attempts"] == 0, t
        assert t["error"].startswith(f"not run: trial {first['number']} found its data missing") and \
            first["error"] in t["error"]
    assert digits[0]["state"] == "completed", digits[0]["error"]
    assert worker.trials_run == 2 and got["state"] == "completed"
    assert json.dumps(got["counts"]) and got["counts"]["failed"] == 3


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_search_on_missing_data_fails_at_its_first_trial(settings: Any, backends: Any) -> None:
    """A search that does not vary its data: the first trial's DataNotFoundError fails every queued trial, so
    the worker runs one trial, not three into the same error, and the sweep ends."""
    spec = quick_spec(dataset=_dataset("stl10"), search={**quick_spec()["search"], "n_trials": 3, "space": {
        "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "dataset.img_size": {"type": "categorical", "choices": [8, 16]}}})
    with blind_client(settings, backends) as client:
        sweep = client.post("/api/v1/sweeps", json=spec).json()
        worker = Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends)
        worker.run()
        trials = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
        assert client.get(f"/api/v1/sweeps/{sweep['id']}").json()["state"] == "completed"
    assert worker.trials_run == 1
    assert [t["state"] for t in trials] == ["failed"] * 3 and "stl10_binary" in trials[0]["error"]
    assert all(t["error"].startswith("not run: trial 0 found its data missing") for t in trials[1:]), trials
