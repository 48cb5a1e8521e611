"""Plan checks: every trial a spec can make resolves to a runnable spec, before anything is queued.

Structure is pydantic's job (``sections``, ``search``, ``experiment``); here the plan is walked: every path is
a field, every grid point and every bound and choice of the space resolves, names the worker owns are in its
catalog, and every architecture builds (on PyTorch's meta device: nothing is allocated).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from server.core.datapaths import confine
from server.core.exceptions import PathEscapeError, SpecError
from server.core.samplers import make_pruner, make_sampler
from server.core.spec.catalog import Catalog
from server.core.spec.experiment import ExperimentSpec
from server.core.spec.limits import MAX_PARAM_COUNT
from server.core.spec.search import CategoricalParam, SearchSpec, first_value
from server.core.spec.sections import check_path

MAX_CHECKED_POINTS = 256


def search_corners(spec: ExperimentSpec, limit: int = MAX_CHECKED_POINTS) -> list[tuple[dict[str, Any], str | None]]:
    """Points that together touch every bound and choice of the space, each with the path it varies
    (None for the base point): enough to check that the whole space is valid. At most ``limit`` of them are
    made (a grid's first combinations, a matrix's first points), so a large space costs no more than the points
    checked."""
    return [(point, varied) for point, varied, _ in itertools.islice(_corners(spec), limit)]


def _corners(spec: ExperimentSpec) -> Iterator[tuple[dict[str, Any], str | None, int | None]]:
    """``search_corners``, each with the matrix ``include`` entry that made the point (None: not one)."""
    if spec.matrix is not None or spec.search is None:  # a matrix was counted before: its points are few
        for point, origin in spec.grid_origins():
            yield point, None, origin
        return
    if spec.is_grid:
        axes = spec.grid_axes()
        for combo in itertools.product(*axes.values()):
            yield dict(zip(axes, combo, strict=True)), None, None
        return
    assert spec.search is not None
    base = {p: first_value(d) for p, d in spec.search.space.items()}
    yield base, None, None
    for path, dist in spec.search.space.items():
        values = dist.choices[1:] if isinstance(dist, CategoricalParam) else [dist.high]
        # A model's own keyword only matters when that model is chosen: check it with that model.
        keys = path.split(".")
        pinned = {"model.name": keys[2]} if keys[:2] == ["model", "arch_by_model"] and "model.name" in base else {}
        if pinned:
            yield {**base, **pinned}, path, None
        for v in values:
            yield {**base, **pinned, path: v}, path, None


def model_choices(spec: ExperimentSpec) -> list[Any]:
    """Every value ``model.name`` can take in this sweep."""
    if spec.matrix is not None:
        names: dict[str, None] = {}
        for point in spec.grid_points():
            block = point.get("model")
            name = point.get("model.name", block.get("name") if isinstance(block, dict) else spec.model.name)
            names[name if isinstance(name, str) else repr(name)] = None
        return list(names)
    if spec.search is not None:
        dist = spec.search.space.get("model.name")
        if isinstance(dist, CategoricalParam):
            return list(dist.choices)
        if dist is not None:
            raise SpecError(("search", "space", "model.name"), "model.name can only be searched as a categorical")
    return [spec.model.name]


BuildHook = Callable[[tuple[str | int, ...], str], None]


@dataclass(frozen=True)
class DataCheck:
    """Where the data directory is, as the server sees it (the embedded default shares the workers'), so that
    a sweep whose dataset files or pretrained weights are absent is refused before anything is queued."""

    root: Path
    download: bool = False


def validate_plan(
    spec: ExperimentSpec, catalog: Catalog, *, build_model: bool = True, on_build: BuildHook | None = None,
    data: DataCheck | None = None,
) -> None:
    """Check every path, every grid point and every bound of the space resolves to a runnable spec.

    ``on_build(loc, what)`` is called before each model is built with where to blame it and what it is, so a
    caller that stops a slow check (``server.core.spec.isolation``) can say which model it stopped. With
    ``data``, every dataset and ``model.pretrained`` file the plan names must be there.

    Raises:
        SpecError: naming the matrix or search entry at fault (or the base spec's field).
    """
    paths = spec.searched_paths()
    if spec.search is not None:
        _check_search_options(spec.search)
    for path in paths:
        try:
            check_path(path, block=spec.matrix is not None)
        except ValueError as exc:
            raise SpecError(spec.plan_loc(path, _origin_of(spec, path)), str(exc)) from None
    _check_arch_blocks(spec, paths)
    seen: set[str] = set()
    checked: list[tuple[ExperimentSpec, dict[str, Any], int | None]] = []
    for point, varied, origin in itertools.islice(_corners(spec), MAX_CHECKED_POINTS):
        try:
            resolved = spec.resolve(point)
        except SpecError as exc:  # a path through a value that is not a section
            raise SpecError(spec.plan_loc(str(exc.loc[-1]), origin), exc.msg) from None
        except ValidationError as exc:
            err = exc.errors()[0]
            path = ".".join(str(p) for p in err["loc"])
            matches = [p for p in point if path.startswith(p) or p.startswith(path)]
            culprit = varied if varied in matches else next(iter(matches), path)
            raise SpecError(spec.plan_loc(culprit, origin), f"{culprit} = {point.get(culprit)!r}: {err['msg']}") from None
        _check_names(spec, resolved, point, catalog, origin)
        checked.append((resolved, point, origin))
        if not build_model:
            continue
        key = json.dumps([resolved.model.model_dump(mode="json"), resolved.dataset.img_size, resolved.dataset.in_chans])
        if key in seen:
            continue
        seen.add(key)
        loc, what = _build_blame(spec, resolved, point, varied, origin)
        if on_build is not None:
            on_build(loc, what)
        _check_model(resolved, loc, what)
    if data is not None:  # once every point is known to be valid: what is missing is then the only fault
        files_seen: set[str] = set()
        for resolved, point, origin in checked:
            _check_files(spec, resolved, point, catalog, data, origin, files_seen)


def _build_blame(
    spec: ExperimentSpec, resolved: ExperimentSpec, point: dict[str, Any], varied: str | None, origin: int | None
) -> tuple[tuple[str | int, ...], str]:
    """Where a model that cannot be built is blamed (the searched path that made this point differ from a
    buildable one, a matrix include entry's own paths first; the base spec's arch otherwise), and the model in
    words."""
    if spec.matrix is not None:
        # an include entry's own paths first: the product's values are the same in every other point
        own = list(spec.matrix["include"][origin]) if origin is not None else []
        culprit = varied or next((p for p in [*own, *point] if p == "model" or p.startswith("model.")), None)
    else:
        culprit = varied
    loc = spec.plan_loc(culprit, origin) if culprit is not None else ("model", "arch")
    return loc, f"model {resolved.model.name!r}" + (f" with {point}" if point else "")


def _origin_of(spec: ExperimentSpec, path: str) -> int | None:
    """The first matrix ``include`` entry that sets ``path``, when no product axis does."""
    if spec.matrix is None or path in spec.matrix:
        return None
    return next((i for i, inc in enumerate(spec.matrix.get("include", [])) if path in inc), None)


def _blame(
    spec: ExperimentSpec, point: dict[str, Any], field: str, default: tuple[str, ...], origin: int | None = None
) -> tuple[str | int, ...]:
    """The plan entry that set ``field`` (a dotted prefix such as ``dataset.name``) at ``point``, else ``default``."""
    culprit = next((p for p in point if p == field or p.startswith(field + ".") or field.startswith(p + ".")), None)
    return spec.plan_loc(culprit, origin) if culprit is not None else default


def _check_names(
    spec: ExperimentSpec, resolved: ExperimentSpec, point: dict[str, Any], catalog: Catalog, origin: int | None = None
) -> None:
    """The dataset, its options and the augmentation preset are ones the worker has."""
    ds = resolved.dataset
    datasets = list(catalog.datasets())
    if ds.name not in datasets:
        raise SpecError(_blame(spec, point, "dataset.name", ("dataset", "name"), origin),
                        f"unknown dataset {ds.name!r}; valid: {', '.join(datasets)}")
    allowed = catalog.dataset_options(ds.name)
    unknown = sorted(set(ds.options) - set(allowed))
    if unknown:
        raise SpecError(_blame(spec, point, "dataset.options", ("dataset", "options"), origin),
                        f"unknown option(s) {', '.join(unknown)} for dataset {ds.name!r}; valid: {', '.join(sorted(allowed))}")
    augments = list(catalog.augments())
    if isinstance(ds.augment, str) and ds.augment not in augments:
        raise SpecError(_blame(spec, point, "dataset.augment", ("dataset", "augment"), origin),
                        f"unknown augment preset {ds.augment!r}; valid: {', '.join(augments)}")


def _check_files(
    spec: ExperimentSpec, resolved: ExperimentSpec, point: dict[str, Any], catalog: Catalog, data: DataCheck,
    origin: int | None, seen: set[str],
) -> None:
    """The point's dataset files and pretrained weights exist under the data directory (each asked once)."""
    ds, pretrained = resolved.dataset, resolved.model.pretrained
    key = json.dumps([ds.name, ds.options], sort_keys=True, default=str)
    if key not in seen:
        seen.add(key)
        missing = catalog.missing_data(ds.name, data.root, ds.options, download=data.download)
        if missing is not None:
            raise SpecError(_blame(spec, point, "dataset", ("dataset", "name"), origin), missing)
    if pretrained is not None and "pretrained:" + pretrained not in seen:
        seen.add("pretrained:" + pretrained)
        try:
            path = confine(data.root, pretrained, "model.pretrained")
        except PathEscapeError as exc:
            raise SpecError(_blame(spec, point, "model.pretrained", ("model", "pretrained"), origin), str(exc)) from None
        if not path.is_file():
            raise SpecError(
                _blame(spec, point, "model.pretrained", ("model", "pretrained"), origin),
                f"model.pretrained: expected the weights file {path}, which does not exist. Put the state dict "
                "(a torch.save'd .pt or .pth) there, relative to the data directory (VITSWEEP_DATA_DIR).",
            )


def _check_arch_blocks(spec: ExperimentSpec, paths: list[str]) -> None:
    """Every per-model arch block (given or searched) belongs to a model this sweep can choose: a block for any
    other model would be silently ignored, which is nearly always a typo."""
    names = [n for n in model_choices(spec) if isinstance(n, str)]
    for name in spec.model.arch_by_model:
        if name not in names:
            raise SpecError(("model", "arch_by_model", name),
                            f"arch_by_model has a block for {name!r}, but model.name only takes {', '.join(names)}")
    for path in paths:
        keys = path.split(".")
        if keys[:2] == ["model", "arch_by_model"] and keys[2] not in names:
            raise SpecError(spec.plan_loc(path), f"{path} is for model {keys[2]!r}, but model.name only takes {', '.join(names)}")


def _check_search_options(search: SearchSpec) -> None:
    """Build the sampler and pruner once, so options they do not take fail the submission, not every trial."""
    checks: list[tuple[str, str, Callable[[], object]]] = [
        ("pruner_options", search.pruner, lambda: make_pruner(search.pruner, search.pruner_options))
    ]
    if search.sampler != "grid":  # grids pin every trial's values; the sampler's options are unused
        checks.insert(0, ("sampler_options", search.sampler, lambda: make_sampler(search.sampler, search.sampler_options)))
    for field, kind, build in checks:
        try:
            build()
        except (TypeError, ValueError, OverflowError) as exc:
            raise SpecError(("search", field), f"{field.split('_')[0]} {kind!r} refuses these options: {exc}") from None


def _check_model(resolved: ExperimentSpec, loc: tuple[str | int, ...], what: str) -> None:
    """Build the model on the meta device: catches bad architectures without allocating any weights, and
    counts its parameters."""
    import torch

    from vitmodels import create_model

    try:
        with torch.device("meta"):
            model = create_model(
                resolved.model.name,
                num_classes=10,
                img_size=resolved.dataset.img_size,
                in_chans=resolved.dataset.in_chans,
                code_size=resolved.model.code_size,
                stn=resolved.model.stn,
                **resolved.model.arch,
            )
    except (ValueError, TypeError) as exc:
        raise SpecError(loc, f"{what} cannot be built: {exc}") from None
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAM_COUNT:
        raise SpecError(
            loc, f"{what} has {count:,} parameters, more than {MAX_PARAM_COUNT:,}: at 16 bytes a parameter (weights, "
            "gradients, Adam's moments) no single device trains it"
        )
