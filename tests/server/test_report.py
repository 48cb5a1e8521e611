"""Sweep reports: HTML with inline figures, Markdown zipped with its PNGs, `vitsweep report --out`, and the HTML
rendered by headless Chromium (Debian's `chromium`, installed by .ci/run)."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from server.cli import app
from tests.helpers import quick_spec
from tests.server.test_compare import serve
from worker.worker import Worker, WorkerOptions

LEARNABLE = {"name": "synthetic", "img_size": 8, "options": {"num_samples": 128, "num_classes": 4, "noise": 0.5}}
FIGURES = ["curves", "param_01_train_lr", "param_02_train_optimizer", "importances"]
PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """What a test needs of a report page: trial rows, images, links."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str | None]] = []
        self.images: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self.figures: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and "trial" in (a.get("class") or "").split():
            self.rows.append(a)
        elif tag == "img":
            self.images.append(a)
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        elif tag == "figure":
            self.figures.append(a.get("id") or "")


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def check_image(src: str | None) -> Image.Image:
    assert src and src.startswith("data:image/png;base64,"), (src or "")[:80]
    data = base64.b64decode(src.split(",", 1)[1], validate=True)
    assert data.startswith(PNG)
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.width >= 300 and image.height >= 200, image.size
    assert len(set(image.convert("L").getdata())) > 10  # drawn on, not a blank canvas
    return image


def run_sweep(client, settings, backends) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A TPE search over a log-scale learning rate and a categorical optimizer, with median pruning: trials
    that complete and trials that are pruned, three epochs of curves each."""
    spec = quick_spec(
        name="report-sweep", dataset=LEARNABLE, train={"epochs": 3, "batch_size": 64},
        search={"sampler": "tpe", "sampler_options": {"seed": 1, "n_startup_trials": 3}, "n_trials": 5,
                "pruner": "median", "pruner_options": {"n_startup_trials": 2, "n_warmup_steps": 0},
                "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                          "train.optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]}}},
    )
    sweep = client.post("/api/v1/sweeps", json=spec).json()
    Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends).run()
    return client.get(f"/api/v1/sweeps/{sweep['id']}").json()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_report_html_markdown_and_cli(client, settings, backends, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Before any trial ran: a report with what there is, and notes saying what is missing.
    early = client.post("/api/v1/sweeps", json=quick_spec(name="early", search={**quick_spec()["search"], "n_trials": 1}))
    empty = client.get(f"/api/v1/sweeps/{early.json()['id']}/report")
    assert empty.status_code == 200 and "No trial has finished an epoch yet" in empty.text
    assert "at least 2 completed trials" in empty.text and parse(empty.text).images == []
    assert len(parse(empty.text).rows) == 1
    client.post(f"/api/v1/sweeps/{early.json()['id']}/cancel")  # the worker below runs the next sweep only
    assert client.get("/api/v1/sweeps/424242/report").status_code == 404

    sweep = run_sweep(client, settings, backends)
    trials = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    states = [t["state"] for t in trials]
    assert "completed" in states and "pruned" in states, states  # both kinds of curve are drawn

    response = client.get(f"/api/v1/sweeps/{sweep['id']}/report")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = parse(response.text)
    assert [r["data-trial"] for r in page.rows] == [str(t["number"]) for t in trials]
    assert page.figures == FIGURES
    for img in page.images:
        check_image(img["src"])
    assert "<script" not in response.text and "http" not in "".join(str(i["src"])[:20] for i in page.images)
    # Links to every trial's MLflow run, the sweep's run, and the study in Optuna dashboard.
    exp = sweep["mlflow_experiment_id"]
    for t in trials:
        assert f"{settings.mlflow_ui}/#/experiments/{exp}/runs/{t['mlflow_run_id']}" in page.links
    study_id = backends.storage.get_study_id_from_name(sweep["study_name"])
    assert f"{settings.dashboard}/dashboard/studies/{study_id}" in page.links
    best = sweep["best_trial"]
    assert f'class="trial best" data-trial="{best["number"]}"' in response.text
    assert f"{best['value']:.4f}" in response.text

    # Markdown: a zip of report.md and exactly the figures it refers to.
    bundle = client.get(f"/api/v1/sweeps/{sweep['id']}/report", params={"format": "md"})
    assert bundle.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(bundle.content)) as archive:
        names = set(archive.namelist())
        md = archive.read("report.md").decode()
        assert all(archive.read(f"{n}.png").startswith(PNG) for n in FIGURES)
    assert names == {"report.md", *(f"{n}.png" for n in FIGURES)}
    assert re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md) == [f"{n}.png" for n in FIGURES]
    assert re.findall(r"^\| (\d+) \| cnn \| synthetic \|", md, re.M) == [str(t["number"]) for t in trials]
    assert f"[trial {trials[0]['number']}]({settings.mlflow_ui}/#/experiments/{exp}/runs/{trials[0]['mlflow_run_id']})" in md

    # The CLI writes both, against a real server.
    out = tmp_path / "report"
    with serve(settings, backends) as url:
        monkeypatch.setenv("VITSWEEP_API_URL", url)
        result = CliRunner().invoke(app, ["report", str(sweep["id"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(["report.html", "report.md", *(f"{n}.png" for n in FIGURES)])
    assert parse((out / "report.html").read_text()).figures == FIGURES
    assert (out / "report.md").read_text().startswith(f"# Sweep {sweep['id']}: report-sweep")

    render_in_chromium(out / "report.html", len(trials), len(FIGURES), tmp_path)


def render_in_chromium(report: Path, n_rows: int, n_images: int, tmp_path: Path) -> None:
    """Load the report in headless Chromium: the DOM it built has every row and every image with a data: source,
    the images decoded (checked by a probe script in a copy of the page), and a screenshot (``report.png`` under
    the test's tmp_path; run with ``--basetemp`` to find it) for a human to look at."""
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package before the tests")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it and runs this check")
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    # The probe runs on load, after the images decoded, and writes what it found into the DOM it dumps.
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", (
        "<script>window.addEventListener('load', () => { const imgs = [...document.images];"
        " document.body.dataset.decoded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;"
        " document.body.dataset.sources = imgs.filter(i => i.src.startsWith('data:image/png;base64,')"
        " && i.src.length > 1000).length; });</script></body>")))
    dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = parse(dom.stdout)
    assert len(page.rows) == n_rows and len(page.images) == n_images
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body is not None
    assert f'data-decoded="{n_images}"' in body.group(1) and f'data-sources="{n_images}"' in body.group(1), body.group(1)

    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri()],
                   capture_output=True, text=True, timeout=120, check=True)
    image = Image.open(shot)
    assert image.size == (1280, 2000)
    assert len(set(image.convert("L").resize((320, 500)).getdata())) > 50  # a page was drawn, not a blank one
