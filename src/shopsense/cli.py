"""The ``shopsense`` command line: a thin shell over :mod:`shopsense.services`.

Errors shopsense raises on purpose are printed as plain messages (no traceback) with a
non-zero exit code: 1 for bad data, 2 for bad options or configuration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from shopsense.domain import RecordKind
from shopsense.errors import ConfigError, ShopsenseError
from shopsense.eval.splits import Protocol, SplitConfig
from shopsense.ingest.adapters import ADAPTERS
from shopsense.ingest.importer import Duplicates, ImportReport, OnError
from shopsense.ingest.mapping import ExtraColumns, load_mapping, parse_pairs
from shopsense.ingest.source import Format
from shopsense.settings import Settings, load_settings

if TYPE_CHECKING:
    from shopsense.services.data import DataService

# Start-up: `shopsense --help` and the data commands import only what they need. The evaluation harness
# (scipy.stats), the models (torch for the neural ones), LightGBM, scikit-learn and matplotlib are imported
# inside the commands that use them; tests/unit/test_imports.py checks it.

app = typer.Typer(
    help="shopsense: recommendations and precision marketing from one event stream.", no_args_is_help=True
)
import_app = typer.Typer(help="Import events, items, users or a public dataset.", no_args_is_help=True)
app.add_typer(import_app, name="import")
keys_app = typer.Typer(
    help="API keys for the REST service (stored hashed in <data_dir>/keys.json).", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
profiles_app = typer.Typer(help="Customer profiles: RFM, interests, lifecycle, churn, CLV.", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")
campaign_app = typer.Typer(help="Campaigns with a control hold-out: create, assign, read out.", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")
models_app = typer.Typer(help="Trained model bundles: list, pin a version, roll back.", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console(stderr=True)
out = Console()
_STEPS = ["reading", "validating", "checking duplicates", "writing"]


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
def _service(ctx: typer.Context) -> Iterator[DataService]:
    """Settings and the data service (its store closed afterwards), with clean exits on errors."""
    from shopsense.services.data import DataService

    with _settings(ctx) as settings:
        service = DataService(settings)
        try:
            yield service
        finally:
            service.close()


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
JsonOpt = Annotated[bool, typer.Option("--json", help="print the report as JSON on stdout")]


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
) -> None:
    with _service(ctx) as service:
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
        }
        mapping = load_mapping(mapping_file, kind, overrides)
        with _progress(file.name) as step:
            report = service.import_file(file, mapping, fmt, on_error, duplicates, step)
        _print_report(report, as_json)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2))
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
        on_error: OnErrorOpt = OnError.FAIL,
        duplicates: DupOpt = Duplicates.KEEP,
        as_json: JsonOpt = False,
    ) -> None:
        _import_kind(
            ctx, kind, file, mapping, map_ or [], const or [], type_value or [], channel_value or [], timestamp_format,
            timezone, category_separator, extra, delimiter, encoding, fmt, on_error, duplicates, as_json,
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
    with _service(ctx) as service:
        with _progress(name) as step:
            reports = service.import_dataset(name, paths or [], on_error, duplicates, step)
        for report in reports:
            _print_report(report, as_json)
        if as_json:
            typer.echo(json.dumps([r.to_dict() for r in reports], indent=2))
        _exit_if_all_rejected(reports)


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the data directory and an empty embedded store."""
    with _service(ctx) as service:
        url = service.init()
        console.print(f"[green]✓[/] store ready at {url}", highlight=False)


@app.command()
def stats(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    top: Annotated[int, typer.Option(help="how many top categories")] = 10,
    imports: Annotated[int, typer.Option(min=0, help="how many of the latest imports to list (JSON: all)")] = 10,
) -> None:
    """Users, items, events by type and channel, date range, funnel, top categories and the import log."""
    with _service(ctx) as service:
        summary = service.stats(top)
        if as_json:
            typer.echo(json.dumps(summary.to_dict(), indent=2))
            return
        table = Table(title=f"shopsense store — {service.store.url}", show_header=False)
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


@app.command()
def export(
    ctx: typer.Context,
    kind: Annotated[RecordKind, typer.Argument(help="events, items or users")],
    path: Annotated[
        Path, typer.Argument(help="file to write; the name picks the format: .parquet, .csv, .jsonl (+ .gz)")
    ],
) -> None:
    """Export a table with external ids, in a shape `shopsense import` reads back as it is."""
    with _service(ctx) as service:
        n = service.export(kind, path)
        console.print(f"[green]✓[/] wrote {n:,} {kind.value} to {path}", highlight=False)


