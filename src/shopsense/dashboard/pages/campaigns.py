"""Campaigns (``/campaigns``): create one with its arms and split, assign a segment or an audience to it
(launch), preview each customer's personalised message, and read it out: lift with its confidence interval,
sample-ratio check, conversion, revenue, repurchase and ROI per arm, the plain-language decision, and an
MDE / sample-size calculator. Creating and assigning need the marketing scope (403 without it)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from markupsafe import Markup

from shopsense.dashboard.charts import chart_json
from shopsense.dashboard.deps import Marketer, ViewerInfo, render, require, serving, shop_of
from shopsense.dashboard.pages import campaign_charts as charts
from shopsense.dashboard.pages.marketing_common import attempt, csv_download, marketing
from shopsense.errors import ConfigError, ShopsenseError
from shopsense.marketing.campaigns import CampaignConfig
from shopsense.marketing.content import FIELDS
from shopsense.services import marketing_desk as desk
from shopsense.services.jobs import JobStatus
from shopsense.services.keys import Scope
from shopsense.services.marketing import MarketingService

router = APIRouter()
Writer = Annotated[ViewerInfo, require(Scope.MARKETING)]
Name = Annotated[str, Path(min_length=1, max_length=256)]
PREVIEWS = 5
"""Customers whose message is previewed."""
DEFAULT_TEMPLATE = "Hi! Picked for you: $titles. ($first_reason)"
AUDIENCE_JOB = "audience"


@dataclass(frozen=True)
class Sources:
    """What a campaign can be assigned: saved segments and finished audience jobs (id, what they target)."""

    segments: dict[str, str]
    audiences: list[tuple[str, str]]


async def _sources(request: Request) -> Sources:
    segments = await marketing(request, lambda m: m.saved_segments())
    jobs = await asyncio.to_thread(shop_of(request).jobs.recent, 50)
    audiences = [
        (job.job_id, f"{json.loads(job.result or '{}').get('target', 'audience')} · {job.created_at:%Y-%m-%d %H:%M}")
        for job in jobs
        if job.kind == AUDIENCE_JOB and job.status is JobStatus.SUCCEEDED
    ]
    return Sources(segments, audiences)


@router.get("/campaigns", response_class=HTMLResponse)
async def campaigns(
    request: Request,
    who: Marketer,
    audience: Annotated[str | None, Query(max_length=64)] = None,
    segment: Annotated[str | None, Query(max_length=256)] = None,
) -> HTMLResponse:
    """Every campaign with its arms and users assigned; a form to create one (for an audience job or a saved
    segment, which its page then offers to assign first)."""
    source = f"audience:{audience}" if audience else f"segment:{segment}" if segment else ""
    return await _list(request, form={"source": source})


async def _list(request: Request, *, error: str | None = None, form: dict[str, Any] | None = None) -> HTMLResponse:
    rows, problem = await attempt(request, desk.campaigns_overview)
    today = datetime.now(UTC).date()
    defaults = {"start": today.isoformat(), "end": (today + timedelta(days=14)).isoformat(), "channel": "email"}
    return render(
        request,
        "campaigns.html",
        rows=rows or [],
        problem=problem,
        error=error,
        form={**defaults, **(form or {})},
    )


@router.post("/campaigns", response_class=HTMLResponse)
async def create(
    request: Request,
    who: Writer,
    name: Annotated[str, Form(min_length=1, max_length=256)],
    channel: Annotated[str, Form(min_length=1, max_length=64)],
    start: Annotated[date, Form()],
    end: Annotated[date, Form()],
    control_share: Annotated[float, Form(gt=0, lt=100)] = 10.0,
    arm_name: Annotated[list[str] | None, Form()] = None,
    arm_share: Annotated[list[str] | None, Form()] = None,
    arm_treatment: Annotated[list[str] | None, Form()] = None,
    attribution_days: Annotated[float, Form(gt=0, le=365)] = 7.0,
    primary_metric: Annotated[Literal["conversion", "revenue_per_user", "ctr"], Form()] = "conversion",
    cost_per_contact: Annotated[float, Form(ge=0)] = 0.0,
    offer_cost: Annotated[float, Form(ge=0)] = 0.0,
    source: Annotated[str, Form(max_length=300)] = "",
) -> Response:
    """Create (or replace) a campaign: a hold-out and one or more treatment arms sharing the rest."""
    form = {"name": name, "channel": channel, "start": start.isoformat(), "end": end.isoformat(), "source": source}
    if "/" in name:  # its page is /campaigns/<name>: a slash would name another page
        return await _list(request, error=f"a campaign name cannot contain '/' ({name.strip()!r})", form=form)
    try:
        variants = _variants(control_share, arm_name or [], arm_share or [], arm_treatment or [], offer_cost)
        config = CampaignConfig.parse(
            {
                "name": name.strip(),
                "channel": channel,
                "start": datetime.combine(start, datetime.min.time(), UTC),
                "end": datetime.combine(end, datetime.min.time(), UTC) + timedelta(days=1),
                "variants": variants,
                "attribution_days": attribution_days,
                "primary_metric": primary_metric,
                "cost_per_contact": cost_per_contact,
            },
            "campaign form",
        )
        saved = await marketing(request, lambda m: m.save_campaign(config))
    except ShopsenseError as exc:
        return await _list(request, error=str(exc), form=form)
    then = f"?source={quote(source)}" if source else ""
    return RedirectResponse(f"/campaigns/{quote(saved.name)}{then}", status_code=303)


def _variants(
    control_share: float, names: list[str], shares: list[str], treatments: list[str], offer_cost: float
) -> list[dict[str, Any]]:
    """The arms from the form: the hold-out, then every named treatment; a treatment without a share gets an
    equal part of what the hold-out and the other arms leave."""
    arms = [
        (n.strip(), s.strip(), treatments[i].strip() if i < len(treatments) else "")
        for i, (n, s) in enumerate(zip(names, [*shares, *[""] * len(names)], strict=False))
        if n.strip()
    ]
    if not arms:
        raise ConfigError("name at least one treatment arm (what the contacted customers get)")
    try:
        given = {n: float(s) for n, s, _ in arms if s}
    except ValueError as exc:
        raise ConfigError(f"an arm's share is not a number: {exc}") from exc
    rest = (100.0 - control_share - sum(given.values())) / max(1, len(arms) - len(given))
    variants: list[dict[str, Any]] = [{"name": "control", "weight": control_share / 100, "is_control": True}]
    for arm, _, treatment in arms:
        share = given.get(arm, rest)
        variants.append(
            {"name": arm, "weight": round(share / 100, 12), "treatment": treatment, "offer_cost": offer_cost}
        )
    return variants


@dataclass(frozen=True)
class Detail:
    """One campaign as its page shows it: its definition, users per arm, read-out (or why none yet)."""

    row: desk.CampaignRow
    treated: list[str]
    readout: dict[str, Any] | None
    readout_problem: str | None


def _detail(name: str) -> Any:
    def read(m: MarketingService) -> Detail:
        config = m.campaign(name)
        counts = m.assigned(name)
        row = desk.CampaignRow(config, {v.name: counts.get(v.name, 0) for v in config.variants})
        treated = m.treated(name) if counts else []
        try:
            readout: dict[str, Any] | None = m.readout(name).to_dict() if counts else None
            problem = None if readout else "Nobody is assigned yet: assign a segment or an audience to launch."
        except ShopsenseError as exc:
            readout, problem = None, str(exc)
        return Detail(row, treated, readout, problem)

    return read


@router.get("/campaign-design")
async def design(
    request: Request,
    who: Marketer,
    baseline: Annotated[float, Query(gt=0, lt=1)],
    n: Annotated[int | None, Query(ge=2, le=10**9)] = None,
    mde: Annotated[float | None, Query(gt=0, lt=1)] = None,
    alpha: Annotated[float, Query(gt=0, lt=1)] = 0.05,
    power: Annotated[float, Query(gt=0, lt=1)] = 0.8,
) -> Any:
    """The MDE for ``n`` users per arm, or the users per arm for an MDE, with the curve between them."""
    try:
        found = await asyncio.to_thread(desk.design, baseline, n_per_arm=n, mde_abs=mde, alpha=alpha, power=power)
    except ConfigError as exc:  # no design fits (too few users for any lift): an answer, not a failed request
        return {"problem": str(exc)}
    return {
        "problem": None,
        "n_per_arm": found.n_per_arm,
        "mde_abs": found.mde_abs,
        "relative": found.mde_abs / baseline,
        "chart": chart_json(charts.design(found)),
    }


@router.get("/campaigns/{name}", response_class=HTMLResponse)
async def campaign(
    request: Request,
    who: Marketer,
    name: Name,
    template: Annotated[str | None, Query(max_length=2000)] = None,
    assigned: Annotated[int | None, Query(ge=0)] = None,
    source: Annotated[str | None, Query(max_length=300)] = None,
) -> HTMLResponse:
    """One campaign: its split, assignment (launch), message preview and read-out."""
    notice = None if assigned is None else f"Assigned: the campaign now has {assigned:,} users."
    return await _campaign(request, name, template=template, notice=notice, source=source)


async def _campaign(
    request: Request,
    name: str,
    *,
    template: str | None = None,
    error: str | None = None,
    notice: str | None = None,
    source: str | None = None,
) -> HTMLResponse:
    detail, problem = await attempt(request, _detail(name))
    if detail is None:
        return render(request, "campaigns_missing.html", status_code=404, message=problem)
    sources = await _sources(request)
    previews, preview_error = await _previews(request, detail.treated[:PREVIEWS], template or DEFAULT_TEMPLATE)
    readout = detail.readout
    return render(
        request,
        "campaigns_detail.html",
        detail=detail,
        config=detail.row.config,
        readout=readout,
        sources=sources,
        chosen=source or "",
        previews=previews,
        preview_error=preview_error,
        template=template or DEFAULT_TEMPLATE,
        fields=FIELDS,
        error=error,
        notice=notice,
        baseline=_baseline(readout),
        n_per_arm=min(detail.row.assigned.values(), default=0) or 1000,
        charts=_charts(detail),
    )


async def _previews(request: Request, users: list[str], template: str) -> tuple[list[dict[str, Any]], str | None]:
    if not users:
        return [], None
    svc = serving(request)
    try:
        found = await asyncio.to_thread(desk.preview_messages, lambda u: svc.recommend(u, 3).items, users, template)
    except ShopsenseError as exc:
        return [], str(exc)
    return found, None


def _baseline(readout: dict[str, Any] | None) -> float:
    """The hold-out's conversion rate, for the calculator (5% before there is one)."""
    if readout:
        for arm in readout["variants"]:
            rate = arm.get("conversion_rate")
            if arm["is_control"] and rate and 0 < rate < 1:
                return float(rate)
    return 0.05


