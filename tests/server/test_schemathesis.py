"""Schemathesis against the published OpenAPI schema: every operation, schema-valid and schema-violating input,
on PostgreSQL (the stricter backend: 32-bit ids, no NUL in text). No 5xx; every 4xx carries a JSON ``detail``.

Examples are bounded (``MAX_EXAMPLES`` per operation and mode) and derandomized, so the run is fast and repeatable.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

TOKEN = "schemathesis-token-0123456789"
MAX_EXAMPLES = 20
# Each call of these builds every registered model (on the meta device): a few examples cover its two parameters.
FEWER_EXAMPLES = {"GET /api/v1/models": 5}


@pytest.fixture
def app(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    import migrations
    from server.api.checks import plan_checker
    from server.core.backends import make_backends
    from server.core.config import Settings
    from server.main import create_app
    from vitmodels import describe_models

    for key in list(os.environ):
        if key.startswith("VITSWEEP_"):
            monkeypatch.delenv(key)
    config = Settings(home=tmp_path / "home", database_url=pg_url, api_token=TOKEN)
    migrations.upgrade(config.db_url)
    backends = make_backends(config)
    app = create_app(config, backends)
    # Imports of seconds, not within a request's timeout: the spec checks' fork server (torch and the models), and
    # the models' upstream code in this process (GET /models builds every model; the API imports torch for it).
    plan_checker(app).warm()
    describe_models(img_size=32)
    yield app
    backends.sessions.kw["bind"].dispose()


def _has_message(response: Any) -> str | None:
    """Why a 4xx response lacks a usable message, or None when it has one."""
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.content[:200]!r}"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail.strip():
        return None
    if isinstance(detail, list) and detail and all(isinstance(d, dict) and str(d.get("msg", "")).strip() for d in detail):
        return None
    return f"no detail message: {str(body)[:200]}"


def _fuzz(label: str, strategy: Any, check: Callable[[str, Any], None], examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        check(label, case)

    run()


@pytest.mark.slow
@pytest.mark.postgres
def test_no_5xx_and_every_4xx_has_a_message(app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    statuses: collections.Counter[tuple[str, int]] = collections.Counter()
    problems: list[str] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}  # so mutating operations get past auth and do their work

    def check(label: str, case: Any) -> None:
        response = case.call(headers=headers)
        statuses[(label, response.status_code)] += 1
        if 400 <= response.status_code < 500:
            why = _has_message(response)
            if why:
                problems.append(f"{label}: {response.status_code} {why}\n  {case.as_curl_command()}")
        if response.status_code >= 500:
            problems.append(f"{label}: {response.status_code} {response.content[:300]!r}\n  {case.as_curl_command()}")

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    for operation in operations:
        strategies = [(mode.value, operation.as_strategy(generation_mode=mode))
                      for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
        strategies += [("example", s) for s in operation.get_strategies_from_examples()]
        for mode, strategy in strategies:
            try:
                _fuzz(f"{operation.label} [{mode}]", strategy, check, FEWER_EXAMPLES.get(operation.label, MAX_EXAMPLES))
            except Unsatisfiable:  # no schema-violating input exists for an operation without inputs
                assert mode == GenerationMode.NEGATIVE.value, operation.label

    total = sum(statuses.values())
    by_code = collections.Counter()
    for (_, code), n in statuses.items():
        by_code[code] += n
    print(f"\nschemathesis: {len(operations)} operations, {total} requests, by status {dict(sorted(by_code.items()))}")
    assert not problems, "\n".join(problems[:20])
    assert total >= (len(operations) - len(FEWER_EXAMPLES)) * MAX_EXAMPLES
    # The fuzzing reached the real work, not only the validation layer.
    assert by_code[201] >= 1, "no spec was ever accepted: is the example in the schema still valid?"