@app.command("generate")
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


@app.command()
def evaluate(
    ctx: typer.Context,
    models: Annotated[str, typer.Option(help="comma-separated model names")] = "popular,repeat_buy,item_knn,ease",
    hybrid: Annotated[str, typer.Option(help="comma-separated models to blend into a tuned hybrid ('' for none)")] = "",
    protocol: Annotated[Protocol, typer.Option(help="temporal, leave_last or random")] = Protocol.TEMPORAL,
    test_quantile: Annotated[float, typer.Option(help="temporal: train before this quantile of times")] = 0.8,
    last_k: Annotated[int, typer.Option(help="leave_last: target events held out per user")] = 1,
    test_fraction: Annotated[float, typer.Option(help="random: share of (user, item) pairs held out")] = 0.2,
    target: Annotated[str, typer.Option(help="comma-separated event types to predict")] = "purchase",
    tasks: Annotated[str, typer.Option(help="all (repeats count) and/or new (unseen items only)")] = "all,new",
    tune: Annotated[bool, typer.Option(help="tune weights, decay and model parameters on a validation split")] = True,
    max_users: Annotated[int | None, typer.Option(help="evaluate a seeded sample of test users")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for evaluation.md/.json/.png")] = Path("evaluation"),
    name: Annotated[str, typer.Option(help="dataset name in the report")] = "store",
    as_json: JsonOpt = False,
) -> None:
    """Evaluate models on the store's events: full-catalogue ranking on a leak-free split, with CIs."""
    # Imported here: the harness and the models pull in scipy.stats, scikit-learn and more, which other
    # commands should not wait for.
    from shopsense.eval.harness import EvalConfig, Task
    from shopsense.eval.report import to_markdown, write_report
    from shopsense.models.registry import model_class
    from shopsense.services.evaluation import EvaluationRun

    try:
        names = [m.strip() for m in models.split(",") if m.strip()]
        blend = [m.strip() for m in hybrid.split(",") if m.strip()]
        for model in [*names, *blend]:
            model_class(model)
        config = EvalConfig(
            split=SplitConfig(
                protocol=protocol,
                test_quantile=test_quantile,
                last_k=last_k,
                test_fraction=test_fraction,
                target_types=tuple(t.strip() for t in target.split(",") if t.strip()),
            ),
            tasks=tuple(Task(t.strip()) for t in tasks.split(",") if t.strip()),
            max_test_users=max_users,
        )
    except ValueError as exc:
        console.print(f"error: {exc}", style="red", markup=False)
        raise typer.Exit(2) from exc
    with _service(ctx) as service:
        events = service.store.scan_events()
        if events.num_rows == 0:
            raise ShopsenseError("the store has no events: import some first")
        config = config.model_copy(update={"weights": service.settings.event_types.weights})
        run = EvaluationRun(name, events, config, catalog=service.store.scan_items(), tune=tune)
        for model in names:
            console.print(f"evaluating {model}…", highlight=False)
            run.add_model(model)
        if blend:
            run.add_hybrid(blend)
        report = run.report()
        paths = write_report([report], out_dir, "evaluation")
        if as_json:
            typer.echo(json.dumps(report, indent=2, default=str))
            return
        typer.echo(to_markdown(report))
        console.print(f"[green]✓[/] wrote {', '.join(str(p) for p in paths)}", highlight=False)


@app.command()
def train(
    ctx: typer.Context,
    pipeline: Annotated[
        str, typer.Option(help="pipeline name (config/pipelines/NAME.toml) or a .toml path")
    ] = "default",
    as_json: JsonOpt = False,
) -> None:
    """Train a recommendation pipeline (candidates, attention and purchase heads) on the store's events."""
    from shopsense.services.recommendation import RecommendationService  # loads lightgbm (torch: a DIN head only)

    with _service(ctx) as service, _stages(f"training pipeline {pipeline}"):
        result = RecommendationService(service).train(pipeline)
    bundle = result.bundle
    summary = {
        "pipeline": bundle.pipeline,
        "version": bundle.version,
        "model": str(result.path),
        "events": bundle.events,
        "users": bundle.users,
        "items": bundle.items,
        "seconds": round(result.seconds, 1),
        "heads": result.heads,
        "training": {k: v for k, v in result.training.items() if k != "feature_names"},
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    _print_training(bundle.pipeline, result.head_scores(), result.heads, result.training)
    console.print(
        f"[green]✓[/] {bundle.events:,} events, {bundle.users:,} users, {bundle.items:,} items"
        f" in {result.seconds:.1f}s; ranking head: {result.heads.get('chosen')};"
        f" bundle {bundle.version} at {result.path}",
        highlight=False,
    )


def _print_training(
    pipeline: str, scores: dict[str, dict[str, dict[str, float]]], report: dict[str, Any], training: dict[str, Any]
) -> None:
    """The heads' validation scores, then how each candidate order ranked held-out purchases."""
    table = Table(title=f"pipeline {pipeline}: heads on held-out users of the label window", highlight=False)
    for column in ("head", "target", "AUC", "log-loss", "positives"):
        table.add_column(column)
    for head, targets in scores.items():
        for target, score in targets.items():
            table.add_row(
                head, target, _fixed(score.get("auc"), 3), _fixed(score.get("logloss"), 4), _pct(score.get("positives"))
            )
    out.print(table)
    orders = report.get("purchase_ndcg_by_order") or {}
    if orders:
        ranking = Table(title="purchase NDCG@10 of held-out users, by ordering", highlight=False)
        for column in ("order", "NDCG@10", "used"):
            ranking.add_column(column)
        used = training.get("rank_by") or "heads"
        for name, value in orders.items():
            ranking.add_row(name, _fixed(value, 4), "✓" if name == used else "")
        out.print(ranking)
    if training.get("alpha") is not None:
        console.print(f"fusion alpha {training['alpha']:.2f}", highlight=False)
    share = training.get("repeat_share")
    if share is not None:
        hidden = "hidden" if training.get("exclude_purchased") else "recommendable again"
        console.print(f"{share:.0%} of purchases re-buy an item: bought items are {hidden}", highlight=False)


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


@app.command()
def recommend(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Argument(help="the user id (an unknown user gets trending items)")] = None,
    k: Annotated[int | None, typer.Option(min=1, max=1000, help="how many items (default: the pipeline's k)")] = None,
    pipeline: Annotated[str, typer.Option(help="trained pipeline name")] = "default",
    alpha: Annotated[float | None, typer.Option(help="1 = attention only, 0 = purchase x value only")] = None,
    diversity: Annotated[float | None, typer.Option(help="MMR lambda: 1 = off, lower = more varied")] = None,
    category: Annotated[str | None, typer.Option(help="only items in this category (path prefix)")] = None,
    all_users: Annotated[
        bool, typer.Option("--all", help="batch: every non-guest user with stored events (needs --out)")
    ] = False,
    segment: Annotated[
        str | None, typer.Option(help="batch: the customers this profile expression selects (needs --out)")
    ] = None,
    users: Annotated[Path | None, typer.Option(help="batch: a file with one user id per line (needs --out)")] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="batch: write the recommendations to .csv, .parquet or .jsonl")
    ] = None,
    skip_unknown: Annotated[
        bool, typer.Option("--skip-unknown", help="batch: leave out ids without stored events instead of failing")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a user's recommendations with scores and the reason for each, or (--all, --segment, --users)
    write many users' recommendations to a file."""
    from shopsense.services.recommendation import RecommendationService

    rules = {"include_categories": [category]} if category else None
    chosen = sum((user is not None, all_users, segment is not None, users is not None))
    if chosen != 1 or (user is None) != (out_path is not None):
        console.print(
            "error: give one USER, or --out FILE with one of --all, --segment EXPR, --users FILE", style="bold red"
        )
        raise typer.Exit(2)
    if user is None:
        assert out_path is not None
        _recommend_batch(ctx, out_path, all_users, segment, users, skip_unknown, k, pipeline, alpha, diversity, rules,
                         as_json)  # fmt: skip
        return
    with _service(ctx) as service:
        recs = RecommendationService(service).recommend(
            user, k, pipeline=pipeline, alpha=alpha, rules=rules, diversity=diversity
        )
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in recs], indent=2, default=str))
        return
    table = Table(title=f"recommendations for {user}", highlight=False)
    for column in ("#", "item", "title", "score", "P(attention)", "P(purchase)", "why"):
        table.add_column(column, overflow="fold")
    for rank, rec in enumerate(recs, 1):
        table.add_row(
            str(rank),
            rec.item_id,
            rec.title,
            f"{rec.score:.4f}",
            f"{rec.p_attention:.3f}",
            f"{rec.p_purchase:.3f}",
            rec.explanation.reason,
        )
    out.print(table)


