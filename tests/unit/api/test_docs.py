"""The interactive docs work offline: every asset /docs and /redoc load is served by shopsense, keyless."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from shopsense.api.app import create_app
from shopsense.settings import Settings
from tests.unit.api.conftest import Api

_ASSET = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']|url: ?'([^']+)'""")
_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


def _assets(client: TestClient, page: str) -> list[str]:
    """The URLs a docs page makes the browser load, after checking none is remote."""
    response = client.get(page)
    assert response.status_code == 200, response.text
    html = response.text
    assert not re.search(r"https?://|[\"']//", html), f"{page} loads something from another host:\n{html}"
    return [a or b for a, b in _ASSET.findall(html)]


def _served(client: TestClient, urls: list[str]) -> None:
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, f"{url}: {response.status_code}"
        assert response.content, f"{url} is empty"
        kind = _TYPES[Path(url).suffix]
        assert kind in response.headers["content-type"], f"{url}: {response.headers['content-type']}"


def test_docs_pages_load_only_local_assets_without_a_key(api: Api) -> None:
    swagger = _assets(api.client, "/docs")
    assert {Path(u).name for u in swagger} >= {"swagger-ui-bundle.js", "swagger-ui.css", "openapi.json"}
    redoc = _assets(api.client, "/redoc")
    assert {Path(u).name for u in redoc} >= {"redoc.standalone.js", "openapi.json"}
    _served(api.client, swagger + redoc)  # no key sent: the docs are as open as the schema
    assert api.client.get("/docs/oauth2-redirect").status_code == 200
    bundle = api.client.get("/docs-assets/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in bundle and 'PACKAGE_VERSION:"5.' in bundle, "Swagger UI 5 reads OpenAPI 3.1"
    assert api.client.get("/openapi.json").json()["openapi"].startswith("3.1")


def test_docs_assets_follow_the_proxy_prefix(tmp_path: Path) -> None:
    client = TestClient(create_app(Settings(data_dir=tmp_path)), root_path="/shop")  # no lifespan: no store needed
    for page in ("/docs", "/redoc"):
        urls = _assets(client, page)
        assert urls and all(u.startswith("/shop/") for u in urls), urls
        _served(client, [u for u in urls if not u.endswith("openapi.json")])


def test_docs_routes_stay_out_of_the_schema(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]
