"""Data commands: ``init``, ``migrate``, ``migrate-store``, ``backup``, ``restore``,
``import events|items|users|dataset``, ``stats``, ``export`` and ``generate``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from shopsense.cli.common import JsonOpt, _plain_exits, _shop, console, echo_json, out
from shopsense.domain import RecordKind
from shopsense.ingest.adapters import ADAPTERS
from shopsense.ingest.importer import Duplicates, ImportReport, OnError
from shopsense.ingest.mapping import ExtraColumns, ZeroQuantity, load_mapping, parse_pairs
from shopsense.ingest.source import Format
from shopsense.services.data import Migrated

HeaderlessOptions = tuple[bool, str | None, ZeroQuantity | None]
"""``--no-header``, ``--columns`` and ``--zero-quantity`` of an import command, as given."""
import_app = typer.Typer(help="Import events, items, users or a public dataset.", no_args_is_help=True)
_STEPS = ["reading", "validating", "checking duplicates", "writing"]


def init(ctx: typer.Context) -> None:
    """Create the data directory and the store (embedded by default), or bring its schema up to date."""
    with _shop(ctx) as shop:
        _print_migrated(shop.data.init())


def migrate(ctx: typer.Context) -> None:
    """Apply the schema migrations a PostgreSQL store still needs (servers refuse an outdated schema)."""
    with _shop(ctx) as shop:
        _print_migrated(shop.data.migrate())


def migrate_store(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="the store to copy into, e.g. postgresql://user@host:5432/shop")],
    as_json: JsonOpt = False,
) -> None:
    """Copy this store (items, users, events, campaigns, assignments, profiles) into another, e.g. the embedded
    store into PostgreSQL; running it again adds nothing."""
    with _shop(ctx) as shop, _progress("copying") as step:
        copied = shop.data.copy_to(target, progress=step)
    if as_json:
        echo_json({"url": copied.url, "written": copied.written, "summary": copied.summary.to_dict()}, indent=None)
        return
    summary = copied.summary
    written = ", ".join(f"{n:,} {kind}" for kind, n in copied.written.items())
    console.print(f"[green]✓[/] copied into {copied.url}: {written} written", highlight=False)
    console.print(
        f"  it holds {summary.users:,} users, {summary.items:,} items, {summary.events:,} events; "
        "bundles stay in the data directory (point the servers at it, or train again); API keys are not copied: "
        "create them again for the new store (`shopsense keys create`)",
        highlight=False,
    )


def backup(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="the backup folder to create, e.g. backups/2026-12-07")],
    force: Annotated[bool, typer.Option("--force", help="replace the backup already at PATH")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the store (items, users, events, impressions, campaigns, assignments, profiles, erasure tombstones)
    into a new folder: Parquet files and a manifest of their rows and SHA-256, whole or not at all."""
    with _shop(ctx) as shop:
        done = shop.data.backup(path, force=force)
        url = shop.data.url
    if as_json:
        echo_json({"path": str(done.path), "rows": done.rows, "bytes": done.bytes})
        return
    rows = ", ".join(f"{n:,} {table}" for table, n in done.rows.items())
    console.print(f"[green]✓[/] backed up {url} to {done.path}: {rows} ({done.bytes:,} bytes)", highlight=False)
    console.print(
        "  not in it: API keys (create them again where you restore it, `shopsense keys create`) and model "
        "bundles (files in the data directory: copy them, or train again)",
        highlight=False,
    )


def restore(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="a folder `shopsense backup` wrote")],
    as_json: JsonOpt = False,
) -> None:
    """Check a backup (every file's size, SHA-256 and rows) and load it into the store; a damaged backup is
    refused before anything is written, and restoring one twice adds nothing."""
    with _shop(ctx) as shop, _progress("restoring") as step:
        restored = shop.data.restore(path, progress=step)
    if as_json:
        echo_json(
            {
                "url": restored.url,
                "written": restored.written,
                "skipped_erased": restored.skipped,
                "summary": restored.summary.to_dict(),
            }
        )
        return
    summary = restored.summary
    written = ", ".join(f"{n:,} {table}" for table, n in restored.written.items())
    console.print(f"[green]✓[/] restored {path} into {restored.url}: {written} added", highlight=False)
    if restored.skipped:
        console.print(f"  {restored.skipped:,} rows of erased users left out: they stay erased", highlight=False)
    console.print(
        f"  it holds {summary.users:,} users, {summary.items:,} items, {summary.events:,} events; "
        "API keys were not in the backup: the store's own are as they were",
        highlight=False,
    )


