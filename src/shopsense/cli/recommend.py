"""Recommendation commands: ``evaluate``, ``train``, ``recommend``, ``similar`` and ``models list|pin|rollback``.

The harness, the models, LightGBM and torch are imported inside the commands that use them.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shopsense.cli.common import (
    JsonOpt,
    _pct,
    _plain_exits,
    _read_ids,
    _shop,
    _stages,
    cli_id,
    console,
    echo_json,
    out,
)
from shopsense.cli.engine import Engine, EngineOpt, EventsOpt, MasterOpt, spark_input, spark_jobs
from shopsense.eval.splits import Protocol, SplitConfig

models_app = typer.Typer(help="Trained model bundles: list, pin a version, roll back.", no_args_is_help=True)


def evaluate(
    ctx: typer.Context,
    models: Annotated[str, typer.Option(help="comma-separated model names")] = "popular,repeat_buy,item_knn,ease",
    hybrid: Annotated[str, typer.Option(help="comma-separated models to blend into a tuned hybrid ('' for none)")] = "",
    pipelines: Annotated[
        list[str] | None,
        typer.Option(
            "--pipeline",
            help="a pipeline scored as a row (repeatable; name or .toml path; 'none' for no row) [default: default]",
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="a model parameter, MODEL.PARAM=VALUE (repeatable), e.g. ease.max_items=4000"),
    ] = None,
    params_file: Annotated[
        Path | None, typer.Option("--params", help="a TOML file of model parameters: [ease] max_items = 4000")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="primary task (headline, tuning): all or new [default: first of --tasks]")
    ] = None,
    budget: Annotated[
        str | None, typer.Option(help="time for the whole run, e.g. 90s, 10m, 1h; what does not fit is skipped")
    ] = None,
    peers: Annotated[str, typer.Option(help="comma-separated peer libraries to score too: implicit")] = "",
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
    """Evaluate models and the default pipeline on the store's events: full-catalogue ranking on a leak-free
    split, with CIs, within an optional time budget."""
    # Imported here: the harness and the models pull in scipy.stats, scikit-learn and more, which other
    # commands should not wait for.
    from shopsense.eval.budget import Budget
    from shopsense.eval.harness import EvalConfig, Task
    from shopsense.eval.options import parse_duration, parse_params
    from shopsense.eval.peers import check_peers
    from shopsense.eval.report import to_markdown, write_report
    from shopsense.services.evaluation import check_models
    from shopsense.services.recommendation import pipeline_config

    try:
        names = [m.strip() for m in models.split(",") if m.strip()]
        blend = [m.strip() for m in hybrid.split(",") if m.strip()]
        libraries = [p.strip() for p in peers.split(",") if p.strip()]
        check_models([*names, *blend])
        check_peers(libraries)
        fixed = parse_params(param or [], params_file)
        seconds = parse_duration(budget) if budget is not None else None
        chosen = [_task(t.strip()) for t in tasks.split(",") if t.strip()]
        primary = _task(task) if task is not None else (chosen[0] if chosen else Task.ALL)
        config = EvalConfig(
            split=SplitConfig(
                protocol=protocol,
                test_quantile=test_quantile,
                last_k=last_k,
                test_fraction=test_fraction,
                target_types=tuple(t.strip() for t in target.split(",") if t.strip()),
            ),
            tasks=tuple(dict.fromkeys([primary, *chosen])),
            max_test_users=max_users,
        )
    except ValueError as exc:
        console.print(f"error: {exc}", style="red", markup=False)
        raise typer.Exit(2) from exc
    wanted = [p for p in (pipelines or ["default"]) if p.lower() != "none"]
    clock = Budget(seconds)  # started before the data is read: the budget is the whole run's
    with _shop(ctx, read_only=True) as shop:
        configs = [pipeline_config(shop.settings, p) for p in wanted]  # an unknown pipeline fails before the read
        rows = {config.name: config for config in configs}
        run = shop.evaluation(name, config, primary=primary, tune=tune, params=fixed, budget=clock)
    # The events are in memory now: the store is closed before the fits, so an import can run meanwhile.
    say = (lambda _: None) if as_json else (lambda line: console.print(line, highlight=False, markup=False))
    with _plain_exits():
        report = run.run_plan(names, hybrid=blend, pipelines=rows, peers=libraries, say=say)
        paths = write_report([report], out_dir, "evaluation")
    if as_json:
        echo_json(report)
        return
    typer.echo(to_markdown(report))
    console.print(f"[green]✓[/] wrote {', '.join(str(p) for p in paths)}", highlight=False)


def _task(text: str) -> Any:
    """A harness task by name (ValueError listing the tasks otherwise)."""
    from shopsense.eval.harness import Task

    if text not in {t.value for t in Task}:
        raise ValueError(f"unknown task {text!r}; tasks: {', '.join(t.value for t in Task)}")
    return Task(text)


def train(
    ctx: typer.Context,
    pipeline: Annotated[
        str,
        typer.Option(
            help="pipeline name (DATA_DIR/pipelines/NAME.toml, or bundled: default, homepage, checkout) or a .toml path"
        ),
    ] = "default",
    as_json: JsonOpt = False,
    engine: EngineOpt = Engine.LOCAL,
    master: MasterOpt = None,
    events: EventsOpt = None,
) -> None:
    """Train a recommendation pipeline (candidates, attention and purchase heads) on the store's events."""
    with _shop(ctx) as shop, _stages(f"training pipeline {pipeline}"):
        if engine is Engine.SPARK:
            result = spark_jobs(shop, master).train(pipeline, spark_input(events))
        else:
            result = shop.recommendations.train(pipeline)  # loads lightgbm (torch: a DIN head only)
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
        echo_json(summary)
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
    """What validation chose, the heads' validation scores, then how each candidate order ranked held-out purchases."""
    _print_choice(training.get("choice"))
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
    fitted = report.get("objective") or {}
    if len(fitted) > 2:  # boost.objective = "auto": both fitted, one kept
        ndcg = ", ".join(f"{name} {v['ranked_ndcg@10']:.4f}" for name, v in fitted.items() if isinstance(v, dict))
        console.print(f"LightGBM objective {fitted['chosen']} (validation NDCG@10: {ndcg})", highlight=False)
    for note in training.get("scaled_down") or []:
        console.print(f"scaled down: {note}", highlight=False, markup=False)
    share = training.get("repeat_share")
    if share is not None:
        hidden = "hidden" if training.get("exclude_purchased") else "recommendable again"
        console.print(f"{share:.0%} of purchases re-buy an item: bought items are {hidden}", highlight=False)


