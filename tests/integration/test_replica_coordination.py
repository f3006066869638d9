"""Two API replicas over one PostgreSQL database and one data directory agree on keys, rate limits and bundles.

Each test runs two in-process apps (lifespans and coordination loops running) over a fresh database.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shopsense.api.app import create_app
from shopsense.api.deps import RateLimiter
from shopsense.domain import RecordKind
from shopsense.ingest.mapping import load_mapping
from shopsense.ingest.synthetic import GeneratorConfig, generate
from shopsense.services.coordination import BEAT_S
from shopsense.services.shop import Shop
from shopsense.settings import Settings
from shopsense.store import pool

pytestmark = pytest.mark.integration

QUICK = 'name = "quick"\n[[ranker.candidates.sources]]\nname = "trending"\nmodel = "popular"\nn = 20\n'
"""A pipeline with one candidate source: trains in about a second."""
OLDER = "20000101T000000-000000"
FOLLOW_S = 2.5
"""How long a replica may take to serve a decision another one made (a beat, then the swap)."""


@pytest.fixture(autouse=True)
def pool_for_two_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replicas are processes, each with its own connection pool; these two share one process, so their pool
    (made for each test's fresh database) holds what two would: both replicas' store handles and key checks."""
    monkeypatch.setattr(pool, "POOL_MAX", 2 * pool.POOL_MAX)


@pytest.fixture(scope="module")
def shop_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out: Path = tmp_path_factory.mktemp("small-shop")
    generate(GeneratorConfig(users=80, items=40, events=2_000, days=30, seed=5), out)
    return out


def shared_settings(postgres_url: str, data: Path, **serve: object) -> Settings:
    (data / "pipelines").mkdir(parents=True, exist_ok=True)
    (data / "pipelines" / "quick.toml").write_text(QUICK)
    return Settings(data_dir=data, store_url=postgres_url, serve={"pipeline": "quick", "reload_seconds": 0, **serve})  # type: ignore[arg-type]


