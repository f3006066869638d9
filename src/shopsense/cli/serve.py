"""Serving commands: ``serve`` (the REST API) and ``keys create|list|revoke`` (its API keys)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from shopsense.cli.common import JsonOpt, _settings, _shop, console, echo_json, out
from shopsense.errors import ConfigError

keys_app = typer.Typer(
    help=(
        "API keys for the REST service, stored hashed: in <data_dir>/keys.json, or with a postgresql:// store in "
        "its api_keys table, which every replica reads."
    ),
    no_args_is_help=True,
)


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="listen address (default serve.host, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default serve.port, 8000)")] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="server processes on the one port, each a replica (needs a postgresql:// store)")
    ] = 1,
) -> None:
    """Run the REST API (docs at /docs) over the store and the newest trained bundle."""
    import uvicorn

    from shopsense.api.app import WORKER_SETTINGS, create_app

    with _settings(ctx) as settings:
        if workers > 1 and not settings.resolved_store_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                f"--workers {workers}: the embedded store admits one process; use a postgresql:// store (--store-url)"
            )
        host, port = host or settings.serve.host, port or settings.serve.port
        console.print(f"serving http://{host}:{port} (docs: http://{host}:{port}/docs)", highlight=False)
        if workers == 1:
            uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)
            return
        # Worker processes import the app by name, so they get the settings resolved here (file, environment
        # and flags) whole, through their inherited environment.
        os.environ[WORKER_SETTINGS] = settings.model_dump_json()
        uvicorn.run(
            "shopsense.api.app:worker_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
        )


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="who or what uses the key, e.g. web-frontend")],
    scope: Annotated[list[str], typer.Option("--scope", help="events:write, recommend:read or admin (repeatable)")],
) -> None:
    """Create an API key; the key is printed once and only its hash is kept."""
    with _shop(ctx) as shop:
        key, record = shop.keys.create(name, scope)
    console.print(f"created key {record.key_id} ({', '.join(record.scopes)}); store it now, it is not shown again:")
    typer.echo(key)


@keys_app.command("list")
def keys_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List keys (ids, names, scopes, created, revoked); never the secrets."""
    with _shop(ctx) as shop:
        records = [r.public() for r in shop.keys.list()]
    if as_json:
        echo_json(records)
        return
    table = Table(title="API keys", highlight=False)
    for column in ("id", "name", "scopes", "created", "revoked"):
        table.add_column(column)
    for r in records:
        scopes = r["scopes"]
        assert isinstance(scopes, tuple)
        table.add_row(
            str(r["key_id"]), str(r["name"]), ", ".join(scopes), str(r["created_at"]), str(r["revoked_at"] or "")
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="the key's id")]) -> None:
    """Revoke a key; every running server (each replica) refuses it from its next request."""
    with _shop(ctx) as shop:
        record = shop.keys.revoke(key_id)
    console.print(f"revoked key {record.key_id} ({record.name})", highlight=False)
