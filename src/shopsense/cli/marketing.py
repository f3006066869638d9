"""Marketing commands: ``profiles build|show``, ``segment``, ``clusters``, ``audience`` and
``campaign create|assign|readout|content``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from shopsense.cli.common import JsonOpt, _pct, _print_table, _read_ids, _shop, cli_id, console, echo_json, out
from shopsense.cli.engine import Engine, EngineOpt, EventsOpt, MasterOpt, spark_input, spark_jobs
from shopsense.ingest.mapping import parse_pairs

if TYPE_CHECKING:
    from shopsense.services.marketing import MarketingService

profiles_app = typer.Typer(help="Customer profiles: RFM, interests, lifecycle, churn, CLV.", no_args_is_help=True)
campaign_app = typer.Typer(help="Campaigns with a control hold-out: create, assign, read out.", no_args_is_help=True)


@contextmanager
def _marketing(ctx: typer.Context, *, read_only: bool = False) -> Iterator[MarketingService]:
    with _shop(ctx, read_only=read_only) as shop:
        yield shop.marketing


@profiles_app.command("build")
def profiles_build(
    ctx: typer.Context,
    as_of: Annotated[str | None, typer.Option(help="ISO time with zone (default: just after the newest event)")] = None,
    as_json: JsonOpt = False,
    engine: EngineOpt = Engine.LOCAL,
    master: MasterOpt = None,
    events: EventsOpt = None,
) -> None:
    """Compute and store every customer's profile at AS_OF (guests left out)."""
    from datetime import datetime

    try:
        when = datetime.fromisoformat(as_of) if as_of else None
    except ValueError as exc:
        console.print(f"error: --as-of {as_of!r} is not an ISO time: {exc}", style="bold red")
        raise typer.Exit(2) from exc
    with _shop(ctx) as shop:
        marketing = shop.marketing
        if engine is Engine.SPARK:
            built = spark_jobs(shop, master).build_profiles(when, source=spark_input(events))
        else:
            built = marketing.build_profiles(when)
        summary = marketing.profiles_summary(built)
    if as_json:
        echo_json(summary)
        return
    stages = ", ".join(f"{k} {v:,}" for k, v in sorted(summary["lifecycle"].items()))
    customers = summary["customers"]
    console.print(f"[green]✓[/] {customers:,} customer profiles stored; lifecycle: {stages}", highlight=False)
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
    with _marketing(ctx, read_only=True) as marketing:
        user = cli_id(user, "USER")
        profile = marketing.profile(user)
    if profile is None:
        console.print(
            f"error: no profile for {user!r} (a guest, unknown, or profiles are older than them)", style="red"
        )
        raise typer.Exit(1)
    if as_json:
        echo_json(profile)
        return
    view = Table(title=f"profile of {user}", highlight=False, show_header=False)
    for key, value in profile.items():
        view.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    out.print(view)


def segment(
    ctx: typer.Context,
    definitions: Annotated[
        list[str] | None, typer.Argument(help="NAME=EXPRESSION, e.g. 'loyal=recency_days <= 30 and frequency >= 3'")
    ] = None,
    rfm: Annotated[bool, typer.Option("--rfm", help="the named RFM segments instead")] = False,
    plot: Annotated[Path | None, typer.Option(help="write a PNG of segment sizes and revenue shares")] = None,
    export: Annotated[Path | None, typer.Option(help="write members (user_id, segment) to CSV or Parquet")] = None,
    as_json: JsonOpt = False,
    engine: EngineOpt = Engine.LOCAL,
    master: MasterOpt = None,
) -> None:
    """Segment sizes, revenue shares and overlaps over the stored profiles."""
    from shopsense.marketing.segments import plot_segments

    if not definitions and not rfm:
        console.print("error: give NAME=EXPRESSION segments or --rfm", style="bold red")
        raise typer.Exit(2)
    with _shop(ctx, read_only=True) as shop:
        marketing = shop.marketing
        pairs = parse_pairs(definitions or [], "segment")
        if engine is Engine.SPARK and not rfm:
            report = spark_jobs(shop, master).segments(pairs)
        else:
            report = marketing.rfm() if rfm else marketing.segments(pairs)
        if export is not None:
            marketing.export_members(report, export)
    _print_table(report.stats, "segments", as_json)
    if not as_json and report.overlaps.num_rows:
        _print_table(report.overlaps, "overlaps", False)
    if plot is not None:
        console.print(f"wrote {plot_segments(report.stats, plot)}", highlight=False)


def clusters(
    ctx: typer.Context,
    k: Annotated[int | None, typer.Option(help="number of clusters (default: best silhouette)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Cluster customers on their profiles and describe each cluster in words."""
    from shopsense.marketing.clustering import ClusterConfig

    with _marketing(ctx, read_only=True) as marketing:
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
        echo_json(counts, indent=None)
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
        echo_json(body)
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

    with _shop(ctx) as shop:
        users = shop.marketing.treated(name)
        recommender = shop.recommendations
        payload = personalise(users, lambda user: recommender.recommend(user, k, pipeline=pipeline), template, k)
        path = export_payload(payload, out_path)
    console.print(f"[green]✓[/] {payload.num_rows:,} personalised payloads written to {path}", highlight=False)


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
        target = Target(item_id=None if item is None else cli_id(item, "--item"), category=category, brand=brand)
        spec = AudienceSpec(top_n=top, min_score=min_score, exclude_bought_within_days=exclude_bought_days)
        result = marketing.audience(target, spec, segment=segment, horizon_days=horizon_days)
        if out_path is not None:
            export_audience(result.table, out_path)
    if as_json:
        echo_json({"funnel": result.funnel, "model": str(result.scores.report)})
        return
    console.print(result.describe(), highlight=False)
    _print_table(result.table.select(["user_id", "score", "main_reason"]).slice(0, 10), "top of the audience", False)
    if out_path is not None:
        console.print(f"wrote {result.table.num_rows:,} customers to {out_path}", highlight=False)