def _charts(detail: Detail) -> dict[str, Markup]:
    found = {"split": charts.split(detail.row, detail.readout)}
    if detail.readout:
        found.update(
            lift_conversion=charts.lift(detail.readout, "conversion"),
            lift_revenue=charts.lift(detail.readout, "revenue_per_user"),
            arms=charts.arms(detail.readout),
        )
    return found


@router.get("/campaigns/{name}/contacts.csv")
async def export_contacts(request: Request, who: Marketer, name: Name) -> Response:
    """Whom the campaign contacts (its treated users, never the hold-out), with their arm: formula-safe CSV."""
    body, problem = await attempt(request, lambda m: desk.csv_bytes(desk.contacts(m, name)))
    if body is None:
        return JSONResponse({"error": {"code": "not_found", "message": problem}}, 404)
    return csv_download(body, f"campaign-{name}-contacts.csv")


@router.post("/campaigns/{name}/assign", response_class=HTMLResponse)
async def assign(
    request: Request,
    who: Writer,
    name: Name,
    source: Annotated[str, Form(min_length=1, max_length=2100)],
    expression: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Assign (launch): a saved segment (``segment:<name>``), a segment expression (``expression``) or an
    audience job's customers (``audience:<job id>``) to the arms; users assigned before keep their arm."""
    kind, _, value = source.partition(":")
    try:
        if kind == "audience":
            rows = await asyncio.to_thread(shop_of(request).jobs.rows, value)
            if rows is None:
                raise ConfigError(f"audience job {value!r} kept no customers")
            users = [str(u) for u in rows.column("user_id").to_pylist()]
            counts = await marketing(request, lambda m: m.assign(name, user_ids=users))
        elif kind in ("segment", "expression"):

            def by_segment(m: MarketingService) -> dict[str, int]:
                text = expression if kind == "expression" else m.saved_segments().get(value)
                if not text:
                    raise ConfigError(f"no saved segment {value!r}" if kind == "segment" else "write an expression")
                return m.assign(name, segment=text)

            counts = await marketing(request, by_segment)
        else:
            raise ConfigError(f"unknown audience source {source!r}")
    except ShopsenseError as exc:
        return await _campaign(request, name, error=str(exc))
    return RedirectResponse(f"/campaigns/{quote(name)}?assigned={sum(counts.values())}", status_code=303)
