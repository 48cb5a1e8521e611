"""What a spec can name: models and datasets (with augmentation presets)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from server.api.deps import CatalogDep
from server.schemas import CatalogPublic, ModelInfo

router = APIRouter(tags=["catalog"])


@router.get("/models", response_model=list[ModelInfo])
def list_models(
    img_size: int = Query(32, ge=4, le=1024), in_chans: int = Query(3, ge=1, le=4), num_classes: int = Query(10, ge=1, le=100_000)
) -> list[dict[str, Any]]:
    """Registered models with their defaults and parameter counts at the given input size."""
    from vitmodels import describe_models

    return describe_models(img_size=img_size, in_chans=in_chans, num_classes=num_classes)


@router.get("/datasets", response_model=CatalogPublic)
def list_datasets(catalog: CatalogDep) -> CatalogPublic:
    """Dataset names, augmentation presets with their kornia ops, and the kornia ops a pipeline can name."""
    from server.core.spec.korniaops import op_names

    return CatalogPublic(datasets=list(catalog.datasets()), augments=list(catalog.augments()),
                         augment_presets={k: dict(v) for k, v in catalog.augment_recipes(32).items()},
                         augment_ops=list(op_names()))
