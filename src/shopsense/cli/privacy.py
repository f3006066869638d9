"""Privacy commands: ``erase`` (a data subject's right to erasure), through the Shop facade."""

from __future__ import annotations

from typing import Annotated

import typer

from shopsense.cli.common import JsonOpt, _shop, cli_id, console, echo_json


def erase(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="the user's id (the id rule applies: NFC, no invisible characters)")],
    retrain: Annotated[
        bool, typer.Option("--retrain", help="train the served pipeline at once on what is left")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase a user everywhere: store rows, stored bundles' answers; every bundle treats the id as unknown."""
    user_id = cli_id(user_id, "USER_ID")
    with _shop(ctx) as shop:
        erased = shop.erase(user_id, retrain=retrain)
    if as_json:
        echo_json(erased.to_dict())
        return
    deleted = ", ".join(f"{n:,} {table}" for table, n in erased.deleted.items() if n) or "nothing stored"
    models = erased.models
    console.print(f"erased {user_id!r}: {deleted}; a tombstone (its SHA-256) is kept", highlight=False)
    learnt = ", ".join(models["bundles"]) or "precomputed answers only"
    console.print(
        f"models: {models['answers_removed']:,} precomputed answer rows removed; "
        + (f"bundles that may have learnt from the user: {learnt}; " if models["trained_on_user"] else "")
        + f"forgotten at: {models['forgotten_at']}",
        highlight=False,
    )
    if models.get("answers_not_purged"):
        console.print(
            f"[yellow]answers not rewritten in:[/] {', '.join(models['answers_not_purged'])} (see the log); "
            "they never answer for the user, being checked against the tombstone when loaded",
            highlight=False,
        )
    if "retrain_error" in models:
        console.print(f"[yellow]not retrained:[/] {models['retrain_error']}", highlight=False)