def _recommend_batch(
    ctx: typer.Context,
    out_path: Path,
    all_users: bool,
    segment: str | None,
    users_file: Path | None,
    skip_unknown: bool,
    k: int | None,
    pipeline: str,
    alpha: float | None,
    diversity: float | None,
    rules: dict[str, Any] | None,
    as_json: bool,
) -> None:
    """``recommend --all|--segment|--users --out FILE``: many users' lists in batches, with a progress bar."""
    from rich.progress import MofNCompleteColumn

    from shopsense.services.recommendation import RecommendationService

    with _service(ctx) as service:
        ids = _read_ids(users_file) if users_file is not None else None
        with Progress(TextColumn("recommending"), BarColumn(), MofNCompleteColumn(), TextColumn("users"),
                      TimeElapsedColumn(), console=console, transient=True) as bar:  # fmt: skip
            task = bar.add_task("users", total=None)
            result = RecommendationService(service).recommend_batch(
                out_path,
                ids,
                segment=segment,
                skip_unknown=skip_unknown,
                k=k,
                pipeline=pipeline,
                alpha=alpha,
                rules=rules,
                diversity=diversity,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    summary = {"path": str(result.path), "users": result.users, "rows": result.rows, "skipped": result.skipped}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console.print(
        f"[green]✓[/] {result.rows:,} recommendations for {result.users:,} users written to {result.path}",
        highlight=False,
    )
    if result.skipped:
        shown = ", ".join(result.skipped[:10]) + (" …" if len(result.skipped) > 10 else "")
        console.print(f"    left out {len(result.skipped):,} ids without stored events: {shown}", highlight=False)


def _read_ids(path: Path) -> list[str]:
    """One user id per line (blank lines ignored; a first line ``user_id`` is a header)."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read user ids from {path}: {exc}") from exc
    ids = [line for line in lines if line]
    return ids[1:] if ids[:1] == ["user_id"] else ids


@app.command()
def similar(
    ctx: typer.Context,
    item: Annotated[str, typer.Argument(help="the item id")],
    k: Annotated[int, typer.Option(min=1, max=1000, help="how many items")] = 10,
    pipeline: Annotated[str, typer.Option(help="trained pipeline name")] = "default",
    as_json: JsonOpt = False,
) -> None:
    """Items most related to one item ("often bought together"), from the trained model, as the API gives them."""
    from shopsense.services.recommendation import RecommendationService

    with _service(ctx) as service:
        items = RecommendationService(service).similar(item, k, pipeline=pipeline)
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table(title=f"items similar to {item}", highlight=False)
    for column in ("#", "item", "title", "score"):
        table.add_column(column, overflow="fold")
    for rank, found in enumerate(items, 1):
        table.add_row(str(rank), found["item_id"], found["title"] or "", f"{found['score']:.4f}")
    out.print(table)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="listen address (default serve.host, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default serve.port, 8000)")] = None,
) -> None:
    """Run the REST API (docs at /docs) over the store and the newest trained bundle."""
    import uvicorn

    from shopsense.api.app import create_app

    with _settings(ctx) as settings:
        app_ = create_app(settings)
        host, port = host or settings.serve.host, port or settings.serve.port
        console.print(f"serving http://{host}:{port} (docs: http://{host}:{port}/docs)", highlight=False)
        uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="who or what uses the key, e.g. web-frontend")],
    scope: Annotated[list[str], typer.Option("--scope", help="events:write, recommend:read or admin (repeatable)")],
) -> None:
    """Create an API key; the key is printed once and only its hash is kept."""
    from shopsense.services.keys import KeyRing

    with _settings(ctx) as settings:
        key, record = KeyRing(settings.data_dir / "keys.json").create(name, scope)
    console.print(f"created key {record.key_id} ({', '.join(record.scopes)}); store it now, it is not shown again:")
    typer.echo(key)


@keys_app.command("list")
def keys_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List keys (ids, names, scopes, created, revoked); never the secrets."""
    from shopsense.services.keys import KeyRing

    with _settings(ctx) as settings:
        records = [r.public() for r in KeyRing(settings.data_dir / "keys.json").list()]
    if as_json:
        typer.echo(json.dumps(records, indent=2))
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
    """Revoke a key; a running server refuses it from its next request."""
    from shopsense.services.keys import KeyRing

    with _settings(ctx) as settings:
        record = KeyRing(settings.data_dir / "keys.json").revoke(key_id)
    console.print(f"revoked key {record.key_id} ({record.name})", highlight=False)


def _bundles(settings: Settings) -> Any:
    from shopsense.services.bundles import Bundles

    return Bundles(settings.data_dir / "models")


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    pipeline: Annotated[str, typer.Option(help="pipeline name")] = "default",
    as_json: JsonOpt = False,
) -> None:
    """Every bundle of a pipeline, newest first, with the one served marked."""
    with _settings(ctx) as settings:
        bundles = _bundles(settings)
        versions, current = bundles.versions(pipeline), bundles.current(pipeline)
    if as_json:
        typer.echo(json.dumps([v.to_dict() for v in versions], indent=2, default=str))
        return
    table = Table(title=f"bundles of pipeline {pipeline}", highlight=False)
    for column in ("served", "version", "created", "data to", "events", "users", "items"):
        table.add_column(column)
    for v in versions:
        mark = "*" if current is not None and v.version == current.version else ""
        table.add_row(mark, v.version, v.created_at, str(v.data_to), f"{v.events:,}", f"{v.users:,}", f"{v.items:,}")
    out.print(table)


