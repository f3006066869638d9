"""Store URLs are printed without their passwords."""

from __future__ import annotations

import pytest

from shopsense.store.base import shown_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://shop:s3cret@db:5432/shop", "postgresql://shop:***@db:5432/shop"),
        (
            "postgresql://shop@db/shop?password=s3cret&sslmode=require",
            "postgresql://shop@db/shop?password=***&sslmode=require",
        ),
        ("postgresql://:s3cret@/shop?host=/tmp", "postgresql://:***@/shop?host=/tmp"),
        ("duckdb:///relative/shop.duckdb", "duckdb:///relative/shop.duckdb"),
        ("duckdb:////srv/shop.duckdb", "duckdb:////srv/shop.duckdb"),
        ("postgresql:///shop", "postgresql:///shop"),
    ],
)
def test_passwords_are_hidden_and_everything_else_kept(url: str, shown: str) -> None:
    assert shown_url(url) == shown
