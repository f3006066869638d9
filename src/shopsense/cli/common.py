"""What every command group shares: the consoles, settings and the shop facade with clean exits on errors,
the ``--json`` option, the spinner for long jobs, table and cell printing, and the ids a command is given
(typed, or a file of user ids) under the one id rule."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from shopsense.domain import checked_id, plain_ids
from shopsense.errors import ConfigError, ShopsenseError
from shopsense.settings import Settings, load_settings

if TYPE_CHECKING:
    from shopsense.services.shop import Shop

console = Console(stderr=True)
out = Console()

JsonOpt = Annotated[bool, typer.Option("--json", help="print the report as JSON on stdout")]


@contextmanager
def _settings(ctx: typer.Context) -> Iterator[Settings]:
    """Build settings, and turn shopsense errors raised inside the block into clean exits."""
    with _plain_exits():
        yield load_settings(ctx.obj["config"], data_dir=ctx.obj["data_dir"], store_url=ctx.obj["store_url"])


@contextmanager
def _plain_exits() -> Iterator[None]:
    """Print errors the user can act on as one plain message and exit: 2 for options, 1 for data.

    An OSError (a folder that cannot be created, a full disk, no permission) is about the
    user's files too, so it gets the same plain treatment instead of a traceback.
    """
    try:
        yield
    except ConfigError as exc:
        console.print(f"error: {exc}", highlight=False, markup=False, style="bold red")
        raise typer.Exit(2) from exc
    except ShopsenseError as exc:
        console.print(f"error: {exc}", highlight=False, markup=False, style="red")
        raise typer.Exit(1) from exc
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        console.print(f"error: {exc.strerror or exc}{where}", highlight=False, markup=False, style="red")
        raise typer.Exit(1) from exc


@contextmanager
def _shop(ctx: typer.Context, *, read_only: bool = False) -> Iterator[Shop]:
    """Settings and the facade every command goes through (its store closed afterwards), with clean exits.

    ``read_only``: for commands that only read the store; on the embedded store they then run beside
    each other (never beside a writer: the error names the command that holds it).
    """
    from shopsense.services.shop import Shop

    with _settings(ctx) as settings, Shop(settings, read_only=read_only) as shop:
        yield shop


@contextmanager
def _stages(label: str) -> Iterator[None]:
    """A spinner with the elapsed time and the step a long job is at, read from shopsense's INFO log records."""
    import logging

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task(label)

        class Step(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.levelno >= logging.WARNING:  # printed above the spinner, and kept
                    console.print(f"warning: {record.getMessage()}", highlight=False, markup=False, style="yellow")
                else:
                    bar.update(task, description=f"{label}: {record.getMessage()}")

        logger, handler = logging.getLogger("shopsense"), Step(logging.INFO)
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)


def echo_json(value: Any, *, indent: int | None = 2) -> None:
    """Print ``value`` as strict JSON: a NaN or infinite number (an undefined score, a metric of an empty
    split) becomes null, which every JSON reader takes, where ``json.dumps`` would write ``NaN``, which none
    must; times and other objects as their text."""
    typer.echo(json.dumps(_finite(value), indent=indent, default=str, allow_nan=False))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _print_table(table: Any, title: str, as_json: bool) -> None:
    rows = table.to_pylist()
    if as_json:
        echo_json(rows)
        return
    view = Table(title=title, highlight=False)
    for column in table.column_names:
        view.add_column(column, overflow="fold")
    for row in rows:
        view.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    out.print(view)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def cli_id(value: str, what: str) -> str:
    """An id typed on the command line, under the rule every id follows (:func:`shopsense.domain.checked_id`).

    Returns:
        The id in Unicode NFC, as it is stored, so a decomposed "café" finds the composed one.

    Raises:
        ConfigError: it holds a control, bidi or zero-width character (exit 2), which would otherwise
            quietly match no stored id.
    """
    try:
        return checked_id(value)
    except ValueError as exc:
        raise ConfigError(f"{what} {value!r} {exc}; remove that character") from None


def _read_ids(path: Path) -> list[str]:
    """One user id per line (blank lines ignored; a first line ``user_id`` is a header), each under the id
    rule (:func:`cli_id`)."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read user ids from {path}: {exc}") from exc
    if not plain_ids("".join(lines)):
        lines = [cli_id(line, f"{path}: line {at}:") if line else line for at, line in enumerate(lines, 1)]
    ids = [line for line in lines if line]
    return ids[1:] if ids[:1] == ["user_id"] else ids
