"""Schemathesis over the OpenAPI schema: no 5xx, every response documented and matching its schema, valid data
accepted and invalid data refused."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection

from shopsense.api.app import create_app
from shopsense.services.keys import KeyRing
from shopsense.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fuzzed_app(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, str]]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    shutil.copytree(trained, data)
    key, _ = KeyRing(data / "keys.json").create("fuzz", ["admin"])
    app = create_app(Settings(data_dir=data, serve={"reload_seconds": 0, "rate_per_second": 1e6}))  # type: ignore[arg-type]
    with TestClient(app):  # runs the lifespan: store open, bundle loaded, for the whole module
        yield app, key


POSITIVE_STATUSES = ["2xx", "400", "404", "409"]
"""What schema-valid data may get: success, or a documented refusal of what the data asks (an unknown
pipeline or campaign, profiles not built yet, an event type or time outside the settings: 400, 404, 409).
Never 422: a 422 says the data breaks the schema, so the schema and the validation would disagree."""


BATCHES = frozenset({"/v1/events", "/v1/items", "/v1/users"})
"""Routes taking a batch: each record refused on its own, listed in a 200 answer, the others committed."""


def _crossed(case: schemathesis.Case) -> bool:
    """A rule across parameters that OpenAPI cannot state, refused with 422: min_price above max_price."""
    query = case.query or {}
    low, high = query.get("min_price"), query.get("max_price")
    return low is not None and high is not None and float(low) > float(high)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_schema(fuzzed_app: tuple[FastAPI, str], mode: GenerationMode) -> None:
    """Every operation, fuzzed from its schema with an admin key, by every check: no 5xx, each status and
    body documented, schema-valid data accepted (or refused as documented, see :data:`POSITIVE_STATUSES`)
    and schema-invalid data refused with a 4xx.

    Driven through hypothesis directly: schemathesis' pytest plugin does not load under pytest 9.
    """
    app, key = fuzzed_app
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.config.checks.positive_data_acceptance.expected_statuses = POSITIVE_STATUSES
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not (operation.path_parameters or operation.query or operation.body):
            continue  # nothing it takes can be invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: schemathesis.Case) -> None:
            assume(mode is GenerationMode.NEGATIVE or not _crossed(case))
            batch = mode is GenerationMode.NEGATIVE and isinstance(case.body, list) and case.path in BATCHES
            excluded = [negative_data_rejection] if batch else []
            response = case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, excluded_checks=excluded)
            if batch and response.status_code == 200:
                assert response.json()["rejected"], f"{case.path}: an invalid batch was accepted whole"

        fuzz()
