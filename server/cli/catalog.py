"""Client commands about what a spec can name: models and datasets, as the API's catalog lists them."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from server.cli.app import app, console, settings
from server.cli.client import ApiClient


@app.command()
def models(
    img_size: Annotated[int, typer.Option(min=4, max=1024)] = 32,
    in_chans: Annotated[int, typer.Option(min=1, max=4)] = 3,
    num_classes: Annotated[int, typer.Option(min=1)] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Registered models, their defaults and parameter counts at an image size."""
    infos = ApiClient(settings()).get(
        "/api/v1/models", params={"img_size": img_size, "in_chans": in_chans, "num_classes": num_classes}
    )
    if as_json:
        sys.stdout.write(json.dumps(infos, indent=2, default=str) + "\n")
        return
    table = Table("model", "family", "params", "defaults", title=f"models at {img_size}x{img_size}x{in_chans}")
    for m in infos:
        count = f"{m['param_count']:,}" if m.get("param_count") is not None else f"[red]{m.get('error', '-')}[/]"
        defaults = ", ".join(f"{k}={v}" for k, v in m.get("defaults", {}).items())
        table.add_row(m["name"], m.get("family") or "-", count, defaults)
    console.print(table)
    console.print("Any timm model as timm:<name>.")


@app.command()
def datasets() -> None:
    """Dataset names and augmentation presets."""
    catalog = ApiClient(settings()).get("/api/v1/datasets")
    console.print("datasets: " + ", ".join(catalog["datasets"]))
    presets = catalog.get("augment_presets") or {name: {} for name in catalog["augments"]}
    table = Table("preset", "kornia ops (at 32 px)", title="augment presets")
    for name, recipe in presets.items():
        ops = "\n".join(_op_text(op) for op in recipe.get("ops", [])) or "-"
        if recipe.get("random_apply") is not None:
            per = "image" if recipe.get("per_sample") else "batch"
            ops += f"\nrandom_apply: {recipe['random_apply']} (per {per})"
        table.add_row(name, ops)
    console.print(table)
    if catalog.get("augment_ops"):
        console.print("pipeline ops (kornia.augmentation): " + ", ".join(catalog["augment_ops"]))
    console.print("Datasets are read from the server's data directory (VITSWEEP_DATA_DIR).")


def _op_text(op: dict[str, Any]) -> str:
    """``{RandomCrop: {size: [32, 32], padding: 4}}`` as ``RandomCrop(size=[32, 32], padding=4)``."""
    ((name, keywords),) = op.items()
    return f"{name}(" + ", ".join(f"{k}={v}" for k, v in (keywords or {}).items()) + ")"