@contextmanager
def two_replicas(settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        yield first, second


def cli(settings: Settings, *args: str) -> str:
    from shopsense.cli import app

    where = ["--data-dir", str(settings.data_dir), "--store-url", str(settings.store_url)]
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, [*where, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return str(result.stdout)


def make_key(settings: Settings, scope: str) -> str:
    with Shop(settings) as shop:
        return shop.keys.create("test", [scope])[0]


def wait_until(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def pins(url: str) -> list[tuple[str | None, str]]:
    with psycopg.connect(url) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT version, action FROM bundle_pins ORDER BY id").fetchall()]


def served(client: TestClient) -> str | None:
    version: str | None = client.get("/ready").json()["model_version"]
    return version


def test_a_key_made_anywhere_works_on_both_and_a_revocation_holds_at_the_next_request(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = shared_settings(postgres_url, tmp_path / "data")
    with two_replicas(settings) as (a, b):
        from_cli = cli(settings, "keys", "create", "ops", "--scope", "admin").strip().splitlines()[-1]
        from_a, record = a.app.state.shop.keys.create("dashboard", ["admin"])  # type: ignore[attr-defined]
        for key in (from_cli, from_a):
            for replica in (a, b):
                assert replica.get("/v1/admin/models", headers={"X-API-Key": key}).status_code == 200
        assert not (settings.data_dir / "keys.json").exists(), "keys of a shared store live in its database"
        a.app.state.shop.keys.revoke(record.key_id)  # type: ignore[attr-defined]
        refused = b.get("/v1/admin/models", headers={"X-API-Key": from_a})
        assert refused.status_code == 401, "the other replica refuses it at its very next request"
        assert b.get("/v1/admin/models", headers={"X-API-Key": from_cli}).status_code == 200
        cli(settings, "keys", "revoke", from_cli.split("_")[1])
        assert a.get("/v1/admin/models", headers={"X-API-Key": from_cli}).status_code == 401
        listed = cli(settings, "keys", "list", "--json")
        assert '"revoked_at": null' not in listed and '"name": "ops"' in listed


def test_two_replicas_each_admit_half_of_a_keys_limit(postgres_url: str, tmp_path: Path) -> None:
    settings = shared_settings(postgres_url, tmp_path / "data", rate_per_second=0.01, rate_burst=6)
    headers = {"X-API-Key": make_key(settings, "admin")}
    with two_replicas(settings) as (a, b):
        limiters = [r.app.state.limiter for r in (a, b)]  # type: ignore[attr-defined]
        assert wait_until(lambda: all(limiter.burst == 3 for limiter in limiters), 3 * BEAT_S), "each sees two"
        for replica in (a, b):
            codes = [replica.get("/v1/admin/models", headers=headers).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429], "half the burst each: the sum stays at the configured 6"
    with TestClient(create_app(settings)) as alone:
        limiter = alone.app.state.limiter  # type: ignore[attr-defined]
        assert limiter.burst == 6, "the others left (their rows are gone): the whole limit again"


def test_promotions_pins_and_rollbacks_are_rows_every_replica_follows(
    postgres_url: str, tmp_path: Path, shop_files: Path
) -> None:
    settings = shared_settings(postgres_url, tmp_path / "data")
    with Shop(settings) as shop:
        shop.data.import_file(shop_files / "items.parquet", load_mapping(None, RecordKind.ITEMS, {}))
        shop.data.import_file(shop_files / "events.parquet", load_mapping(None, RecordKind.EVENTS, {}))
        trained = shop.recommendations.train("quick").bundle.version
    assert pins(postgres_url) == [(trained, "promote")], "training records its promotion"
    models = settings.data_dir / "models" / "quick"
    shutil.copytree(models / trained, models / OLDER)
    (models / OLDER / "bundle.json").write_text((models / OLDER / "bundle.json").read_text().replace(trained, OLDER))
    admin = {"X-API-Key": make_key(settings, "admin")}

    with two_replicas(settings) as (a, b):
        assert served(a) == served(b) == trained
        rolled = a.post("/v1/admin/models/rollback", headers=admin).json()
        assert rolled["serving"] == OLDER and rolled["pinned"] == OLDER
        assert pins(postgres_url)[-1] == (OLDER, "rollback")
        assert wait_until(lambda: served(b) == OLDER, FOLLOW_S), "the other replica follows the newest row"
        assert "*" in next(
            line for line in cli(settings, "models", "list", "--pipeline", "quick").splitlines() if OLDER in line
        )

        cli(settings, "models", "pin", "--latest", "--pipeline", "quick")
        assert pins(postgres_url)[-1] == (None, "latest")
        assert wait_until(lambda: served(a) == served(b) == trained, FOLLOW_S), "no version named: the newest"

        cli(settings, "models", "pin", OLDER, "--pipeline", "quick")
        assert pins(postgres_url)[-1] == (OLDER, "pin")
        assert wait_until(lambda: served(a) == served(b) == OLDER, FOLLOW_S)

        def both_report(version: str) -> bool:
            body = a.get("/v1/admin/replicas", headers=admin).json()
            return len(body["replicas"]) == 2 and {r["bundle_version"] for r in body["replicas"]} == {version}

        assert wait_until(lambda: both_report(OLDER), 2 * BEAT_S), "each heartbeat tells the version served"
        body = b.get("/v1/admin/replicas", headers=admin).json()
        assert body["this"] in {r["replica_id"] for r in body["replicas"]}
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM replicas").fetchone() == (0,), "a stopped replica leaves"


def test_the_embedded_store_serves_alone_with_the_whole_limit(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", serve={"reload_seconds": 0, "rate_burst": 6})  # type: ignore[arg-type]
    headers = {"X-API-Key": make_key(settings, "admin")}
    with TestClient(create_app(settings)) as alone:
        body = alone.get("/v1/admin/replicas", headers=headers).json()
        assert [r["replica_id"] for r in body["replicas"]] == [body["this"]]
        assert alone.app.state.limiter.burst == 6  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("replicas", "rate", "burst"), [(1, 10.0, 6.0), (2, 5.0, 3.0), (4, 2.5, 1.5), (12, 10 / 12, 1.0)]
)
def test_each_replica_admits_its_share_and_never_less_than_one_request(
    replicas: int, rate: float, burst: float
) -> None:
    limiter = RateLimiter(10.0, 6)
    limiter.share(replicas)
    assert (limiter.rate, limiter.burst) == pytest.approx((rate, burst))
    assert limiter.take("k") == 0.0, "a share of the burst below one request would never admit any"