def _print_choice(choice: dict[str, Any] | None) -> None:
    """The settings tried on the validation split, each source alone, what was skipped, and what was chosen."""
    if not choice:
        return
    if not choice["trials"]:
        out.print(f"settings: as configured ({choice['why']})", highlight=False, markup=False)
        return
    table = Table(title=f"settings tried on validation ({choice['validation']}; task {choice['task']})")
    for column in ("setting", "what", "NDCG@10 [95% CI]", "seconds", "chosen"):
        table.add_column(column)
    rows = [*choice["trials"], *({**t, "name": f"{n} alone"} for n, t in choice["sources"].items())]
    for trial in rows:
        low, high = trial["ci95"]
        score = trial["error"] or f"{_fixed(trial['ndcg10'], 4)} [{_fixed(low, 4)}, {_fixed(high, 4)}]"
        mark = "✓" if trial["name"] == choice["chosen"] else ""
        table.add_row(trial["name"], trial["why"], score, _fixed(trial["seconds"], 1), mark)
    out.print(table)
    for skipped in choice["skipped"]:
        out.print(f"not tried: {skipped}", highlight=False, markup=False)
    out.print(f"chose {choice['why']}", highlight=False, markup=False)


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


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
    with _shop(ctx, read_only=True) as shop:
        user = cli_id(user, "USER")
        recs = shop.recommendations.recommend(user, k, pipeline=pipeline, alpha=alpha, rules=rules, diversity=diversity)
    if as_json:
        echo_json([asdict(r) for r in recs])
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

    with _shop(ctx, read_only=True) as shop:
        ids = _read_ids(users_file) if users_file is not None else None
        with Progress(TextColumn("recommending"), BarColumn(), MofNCompleteColumn(), TextColumn("users"),
                      TimeElapsedColumn(), console=console, transient=True) as bar:  # fmt: skip
            task = bar.add_task("users", total=None)
            result = shop.recommendations.recommend_batch(
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
        echo_json(summary)
        return
    console.print(
        f"[green]✓[/] {result.rows:,} recommendations for {result.users:,} users written to {result.path}",
        highlight=False,
    )
    if result.skipped:
        shown = ", ".join(result.skipped[:10]) + (" …" if len(result.skipped) > 10 else "")
        console.print(f"    left out {len(result.skipped):,} ids without stored events: {shown}", highlight=False)


def similar(
    ctx: typer.Context,
    item: Annotated[str, typer.Argument(help="the item id")],
    k: Annotated[int, typer.Option(min=1, max=1000, help="how many items")] = 10,
    pipeline: Annotated[str, typer.Option(help="trained pipeline name")] = "default",
    as_json: JsonOpt = False,
) -> None:
    """Items most related to one item ("often bought together"), from the trained model, as the API gives them."""
    with _shop(ctx, read_only=True) as shop:
        item = cli_id(item, "ITEM")
        items = shop.recommendations.similar(item, k, pipeline=pipeline)
    if as_json:
        echo_json(items)
        return
    table = Table(title=f"items similar to {item}", highlight=False)
    for column in ("#", "item", "title", "score"):
        table.add_column(column, overflow="fold")
    for rank, found in enumerate(items, 1):
        table.add_row(str(rank), found["item_id"], found["title"] or "", f"{found['score']:.4f}")
    out.print(table)


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    pipeline: Annotated[str, typer.Option(help="pipeline name")] = "default",
    as_json: JsonOpt = False,
) -> None:
    """Every bundle of a pipeline, newest first, with the one served marked."""
    with _shop(ctx) as shop:
        bundles = shop.bundles
        versions, current = bundles.versions(pipeline), bundles.current(pipeline)
    if as_json:
        served = current.version if current is not None else None
        echo_json([{**v.to_dict(), "served": v.version == served} for v in versions])
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
    with _shop(ctx) as shop:
        info = shop.bundles.pin(pipeline, None if latest else version)
    console.print(f"pipeline {pipeline} now serves {info.version if info else 'nothing (no bundle)'}", highlight=False)


@models_app.command("rollback")
def models_rollback(
    ctx: typer.Context, pipeline: Annotated[str, typer.Option(help="pipeline name")] = "default"
) -> None:
    """Pin the version before the one served now."""
    with _shop(ctx) as shop:
        info = shop.bundles.rollback(pipeline)
    console.print(f"pipeline {pipeline} rolled back to {info.version}", highlight=False)