@models_app.command("pin")
def models_pin(
    ctx: typer.Context,
    version: Annotated[str | None, typer.Argument(help="the version to serve")] = None,
    pipeline: Annotated[str, typer.Option(help="pipeline name")] = "default",
    latest: Annotated[bool, typer.Option("--latest", help="unpin: serve the newest bundle again")] = False,
) -> None:
    """Serve one version from now on (a running server picks it up within serve.reload_seconds)."""
    if (version is None) == (not latest):
        console.print("error: give a VERSION or --latest", style="bold red")
        raise typer.Exit(2)
    with _settings(ctx) as settings:
        info = _bundles(settings).pin(pipeline, None if latest else version)
    console.print(f"pipeline {pipeline} now serves {info.version if info else 'nothing (no bundle)'}", highlight=False)


@models_app.command("rollback")
def models_rollback(
    ctx: typer.Context, pipeline: Annotated[str, typer.Option(help="pipeline name")] = "default"
) -> None:
    """Pin the version before the one served now."""
    with _settings(ctx) as settings:
        info = _bundles(settings).rollback(pipeline)
    console.print(f"pipeline {pipeline} rolled back to {info.version}", highlight=False)


@contextmanager
def _marketing(ctx: typer.Context) -> Iterator[Any]:
    from shopsense.services.marketing import MarketingService

    with _service(ctx) as service:
        yield MarketingService(service.settings, service.store)


