"""Comparison tables across two sweeps (a CNN search on synthetic data, a ViT grid on digits): every format,
filters, sorting and best-only, over the API and from the CLI against a real uvicorn server."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from typer.testing import CliRunner

from server.cli import app
from tests.helpers import free_port, quick_spec
from worker.worker import Worker, WorkerOptions

# The issue's columns: sweep, model, dataset, searched values, parameter count, best validation accuracy, final
# train accuracy, validation loss, SVC accuracy, peak memory, seconds per epoch, images per second, state.
ISSUE_COLUMNS = ["sweep_id", "model", "dataset", "params_searched", "param_count", "best_val_acc", "final_train_acc",
                 "final_val_loss", "svc_acc", "peak_memory_mb", "seconds_per_epoch", "median_images_per_second", "state"]
ISSUE_HEADERS = ["sweep", "model", "dataset", "searched", "params", "best val acc", "final train acc", "val loss",
                 "svc acc", "peak MB", "s/epoch", "img/s", "state"]


def two_sweeps(client, settings, backends) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """A 2-trial CNN search on synthetic data and a 2-point ViT grid on digits, both run to the end."""
    cnn = quick_spec(name="cnn-synth", train={"svc_probe": True},
                     search={**quick_spec()["search"], "sampler_options": {"seed": 0}, "n_trials": 2})
    vit = {
        "name": "vit-digits", "dataset": {"name": "digits", "img_size": 8},
        "model": {"name": "vit", "arch": {"patch_size": 4, "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}},
        "train": {"epochs": 1, "batch_size": 256, "svc_probe": True, "plots": False},
        "matrix": {"train.lr": [0.001, 0.01]},
    }
    ids = []
    for spec in (cnn, vit):
        response = client.post("/api/v1/sweeps", json=spec)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends).run()
    return ids[0], ids[1]


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_compare_two_sweeps_over_the_api(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    a, b = two_sweeps(client, settings, backends)
    query = {"sweeps": f"{a},{b}"}
    rows = client.get("/api/v1/compare", params=query).json()
    assert [(r["sweep_id"], r["trial"]) for r in rows] == [(a, 0), (a, 1), (b, 0), (b, 1)]
    assert [r["model"] for r in rows] == ["cnn", "cnn", "vit", "vit"]
    assert [r["dataset"] for r in rows] == ["synthetic", "synthetic", "digits", "digits"]
    trials = {(s, t["number"]): t for s in (a, b) for t in client.get(f"/api/v1/sweeps/{s}/trials").json()}
    for r in rows:
        t = trials[(r["sweep_id"], r["trial"])]
        m = t["metrics"]
        assert set(ISSUE_COLUMNS) <= set(r)
        assert r["params_searched"] == t["params"] and r["state"] == "completed" and r["value"] == t["value"]
        assert r["param_count"] == int(m["param_count"]) > 0
        assert r["best_val_acc"] == m["best_val_acc"] and r["final_train_acc"] == m["final_train_acc"]
        assert r["final_val_loss"] == m["final_val_loss"] and 0.0 <= r["svc_acc"] <= 1.0
        assert r["peak_memory_mb"] == round(m["peak_memory_bytes"] / 2**20, 1)
        assert r["peak_reserved_mb"] is None and m["peak_memory_reserved_bytes"] is None  # a GPU's figure
        assert r["seconds_per_epoch"] == m["seconds_per_epoch"] > 0 and r["median_images_per_second"] == m["median_images_per_second"] > 0
    assert {r["params_searched"]["train.lr"] for r in rows[2:]} == {0.001, 0.01}

    # Filters and sorting.
    vit = client.get("/api/v1/compare", params={**query, "model": "vit"}).json()
    assert [r["sweep_id"] for r in vit] == [b, b]
    assert client.get("/api/v1/compare", params={**query, "dataset": "digits,synthetic"}).json() == rows
    assert client.get("/api/v1/compare", params={**query, "state": "pruned"}).json() == []
    assert client.get("/api/v1/compare", params={**query, "state": "finished"}).status_code == 422
    by_params = client.get("/api/v1/compare", params={**query, "sort": "param_count", "order": "asc"}).json()
    assert [r["param_count"] for r in by_params] == sorted(r["param_count"] for r in rows)
    desc = client.get("/api/v1/compare", params={**query, "sort": "best_val_acc"}).json()
    assert [r["best_val_acc"] for r in desc] == sorted((r["best_val_acc"] for r in rows), reverse=True)
    assert client.get("/api/v1/compare", params={**query, "sort": "params_searched"}).status_code == 422
    best = client.get("/api/v1/compare", params={**query, "best": True}).json()
    assert [(r["sweep_id"], r["value"]) for r in best] == [
        (s, max(r["value"] for r in rows if r["sweep_id"] == s)) for s in (a, b)
    ]

    # CSV: every row, every column, the searched values as JSON.
    text = client.get("/api/v1/compare", params={**query, "format": "csv"})
    assert text.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(text.text)))
    assert len(parsed) == 4 and set(ISSUE_COLUMNS) <= set(parsed[0])
    assert [int(p["sweep_id"]) for p in parsed] == [a, a, b, b]
    assert json.loads(parsed[2]["params_searched"]) == rows[2]["params_searched"]
    assert [int(p["param_count"]) for p in parsed] == [r["param_count"] for r in rows]
    # Markdown (and "table", the same over HTTP): a header with the issue's columns and one line per trial.
    for fmt in ("md", "table"):
        md = client.get("/api/v1/compare", params={**query, "format": fmt})
        assert md.headers["content-type"].startswith("text/markdown")
        lines = md.text.strip().splitlines()
        headers = [h.strip() for h in lines[0].strip("|").split("|")]
        assert all(h in headers for h in ISSUE_HEADERS), headers
        body = [line.split("|")[1].strip() for line in lines[2:]]
        assert body == [str(a), str(a), str(b), str(b)]
        assert "lr=0.001" in lines[4] and "vit" in lines[4] and "digits" in lines[4]


@contextmanager
def serve(settings, backends) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The real app under uvicorn on a free port, in a thread; yields its URL."""
    import uvicorn

    from server.main import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, backends), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_compare_two_sweeps_from_the_cli(client, settings, backends, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    a, b = two_sweeps(client, settings, backends)
    runner = CliRunner()
    with serve(settings, backends) as url:
        monkeypatch.setenv("VITSWEEP_API_URL", url)

        def cli(*args: str) -> str:
            result = runner.invoke(app, ["compare", str(a), str(b), *args])
            assert result.exit_code == 0, result.output
            return result.output

        data: list[dict[str, Any]] = json.loads(cli("--format", "json"))
        assert [(r["sweep_id"], r["model"], r["dataset"]) for r in data] == [
            (a, "cnn", "synthetic"), (a, "cnn", "synthetic"), (b, "vit", "digits"), (b, "vit", "digits")]
        assert all(r["param_count"] > 0 and r["state"] == "completed" for r in data)
        parsed = list(csv.DictReader(io.StringIO(cli("--format", "csv"))))
        assert [int(p["sweep_id"]) for p in parsed] == [a, a, b, b]
        assert [int(p["param_count"]) for p in parsed] == [r["param_count"] for r in data]
        md = [line for line in cli("--format", "md").splitlines() if line.startswith("| ")]
        assert len(md) == 5 and all(h in md[0] for h in ISSUE_HEADERS)
        table = cli()
        assert "comparison" in table
        for r in data:  # every trial's parameter count, formatted as the table formats it
            assert f"{r['param_count']:,}" in table
        for header in ("model", "dataset", "searched", "params", "state"):
            assert header in table
        assert table.count("vit") >= 2 and table.count("digits") >= 2
        # Filters, sorting, best-only from the command line.
        only_vit = json.loads(cli("--format", "json", "--model", "vit"))
        assert {r["sweep_id"] for r in only_vit} == {b} and len(only_vit) == 2
        ascending = json.loads(cli("--format", "json", "--sort", "param_count", "--asc"))
        assert [r["param_count"] for r in ascending] == sorted(r["param_count"] for r in data)
        best = json.loads(cli("--format", "json", "--best"))
        assert [r["sweep_id"] for r in best] == [a, b]
        bad = runner.invoke(app, ["compare", str(a), "--state", "finished"])
        assert bad.exit_code == 1 and "422" in bad.output and "query.state" in bad.output and "'finished'" in bad.output

        # Adding trials from the command line.
        added = runner.invoke(app, ["add-trials", str(a), "2"])
        assert added.exit_code == 0 and "running, 4 trials" in added.output, added.output
        grid = runner.invoke(app, ["add-trials", str(b), "1"])
        assert grid.exit_code == 1 and "409" in grid.output and "grid" in grid.output
