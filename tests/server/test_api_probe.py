"""``train.svc_probe`` over HTTP: true, false, or {every, samples}; bad values a 422 at their path, nothing stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.core.models import Sweep, Trial
from tests.conftest import SQLITE_ONLY
from tests.helpers import quick_spec
from tests.server.test_api_spec_keys import _count, _submit


@SQLITE_ONLY
@pytest.mark.parametrize("probe", [True, False, {"every": 2, "samples": 1000}, {"every": 0}, {"samples": 64}, {}])
def test_svc_probe_forms_are_accepted(client: Any, probe: Any) -> None:
    r = _submit(client, quick_spec(train={"svc_probe": probe}))
    assert r.status_code == 201, r.text
    stored = r.json()["spec"]["train"]["svc_probe"]
    assert stored == (probe if isinstance(probe, bool) else {"every": 0, "samples": 5000, **probe})


BAD = [
    ({"every": -1}, ["every"], ["greater than or equal to 0"]),
    ({"samples": 1}, ["samples"], ["greater than or equal to 2"]),
    ({"samples": 10**7}, ["samples"], ["less than or equal to 100000"]),
    ({"each": 2}, ["each"], ["extra inputs are not permitted"]),
    ({"every": "often"}, ["every"], ["valid integer"]),
    ("sometimes", [], ["true, false or {every: N, samples: M}"]),
    (3, [], ["true, false or {every: N, samples: M}"]),
]


@SQLITE_ONLY
@pytest.mark.parametrize(("probe", "loc", "fragments"), BAD, ids=lambda v: json.dumps(v)[:40])
def test_bad_svc_probe_is_a_422_at_its_path(
    client: Any, backends: Any, probe: Any, loc: list[str], fragments: list[str]
) -> None:
    r = _submit(client, quick_spec(train={"svc_probe": probe}))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    hits = [d for d in detail if d["loc"] == ["body", "train", "svc_probe", *loc]]
    assert hits, detail
    for fragment in fragments:
        assert any(fragment.lower() in d["msg"].lower() for d in hits), (fragment, detail)
    assert _count(backends, Sweep) == 0 and _count(backends, Trial) == 0