def _print_table(table: Any, title: str, as_json: bool) -> None:
    rows = table.to_pylist()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    view = Table(title=title, highlight=False)
    for column in table.column_names:
        view.add_column(column, overflow="fold")
    for row in rows:
        view.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    out.print(view)


@profiles_app.command("build")
def profiles_build(
    ctx: typer.Context,
    as_of: Annotated[str | None, typer.Option(help="ISO time with zone (default: just after the newest event)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compute and store every customer's profile at AS_OF (guests left out)."""
    from datetime import datetime

    try:
        when = datetime.fromisoformat(as_of) if as_of else None
    except ValueError as exc:
        console.print(f"error: --as-of {as_of!r} is not an ISO time: {exc}", style="bold red")
        raise typer.Exit(2) from exc
    from shopsense.features.profiles import CHURN_ERROR_KEY, CHURN_MODEL_KEY, CLV_ERROR_KEY

    with _marketing(ctx) as marketing:
        profiles = marketing.build_profiles(when)
        lifecycle = profiles.group_by("lifecycle").aggregate([("user_id", "count")]).to_pylist()
    notes = {k.decode(): v.decode() for k, v in (profiles.schema.metadata or {}).items()}
    summary: dict[str, Any] = {
        "customers": profiles.num_rows,
        "lifecycle": {r["lifecycle"]: r["user_id_count"] for r in lifecycle},
        "churn": json.loads(notes[CHURN_MODEL_KEY]) if CHURN_MODEL_KEY in notes else None,
        "churn_error": notes.get(CHURN_ERROR_KEY),
        "clv_error": notes.get(CLV_ERROR_KEY),
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    stages = ", ".join(f"{k} {v:,}" for k, v in sorted(summary["lifecycle"].items()))
    console.print(f"[green]✓[/] {profiles.num_rows:,} customer profiles stored; lifecycle: {stages}", highlight=False)
    churn = summary["churn"]
    if churn:
        auc = "-" if churn["validation_auc"] is None else f"{churn['validation_auc']:.3f}"
        console.print(
            f"    churn risk: P(no purchase within {churn['horizon_days']:g} days), learned on "
            f"{churn['customers']:,} customers ({churn['churned_share']:.0%} churned); held-out AUC {auc}",
            highlight=False,
        )


@profiles_app.command("show")
def profiles_show(
    ctx: typer.Context, user: Annotated[str, typer.Argument(help="customer id")], as_json: JsonOpt = False
) -> None:
    """One customer's stored profile."""
    with _marketing(ctx) as marketing:
        profile = marketing.profile(user)
    if profile is None:
        console.print(
            f"error: no profile for {user!r} (a guest, unknown, or profiles are older than them)", style="red"
        )
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(profile, indent=2, default=str))
        return
    view = Table(title=f"profile of {user}", highlight=False, show_header=False)
    for key, value in profile.items():
        view.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    out.print(view)


@app.command()
def segment(
    ctx: typer.Context,
    definitions: Annotated[
        list[str] | None, typer.Argument(help="NAME=EXPRESSION, e.g. 'loyal=recency_days <= 30 and frequency >= 3'")
    ] = None,
    rfm: Annotated[bool, typer.Option("--rfm", help="the named RFM segments instead")] = False,
    plot: Annotated[Path | None, typer.Option(help="write a PNG of segment sizes and revenue shares")] = None,
    export: Annotated[Path | None, typer.Option(help="write members (user_id, segment) to CSV or Parquet")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Segment sizes, revenue shares and overlaps over the stored profiles."""
    from shopsense.marketing.segments import plot_segments

    if not definitions and not rfm:
        console.print("error: give NAME=EXPRESSION segments or --rfm", style="bold red")
        raise typer.Exit(2)
    with _marketing(ctx) as marketing:
        pairs = parse_pairs(definitions or [], "segment")
        report = marketing.rfm() if rfm else marketing.segments(pairs)
        if export is not None:
            marketing.export_members(report, export)
    _print_table(report.stats, "segments", as_json)
    if not as_json and report.overlaps.num_rows:
        _print_table(report.overlaps, "overlaps", False)
    if plot is not None:
        console.print(f"wrote {plot_segments(report.stats, plot)}", highlight=False)


@app.command()
def clusters(
    ctx: typer.Context,
    k: Annotated[int | None, typer.Option(help="number of clusters (default: best silhouette)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Cluster customers on their profiles and describe each cluster in words."""
    from shopsense.marketing.clustering import ClusterConfig

    with _marketing(ctx) as marketing:
        result = marketing.clusters(ClusterConfig(k=k) if k else None)
    table = result.descriptions.select(["name", "description", "customers", "share"])
    _print_table(table, "customer clusters", as_json)


@campaign_app.command("create")
def campaign_create(ctx: typer.Context, config: Annotated[Path, typer.Argument(help="campaign TOML file")]) -> None:
    """Create (or replace) a campaign from a TOML definition: variants with a control, channel, dates, costs."""
    from shopsense.marketing.campaigns import CampaignConfig

    with _marketing(ctx) as marketing:
        campaign = marketing.save_campaign(CampaignConfig.from_toml(config))
    arms = ", ".join(f"{v.name} {v.weight:.0%}{' (control)' if v.is_control else ''}" for v in campaign.variants)
    console.print(f"[green]✓[/] campaign {campaign.name}: {arms}", highlight=False)


@campaign_app.command("assign")
def campaign_assign(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="campaign name")],
    segment: Annotated[str | None, typer.Option(help="audience: the customers this expression selects")] = None,
    users: Annotated[Path | None, typer.Option(help="audience: a file with one user id per line")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Assign an audience to the campaign's variants (deterministic; users assigned before keep their variant)."""
    with _marketing(ctx) as marketing:
        ids = _read_ids(users) if users else None
        counts = marketing.assign(name, ids, segment)
    if as_json:
        typer.echo(json.dumps(counts))
        return
    console.print(f"[green]✓[/] {name}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))


@campaign_app.command("readout")
def campaign_readout_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="campaign name")],
    plot: Annotated[Path | None, typer.Option(help="write a PNG of the lifts with 95% CIs")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per variant: CTR, conversion, revenue per user, AOV, repurchase, ROI; lifts with 95% CIs; the decision."""
    from shopsense.marketing.experiments import plot_lift

    with _marketing(ctx) as marketing:
        result = marketing.readout(name)
    if plot is not None:
        console.print(f"wrote {plot_lift(result.readout, plot)}", highlight=False)
    body = result.to_dict()
    if as_json:
        typer.echo(json.dumps(body, indent=2, default=str))
        return
    view = Table(title=f"campaign {name}", highlight=False)
    for column in ("variant", "users", "conversion", "revenue/user", "AOV", "repurchase", "ROI"):
        view.add_column(column)
    for arm in body["variants"]:
        view.add_row(
            arm["name"],
            f"{arm['n']:,}",
            _pct(arm.get("conversion_rate")),
            _num(arm.get("revenue_per_user")),
            _num(arm.get("average_order_value")),
            _pct(arm.get("repurchase_rate")),
            _pct(arm.get("roi")),
        )
    out.print(view)
    console.print(result.decision, highlight=False)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


@campaign_app.command("content")
def campaign_content(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="campaign name")],
    out_path: Annotated[Path, typer.Option("--out", help="payload file: .jsonl or .csv")],
    template: Annotated[
        str, typer.Option(help="message with $placeholders, e.g. 'Hi! $first_title is back in stock'")
    ] = "We picked $count items for you, starting with $first_title.",
    k: Annotated[int, typer.Option(help="recommended items per customer")] = 3,
    pipeline: Annotated[str, typer.Option(help="trained pipeline name")] = "default",
) -> None:
    """Per treated customer: top-k recommended items with reasons and a rendered message, for an e-mail or push tool."""
    from shopsense.marketing.content import export_payload, personalise
    from shopsense.services.marketing import MarketingService
    from shopsense.services.recommendation import RecommendationService

    with _service(ctx) as service:
        users = MarketingService(service.settings, service.store).treated(name)
        recommender = RecommendationService(service)
        payload = personalise(users, lambda user: recommender.recommend(user, k, pipeline=pipeline), template, k)
        path = export_payload(payload, out_path)
    console.print(f"[green]✓[/] {payload.num_rows:,} personalised payloads written to {path}", highlight=False)


@app.command()
def audience(
    ctx: typer.Context,
    category: Annotated[str | None, typer.Option(help="target: a category (any level of the path)")] = None,
    brand: Annotated[str | None, typer.Option(help="target: a brand")] = None,
    item: Annotated[str | None, typer.Option(help="target: one item id")] = None,
    top: Annotated[int | None, typer.Option(help="keep the N most likely buyers")] = None,
    min_score: Annotated[float | None, typer.Option(help="keep customers with P(buy) at least this")] = None,
    exclude_bought_days: Annotated[float | None, typer.Option(help="leave out who bought it this recently")] = None,
    segment: Annotated[str | None, typer.Option(help="only customers this profile expression selects")] = None,
    horizon_days: Annotated[float, typer.Option(help="P(buy within this many days)")] = 30.0,
    out_path: Annotated[Path | None, typer.Option("--out", help="export the audience: .csv or .parquet")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Who is most likely to buy an item, category or brand: a leakage-free propensity model, then cuts."""
    from shopsense.marketing.audiences import AudienceSpec, Target, export_audience

    with _marketing(ctx) as marketing:
        target = Target(item_id=item, category=category, brand=brand)
        spec = AudienceSpec(top_n=top, min_score=min_score, exclude_bought_within_days=exclude_bought_days)
        result = marketing.audience(target, spec, segment=segment, horizon_days=horizon_days)
        if out_path is not None:
            export_audience(result.table, out_path)
    if as_json:
        typer.echo(json.dumps({"funnel": result.funnel, "model": str(result.scores.report)}, indent=2, default=str))
        return
    console.print(result.describe(), highlight=False)
    _print_table(result.table.select(["user_id", "score", "main_reason"]).slice(0, 10), "top of the audience", False)
    if out_path is not None:
        console.print(f"wrote {result.table.num_rows:,} customers to {out_path}", highlight=False)
