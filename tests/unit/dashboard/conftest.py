"""The dashboard over the trained data directory the API tests use, signed in through its form."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.unit.api.conftest import Api, make_api

CSRF = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


@pytest.fixture
def dash(trained: Path, tmp_path: Path) -> Iterator[Api]:
    data = tmp_path / "data"
    shutil.copytree(trained, data)
    yield from make_api(data)


def sign_in(client: TestClient, key: str) -> str:
    """Sign ``client`` in with ``key``; the session's CSRF token (read from a page, as a browser would)."""
    answer = client.post("/signin", data={"key": key, "next": "/"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    page = client.get("/items")
    assert page.status_code == 200, page.text
    found = CSRF.search(page.text)
    assert found and found.group(1), "every page carries its session's CSRF token"
    return found.group(1)
