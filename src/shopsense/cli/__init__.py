"""The ``shopsense`` command line: a thin shell over :mod:`shopsense.services`.

Errors shopsense raises on purpose are printed as plain messages (no traceback) with a
non-zero exit code: 1 for bad data, 2 for bad options or configuration.

One module per command group: data.py (init, import, stats, export, generate), recommend.py (evaluate, train,
recommend, similar, models), serve.py (serve, keys), marketing.py (profiles, segment, clusters, audience,
campaign), privacy.py (erase) and jobs.py (jobs list, show, watch); common.py holds what they share. This module
builds ``app`` from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shopsense.cli import data, jobs, marketing, privacy, recommend, serve

__all__ = ["app"]

# Start-up: `shopsense --help` and the data commands import only what they need. The evaluation harness
# (scipy.stats), the models (torch for the neural ones), LightGBM, scikit-learn and matplotlib are imported
# inside the commands that use them; tests/unit/test_imports.py checks it.

app = typer.Typer(
    help="shopsense: recommendations and precision marketing from one event stream.", no_args_is_help=True
)


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None, typer.Option(help="data directory (default .shopsense or $SHOPSENSE_DATA_DIR)")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="settings TOML (default $SHOPSENSE_CONFIG)")] = None,
    store_url: Annotated[str | None, typer.Option(help="store URL, e.g. duckdb:///path/file.duckdb")] = None,
) -> None:
    """Global options; every command reads the same settings."""
    ctx.obj = {"data_dir": data_dir, "config": config, "store_url": store_url}


# `shopsense --help` lists the commands in the order they are registered here, then the groups.
app.command()(data.init)
app.command()(data.migrate)
app.command("migrate-store")(data.migrate_store)
app.command()(data.backup)
app.command()(data.restore)
app.command()(data.stats)
app.command()(data.export)
app.command("generate")(data.generate_cmd)
app.command()(recommend.evaluate)
app.command()(recommend.train)
app.command()(recommend.recommend)
app.command()(recommend.similar)
app.command()(serve.serve)
app.command()(privacy.erase)
app.command()(marketing.segment)
app.command()(marketing.clusters)
app.command()(marketing.audience)
app.add_typer(data.import_app, name="import")
app.add_typer(serve.keys_app, name="keys")
app.add_typer(marketing.profiles_app, name="profiles")
app.add_typer(marketing.campaign_app, name="campaign")
app.add_typer(recommend.models_app, name="models")
app.add_typer(jobs.jobs_app, name="jobs")
