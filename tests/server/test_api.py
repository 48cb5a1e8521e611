"""HTTP requests to the real app, on SQLite and PostgreSQL: submit, list, get, trials, cancel, bad input."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml
from sqlalchemy import func, select

from server.core.models import Sweep, Trial
from tests.conftest import SQLITE_ONLY
from tests.helpers import quick_spec


def _count(backends, model) -> int:  # type: ignore[no-untyped-def]
    with backends.sessions() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def test_submit_json_creates_sweep_study_and_queue(client, backends) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/sweeps", json=quick_spec())
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["state"] == "running"
    assert body["n_trials"] == 3
    assert body["counts"]["queued"] == 3
    assert body["spec"]["search"]["n_trials"] == 3
    study = optuna.load_study(study_name=body["study_name"], storage=backends.storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.user_attrs["vitsweep_sweep_id"] == body["id"]
    parent = backends.tracker.client.get_run(body["mlflow_run_id"])
    assert parent.data.tags["vitsweep.kind"] == "sweep"


def test_submit_yaml(client) -> None:  # type: ignore[no-untyped-def]
    text = yaml.safe_dump(quick_spec(name="from-yaml"))
    r = client.post("/api/v1/sweeps", content=text, headers={"content-type": "application/yaml"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "from-yaml"


def test_matrix_trials_named_by_slug(client) -> None:  # type: ignore[no-untyped-def]
    spec = quick_spec(search=None, matrix={"train.lr": [0.001, 0.01], "train.batch_size": [16, 32]})
    r = client.post("/api/v1/sweeps", json=spec)
    assert r.status_code == 201, r.text
    trials = client.get(f"/api/v1/sweeps/{r.json()['id']}/trials").json()
    assert [t["slug"] for t in trials] == [
        "lr-0.001_batch_size-16", "lr-0.001_batch_size-32", "lr-0.01_batch_size-16", "lr-0.01_batch_size-32",
    ]
    assert trials[3]["params"] == {"train.lr": 0.01, "train.batch_size": 32}


def test_matrix_include_points_and_a_single_run_queue_exactly_their_trials(client) -> None:  # type: ignore[no-untyped-def]
    include = [{"train.lr": 0.001, "train.batch_size": 16}, {"model": {"name": "cnn", "arch": {"width": 8}}}]
    spec = quick_spec(search=None, matrix={"train.seed": [0, 1], "exclude": [{"train.seed": 1}], "include": include})
    r = client.post("/api/v1/sweeps", json=spec)
    assert r.status_code == 201, r.text
    trials = client.get(f"/api/v1/sweeps/{r.json()['id']}/trials").json()
    # the first include extends the one combination left (seed 0); the second contradicts nothing either
    assert [t["params"] for t in trials] == [{"train.seed": 0, **include[0], **include[1]}]
    only = quick_spec(name="points", search=None, matrix={"include": include})
    trials = client.get(f"/api/v1/sweeps/{client.post('/api/v1/sweeps', json=only).json()['id']}/trials").json()
    assert [t["params"] for t in trials] == include
    single = client.post("/api/v1/sweeps", json=quick_spec(name="one-run", search=None))
    assert single.status_code == 201 and single.json()["n_trials"] == 1, single.text
    (trial,) = client.get(f"/api/v1/sweeps/{single.json()['id']}/trials").json()
    assert trial["params"] == {} and trial["state"] == "queued"


def test_list_paginates_and_filters(client) -> None:  # type: ignore[no-untyped-def]
    ids = [client.post("/api/v1/sweeps", json=quick_spec(name=f"s{i}")).json()["id"] for i in range(3)]
    page = client.get("/api/v1/sweeps", params={"limit": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    assert [s["id"] for s in page["items"]] == ids[::-1][:2]
    rest = client.get("/api/v1/sweeps", params={"limit": 2, "offset": 2}).json()
    assert [s["id"] for s in rest["items"]] == [ids[0]]
    client.post(f"/api/v1/sweeps/{ids[1]}/cancel")
    cancelled = client.get("/api/v1/sweeps", params={"state": "cancelled"}).json()
    assert [s["id"] for s in cancelled["items"]] == [ids[1]]
    assert client.get("/api/v1/sweeps", params={"state": "nonsense"}).status_code == 422


def test_get_and_trials(client) -> None:  # type: ignore[no-untyped-def]
    sweep_id = client.post("/api/v1/sweeps", json=quick_spec()).json()["id"]
    got = client.get(f"/api/v1/sweeps/{sweep_id}").json()
    assert got["id"] == sweep_id and got["best_trial"] is None
    trials = client.get(f"/api/v1/sweeps/{sweep_id}/trials").json()
    assert [t["number"] for t in trials] == [0, 1, 2]
    assert all(t["state"] == "queued" and t["params"] is None for t in trials)
    assert client.get("/api/v1/sweeps/999").status_code == 404
    assert client.get("/api/v1/sweeps/999/trials").status_code == 404


def test_cancel(client) -> None:  # type: ignore[no-untyped-def]
    sweep_id = client.post("/api/v1/sweeps", json=quick_spec()).json()["id"]
    r = client.post(f"/api/v1/sweeps/{sweep_id}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert r.json()["counts"]["cancelled"] == 3
    again = client.post(f"/api/v1/sweeps/{sweep_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    assert client.post("/api/v1/sweeps/424242/cancel").status_code == 404


def test_pause_resume(client) -> None:  # type: ignore[no-untyped-def]
    sweep_id = client.post("/api/v1/sweeps", json=quick_spec()).json()["id"]
    assert client.post(f"/api/v1/sweeps/{sweep_id}/pause").json()["state"] == "paused"
    assert client.post(f"/api/v1/sweeps/{sweep_id}/pause").status_code == 409
    assert client.post(f"/api/v1/sweeps/{sweep_id}/resume").json()["state"] == "running"


BAD_SPECS = [
    # (content, content-type, expected status, path fragment, message fragment)
    ("name: x\n  bad: [indent", "application/yaml", 422, ["body"], "malformed YAML"),
    ('{"name": "x", ', "application/json", 422, ["body"], "malformed JSON"),
    ("", "application/json", 422, ["body"], "empty"),
    ("- a\n- b\n", "application/yaml", 422, ["body"], "mapping"),
    ("name: x", "text/plain", 415, None, "application/json"),
    (json.dumps(quick_spec(train={"epochs": "many"})), "application/json", 422, ["body", "train", "epochs"], "integer"),
    (json.dumps(quick_spec(model={"name": "vitt"})), "application/json", 422, ["body", "model", "name"], "valid: "),
    (json.dumps(quick_spec(dataset={"name": "cifar100"})), "application/json", 422, ["body", "dataset", "name"], "cifar10"),
    (json.dumps(quick_spec(search={**quick_spec()["search"], "space": {}})), "application/json", 422,
     ["body", "search", "space"], "empty"),
    (json.dumps(quick_spec(search={**quick_spec()["search"], "n_trials": 0})), "application/json", 422,
     ["body", "search", "n_trials"], "greater than or equal to 1"),
    (json.dumps(quick_spec(search=None, matrix={"train.lr": []})), "application/json", 422, ["body", "matrix"], "empty list"),
    (json.dumps(quick_spec(search=None, matrix={})), "application/json", 422, ["body", "matrix"], "empty"),
    (json.dumps(quick_spec(matrix={"train.lr": [0.1]})), "application/json", 422, ["body"], "at most one of"),
    (json.dumps(quick_spec(search=None, matrix={"include": [{"train.lr": 0.1}, {"train.nope": 1}]})), "application/json",
     422, ["body", "matrix", "include", 1, "train.nope"], "has no field"),
    (json.dumps(quick_spec(search=None, matrix={"train.lr": [0.1], "exclude": [{"train.seed": 1}]})), "application/json",
     422, ["body", "matrix"], "exclude removes combinations of: train.lr"),
    (json.dumps(quick_spec(search=None, matrix={"include": [{"model": {"name": "vit", "arch": {"patch_size": 3}}}]})),
     "application/json", 422, ["body", "matrix", "include", 0, "model"], "patch_size"),
    (json.dumps(quick_spec(search=None, matrix={"train.nope": [1]})), "application/json", 422,
     ["body", "matrix", "train.nope"], "has no field"),
    (json.dumps(quick_spec(search=None, matrix={"train.lr": [-1.0]})), "application/json", 422,
     ["body", "matrix", "train.lr"], "greater than 0"),
    (json.dumps(quick_spec(extra_field=1)), "application/json", 422, ["body", "extra_field"], "Extra inputs"),
    (json.dumps(quick_spec(search={**quick_spec()["search"],
                                   "space": {"train.lr": {"type": "float", "low": 1.0, "high": 0.1}}})),
     "application/json", 422, ["body", "search", "space", "train.lr"], "low must be below high"),
    (json.dumps(quick_spec(model={"name": "vit", "arch": {"patch_size": 3}})), "application/json", 422,
     ["body", "model", "arch"], "patch_size"),
    (json.dumps(quick_spec(name="../etc")), "application/json", 422, ["body", "name"], "pattern"),
    (json.dumps(quick_spec(model={"name": "cnn", "stn": {"size": 3}})), "application/json", 422,
     ["body", "model", "stn"], "valid: channels, hidden"),
    (json.dumps(quick_spec(model={"name": "perceiver_io", "arch": {"query": "random"}})), "application/json", 422,
     ["body", "model", "arch"], "query must be one of"),
]


@SQLITE_ONLY  # refused before anything is stored: the backend plays no part
@pytest.mark.parametrize("content,ctype,code,loc,fragment", BAD_SPECS)
def test_bad_input_is_a_clear_4xx_and_stores_nothing(client, backends, content, ctype, code, loc, fragment) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/sweeps", content=content, headers={"content-type": ctype})
    assert r.status_code == code, r.text
    detail = r.json()["detail"]
    if loc is None:
        assert fragment in detail
    else:
        assert isinstance(detail, list) and detail
        hit = [d for d in detail if d["loc"][: len(loc)] == loc]
        assert hit, detail
        assert any(fragment.lower() in d["msg"].lower() for d in hit), detail
    assert _count(backends, Sweep) == 0
    assert _count(backends, Trial) == 0
    assert optuna.get_all_study_names(backends.storage) == []


@SQLITE_ONLY
def test_body_size_limit(client, backends, settings) -> None:  # type: ignore[no-untyped-def]
    big = json.dumps(quick_spec(description="x" * (settings.max_body_bytes + 1)))
    r = client.post("/api/v1/sweeps", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert _count(backends, Sweep) == 0


@SQLITE_ONLY
def test_healthz_and_openapi(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/healthz").json()["status"] == "ok"
    schema = client.get("/openapi.json").json()
    assert "ExperimentSpec" in schema["components"]["schemas"]
    post = schema["paths"]["/api/v1/sweeps"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "application/yaml"}
    assert client.get("/docs").status_code == 200


@SQLITE_ONLY
def test_catalog(client) -> None:  # type: ignore[no-untyped-def]
    names = {m["name"] for m in client.get("/api/v1/models", params={"img_size": 32}).json()}
    assert {"vit", "cnn", "resnet18"} <= names
    cat = client.get("/api/v1/datasets").json()
    assert "digits" in cat["datasets"] and "standard" in cat["augments"]
    assert set(cat["augment_presets"]) == set(cat["augments"])
    assert cat["augment_presets"]["cutout"]["ops"][-1] == {
        "RandomErasing": {"scale": [0.25, 0.25], "ratio": [1.0, 1.0], "value": 0.0, "p": 1.0}}
    assert {"RandomCrop", "RandomMixUpV2", "RandomCutMixV2", "TrivialAugment", "RandAugment"} <= set(cat["augment_ops"])


def test_list_gives_each_sweep_as_get_does(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    """GET /sweeps lists every sweep as GET /sweeps/{id} answers it: best trial, Pareto front and spec included,
    each sweep's best by its own direction (one maximizes, one minimizes) and none for a sweep that ran nothing."""
    from worker.worker import Worker, WorkerOptions

    search = {**quick_spec()["search"], "sampler_options": {"seed": 0}, "n_trials": 2}
    specs = [
        quick_spec(name="up", search=search),
        quick_spec(name="down", search={**search, "metric": "val_loss", "direction": "minimize"}),
        quick_spec(name="front", search={**search, "metrics": ["val_acc", "param_count"],
                                         "directions": ["maximize", "minimize"]}),
    ]
    ids = [client.post("/api/v1/sweeps", json=spec).json()["id"] for spec in specs]
    Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends).run()
    idle = client.post("/api/v1/sweeps", json=quick_spec(name="idle")).json()["id"]

    listed = {s["id"]: s for s in client.get("/api/v1/sweeps").json()["items"]}
    assert set(listed) == {*ids, idle}
    for sweep_id in [*ids, idle]:
        assert listed[sweep_id] == client.get(f"/api/v1/sweeps/{sweep_id}").json()
    up, down, front = (listed[i] for i in ids)
    for sweep, pick in ((up, max), (down, min), (front, max)):
        assert sweep["state"] == "completed" and sweep["spec"]["name"] == sweep["name"]
        values = [t["value"] for t in client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()]
        assert sweep["best_trial"] is not None and sweep["best_trial"]["value"] == pick(values), (sweep["name"], values)
    assert front["pareto_front"] and up["pareto_front"] is None
    assert listed[idle]["best_trial"] is None and listed[idle]["spec"]["name"] == "idle"