def _print_migrated(migrated: Migrated) -> None:
    for name in migrated.applied:
        console.print(f"  applied migration {name}", highlight=False)
    console.print(f"[green]✓[/] store ready at {migrated.url}", highlight=False)


@contextmanager
def _progress(label: str) -> Iterator[Any]:
    """A step bar for one import: reading → validating → checking duplicates → writing."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=len(_STEPS))

        def step(name: str) -> None:
            done = _STEPS.index(name) if name in _STEPS else 0
            bar.update(task, completed=done, description=f"{label}: {name}")

        yield step
        bar.update(task, completed=len(_STEPS))


def _print_report(report: ImportReport, as_json: bool) -> None:
    if as_json:
        return
    mark = "[red]✗[/]" if report.all_rejected else "[green]✓[/]"
    console.print(
        f"{mark} {report.source}: read {report.rows_read:,} rows, wrote {report.rows_written:,} "
        f"{report.kind}, {report.already_stored:,} already stored, {report.rows_rejected:,} rejected "
        f"({report.seconds:.1f}s)",
        highlight=False,
    )
    details = {
        "new users": report.new_users,
        "new items": report.new_items,
        "identical rows kept as separate events": report.duplicates_kept,
        "repeated rows collapsed": report.duplicates_collapsed,
        "rows of quantity 0 kept": report.zero_quantity_kept,
        "rows of quantity 0 dropped": report.zero_quantity_dropped,
    }
    for name, n in details.items():
        if n:
            console.print(f"    {name}: {n:,}", highlight=False)
    for reason, n in report.excluded.items():
        console.print(f"    excluded by the adapter — {reason}: {n:,}", highlight=False)
    for reason, n in report.problems_by_reason.items():
        console.print(f"    rejected — {reason}: {n:,}", highlight=False)
    if report.ignored_columns:
        console.print(f"    ignored columns: {', '.join(report.ignored_columns)}", highlight=False)
    for hint in report.hints:
        console.print(f"    hint — {hint}", highlight=False, markup=False)
    if report.rejects_file:
        console.print(f"    rejected rows and reasons: {report.rejects_file}", highlight=False)


def _exit_if_all_rejected(reports: list[ImportReport]) -> None:
    """Exit 1 when a source had every row rejected: ``--on-error skip`` imported nothing from it."""
    failed = [r for r in reports if r.all_rejected]
    for r in failed:
        console.print(
            f"error: {r.source}: all {r.rows_read:,} rows were rejected, so nothing was imported from it; "
            f"the reasons are above, the rows in {r.rejects_file}",
            highlight=False,
            markup=False,
            style="red",
        )
    if failed:
        raise typer.Exit(1)


OnErrorOpt = Annotated[
    OnError,
    typer.Option(
        "--on-error", help="fail: write nothing if any row is bad; skip: write the good rows, reject the rest to a file"
    ),
]
DupOpt = Annotated[
    Duplicates,
    typer.Option("--duplicates", help="identical event rows without event_id: keep (separate events), drop, or error"),
]


def _import_kind(
    ctx: typer.Context,
    kind: RecordKind,
    file: Path,
    mapping_file: Path | None,
    maps: list[str],
    consts: list[str],
    type_values: list[str],
    channel_values: list[str],
    timestamp_format: str | None,
    timezone: str | None,
    category_separator: str | None,
    extra: ExtraColumns | None,
    delimiter: str | None,
    encoding: str | None,
    fmt: Format | None,
    on_error: OnError,
    duplicates: Duplicates,
    as_json: bool,
    headerless: HeaderlessOptions,
) -> None:
    no_header, names, zero_quantity = headerless
    with _shop(ctx) as shop:
        service = shop.data
        overrides: dict[str, Any] = {
            "columns": {f: c for f, c in parse_pairs(maps, "--map").items()},
            "constants": parse_pairs(consts, "--const"),
            "type_values": parse_pairs(type_values, "--type-value"),
            "channel_values": parse_pairs(channel_values, "--channel-value"),
            "timestamp_format": timestamp_format,
            "timezone": timezone,
            "category_separator": category_separator,
            "extra": extra,
            "delimiter": delimiter,
            "encoding": encoding,
            "header": False if no_header else None,
            "source_columns": [n.strip() for n in names.split(",")] if names is not None else None,
            "zero_quantity": zero_quantity,
        }
        mapping = load_mapping(mapping_file, kind, overrides)
        with _progress(file.name) as step:
            report = service.import_file(file, mapping, fmt, on_error, duplicates, step)
        _print_report(report, as_json)
        if as_json:
            echo_json(report.to_dict())
        _exit_if_all_rejected([report])


def _kind_command(kind: RecordKind) -> None:
    def command(
        ctx: typer.Context,
        file: Annotated[Path, typer.Argument(help="CSV, Parquet or JSON Lines file (optionally .gz)")],
        mapping: Annotated[Path | None, typer.Option("--mapping", help="TOML mapping file")] = None,
        map_: Annotated[list[str] | None, typer.Option("--map", help="FIELD=COLUMN (repeatable)")] = None,
        const: Annotated[
            list[str] | None, typer.Option("--const", help="FIELD=VALUE for every row (repeatable)")
        ] = None,
        type_value: Annotated[
            list[str] | None, typer.Option("--type-value", help="SOURCE=TYPE event-type mapping")
        ] = None,
        channel_value: Annotated[
            list[str] | None, typer.Option("--channel-value", help="SOURCE=CHANNEL channel mapping")
        ] = None,
        timestamp_format: Annotated[str | None, typer.Option(help="strptime format, unix_s or unix_ms")] = None,
        timezone: Annotated[str | None, typer.Option(help="zone of timestamps without offset (default UTC)")] = None,
        category_separator: Annotated[str | None, typer.Option(help="category path separator (default '>')")] = None,
        extra: Annotated[ExtraColumns | None, typer.Option(help="unmapped columns: error, ignore, keep")] = None,
        delimiter: Annotated[str | None, typer.Option(help="CSV delimiter (default: detected)")] = None,
        encoding: Annotated[str | None, typer.Option(help="CSV encoding: utf-8, utf-16, latin-1")] = None,
        fmt: Annotated[Format | None, typer.Option("--format", help="file format (default: from the name)")] = None,
        no_header: Annotated[
            bool, typer.Option("--no-header", help="CSV/TSV: line 1 is data, not column names (name them: --columns)")
        ] = False,
        columns: Annotated[
            str | None, typer.Option("--columns", help="a headerless file's column names, in order: a,b,c")
        ] = None,
        zero_quantity: Annotated[
            ZeroQuantity | None,
            typer.Option("--zero-quantity", help="events with quantity 0: keep, drop (counted) or error (default)"),
        ] = None,
        on_error: OnErrorOpt = OnError.FAIL,
        duplicates: DupOpt = Duplicates.KEEP,
        as_json: JsonOpt = False,
    ) -> None:
        _import_kind(
            ctx, kind, file, mapping, map_ or [], const or [], type_value or [], channel_value or [], timestamp_format,
            timezone, category_separator, extra, delimiter, encoding, fmt, on_error, duplicates, as_json,
            (no_header, columns, zero_quantity),
        )  # fmt: skip

    command.__doc__ = f"Import {kind.value} from a file, validating every row."
    import_app.command(kind.value)(command)


for _kind in RecordKind:
    _kind_command(_kind)


@import_app.command("dataset")
def import_dataset(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help=f"one of: {', '.join(sorted(ADAPTERS))}")],
    paths: Annotated[
        list[Path] | None, typer.Argument(help="files or folder (default ../shared/datasets/<name>)")
    ] = None,
    on_error: OnErrorOpt = OnError.FAIL,
    duplicates: DupOpt = Duplicates.KEEP,
    as_json: JsonOpt = False,
) -> None:
    """Import a public retail dataset through its built-in adapter."""
    with _shop(ctx) as shop:
        service = shop.data
        with _progress(name) as step:
            reports = service.import_dataset(name, paths or [], on_error, duplicates, step)
        for report in reports:
            _print_report(report, as_json)
        if as_json:
            echo_json([r.to_dict() for r in reports])
        _exit_if_all_rejected(reports)


def stats(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    top: Annotated[int, typer.Option(help="how many top categories")] = 10,
    imports: Annotated[int, typer.Option(min=0, help="how many of the latest imports to list (JSON: all)")] = 10,
) -> None:
    """Users, items, events by type and channel, date range, funnel, top categories and the import log."""
    with _shop(ctx, read_only=True) as shop:
        service = shop.data
        summary = service.stats(top)
        if as_json:
            echo_json(summary.to_dict())
            return
        table = Table(title=f"shopsense store — {service.url}", show_header=False)
        table.add_row("users", f"{summary.users:,} ({summary.guest_users:,} guests)")
        table.add_row("items", f"{summary.items:,}")
        table.add_row("events", f"{summary.events:,}")
        table.add_row("period", f"{summary.first_event} → {summary.last_event}")
        table.add_row("by type", ", ".join(f"{k} {v:,}" for k, v in summary.events_by_type.items()))
        table.add_row("by channel", ", ".join(f"{k} {v:,}" for k, v in summary.events_by_channel.items()))
        table.add_row("net quantity", f"{summary.net_quantity:,.0f}")
        table.add_row("net revenue", f"{summary.net_revenue:,.2f}")
        out.print(table)
        funnel = Table(title="funnel view → cart → purchase")
        for col in ("step", "events", "users", "users vs first step"):
            funnel.add_column(col, justify="right" if col != "step" else "left")
        base = summary.funnel[0]["users"] or None
        for s in summary.funnel:
            share = f"{s['users'] / base:.1%}" if base else "—"
            funnel.add_row(s["step"], f"{s['events']:,}", f"{s['users']:,}", share)
        out.print(funnel)
        if summary.top_categories:
            cats = Table(title="top categories")
            for col in ("category", "events", "purchases"):
                cats.add_column(col)
            for c in summary.top_categories:
                cats.add_row(c["category"], f"{c['events']:,}", f"{c['purchases']:,}")
            out.print(cats)
        _print_imports(summary.imports, imports)


def _print_imports(log: list[dict[str, Any]], latest: int) -> None:
    """The newest ``latest`` rows of the import log, newest first."""
    if not latest or not log:
        return
    shown = sorted(log, key=lambda r: r["batch_id"], reverse=True)[:latest]
    title = "imports" if len(shown) == len(log) else f"latest {len(shown)} of {len(log):,} imports"
    view = Table(title=title, highlight=False)
    view.add_column("#", justify="right")
    view.add_column("kind")
    view.add_column("source", overflow="fold")
    view.add_column("time (UTC)")
    for column in ("received", "written", "already stored"):
        view.add_column(column, justify="right")
    for r in shown:
        when = str(r["imported_at"] or "").replace("T", " ").removesuffix("Z")
        counts = (f"{r[k]:,}" for k in ("received", "written", "already_stored"))
        view.add_row(str(r["batch_id"]), str(r["kind"]), str(r["source"]), when, *counts)
    out.print(view)


def export(
    ctx: typer.Context,
    kind: Annotated[RecordKind, typer.Argument(help="events, items or users")],
    path: Annotated[
        Path, typer.Argument(help="file to write; the name picks the format: .parquet, .csv, .jsonl (+ .gz)")
    ],
    partition_by: Annotated[
        str | None,
        typer.Option(
            "--partition-by", help="events only: write a Parquet folder split by day (date=YYYY-MM-DD/), for Spark"
        ),
    ] = None,
) -> None:
    """Export a table with external ids, in a shape `shopsense import` reads back as it is."""
    if partition_by is not None and kind is not RecordKind.EVENTS:
        console.print("error: --partition-by applies to events only", style="bold red")
        raise typer.Exit(2)
    with _shop(ctx, read_only=True) as shop:
        service = shop.data
        if partition_by is not None:
            from shopsense.cli.engine import spark_jobs

            n = spark_jobs(shop, None).export_events(path, partition_by)
        else:
            n = service.export(kind, path)
        console.print(f"[green]✓[/] wrote {n:,} {kind.value} to {path}", highlight=False)


def generate_cmd(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for events/items/users files")],
    users: Annotated[int, typer.Option(min=1)] = 1_000,
    items: Annotated[int, typer.Option(min=1)] = 500,
    events: Annotated[int, typer.Option(min=1)] = 50_000,
    days: Annotated[int, typer.Option(min=1)] = 90,
    seed: int = 0,
    fmt: Annotated[Format, typer.Option("--format", help="parquet, csv or jsonl")] = Format.PARQUET,
) -> None:
    """Write seeded synthetic retail data (catalogue, users, a view→cart→purchase funnel)."""
    from shopsense.ingest.synthetic import GeneratorConfig, generate

    try:
        config = GeneratorConfig(users=users, items=items, events=events, days=days, seed=seed)
    except ValueError as exc:
        console.print(f"error: {exc}", style="red", markup=False)
        raise typer.Exit(2) from exc
    with _plain_exits(), Progress(TextColumn("generating"), BarColumn(),
                  TextColumn("{task.completed:,}/{task.total:,} events"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:  # fmt: skip
        task = bar.add_task("events", total=events)
        written = generate(config, out_dir, fmt, on_progress=lambda n: bar.update(task, advance=n))
    for name, n in written.items():
        console.print(f"[green]✓[/] {n:,} {name} → {out_dir}", highlight=False)
