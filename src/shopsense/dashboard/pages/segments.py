"""Segments (``/segments``): an expression editor checked as one types, the saved segments' sizes, revenue
shares and overlaps, the RFM grid as a heatmap, clusters described in words; save, delete and export."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import plotly.graph_objects as go
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from markupsafe import Markup

from shopsense.dashboard.charts import chart, chart_json, empty, figure
from shopsense.dashboard.deps import Marketer, ViewerInfo, render, require
from shopsense.dashboard.pages.marketing_common import attempt, csv_download, marketing
from shopsense.errors import ShopsenseError
from shopsense.marketing.expressions import FUNCTIONS, MAX_LENGTH
from shopsense.services import marketing_desk as desk
from shopsense.services.keys import Scope
from shopsense.services.marketing import MarketingService, SegmentReport

router = APIRouter()
Writer = Annotated[ViewerInfo, require(Scope.MARKETING)]
Expression = Annotated[str, Form(max_length=MAX_LENGTH)]


Seen = desk.SegmentOverview


@router.get("/segments", response_class=HTMLResponse)
async def segments(request: Request, who: Marketer, saved: str | None = None) -> HTMLResponse:
    """Segments: write, check, save, compare and export them."""
    return await _page(request, notice=f"Saved segment {saved!r}." if saved else None)


async def _page(
    request: Request, *, name: str = "", expression: str = "", error: str | None = None, notice: str | None = None
) -> HTMLResponse:
    seen, problem = await attempt(request, desk.segment_overview)
    return render(
        request,
        "segments.html",
        seen=seen,
        problem=problem,
        charts=_charts(seen) if seen else {},
        name=name,
        expression=expression,
        error=error,
        notice=notice,
        functions=FUNCTIONS,
        max_length=MAX_LENGTH,
    )


@router.get("/segments/check")
async def check(request: Request, who: Marketer, expression: Annotated[str, Query(max_length=MAX_LENGTH)] = "") -> Any:
    """An expression checked against the profiles as one types: its size, or the caret under what is wrong."""
    if not expression.strip():
        return {"ok": False, "empty": True}
    found, problem = await attempt(request, lambda m: desk.check_expression(m, expression))
    if found is None:
        return JSONResponse({"error": {"code": "conflict", "message": problem}}, 409)
    return found.to_dict()


@router.get("/segments/clusters")
async def clusters(request: Request, who: Marketer) -> Any:
    """The customer clusters described in words, with a chart of their sizes (k-means takes a moment)."""
    kept: tuple[str, list[dict[str, Any]]] | None = getattr(request.app.state, "dashboard_clusters", None)

    def work(m: MarketingService) -> tuple[str, list[dict[str, Any]]]:
        profiles = m.profiles()
        version = desk.profiles_version(profiles)
        if kept is not None and kept[0] == version:  # k-means takes seconds: once per build of the profiles
            return kept
        return version, desk.cluster_summary(m, profiles)

    answer, problem = await attempt(request, work)
    found = None
    if answer is not None:
        request.app.state.dashboard_clusters = answer
        found = answer[1]
    if found is None:
        return JSONResponse({"error": {"code": "conflict", "message": problem}}, 409)
    fig = figure("Clusters: customers", height=max(220, 34 * len(found) + 70))
    ordered = list(reversed(found))
    fig.add_bar(
        y=[c["name"] for c in ordered],
        x=[c["customers"] for c in ordered],
        orientation="h",
        text=[f"{c['share']:.0%}" for c in ordered],
        hovertext=[c["description"] for c in ordered],
        name="customers",
    )
    return {"clusters": found, "chart": chart_json(fig)}


@router.post("/segments", response_class=HTMLResponse)
async def save(
    request: Request, who: Writer, name: Annotated[str, Form(max_length=256)], expression: Expression
) -> Response:
    """Save (or replace) a named segment; a bad expression or name is shown on the page, nothing saved."""
    try:
        saved = await marketing(request, lambda m: m.save_segment(name, expression))
    except ShopsenseError as exc:
        return await _page(request, name=name, expression=expression, error=str(exc))
    return RedirectResponse(f"/segments?saved={quote(saved.name)}", status_code=303)


@router.post("/segments/delete")
async def delete(request: Request, who: Writer, name: Annotated[str, Form(max_length=256)]) -> Response:
    """Forget a saved segment."""
    await marketing(request, lambda m: m.delete_segment(name))
    return RedirectResponse("/segments", status_code=303)


@router.get("/segments/export.csv")
async def export(request: Request, who: Marketer, name: str | None = None) -> Response:
    """The members of one saved segment (or of every one, without ``name``): user_id, segment; formula-safe
    CSV; 404 for a name not saved."""

    def members(m: MarketingService) -> bytes | None:
        saved = m.saved_segments()
        if name is not None and name not in saved:
            return None
        chosen = {name: saved[name]} if name is not None else saved
        report = m.segments(chosen) if chosen else None
        return desk.csv_bytes(report.membership()) if report else b"user_id,segment\n"

    body, problem = await attempt(request, members)
    if body is None and problem is None:
        return JSONResponse({"error": {"code": "not_found", "message": f"no saved segment {name!r}"}}, 404)
    if body is None:
        return JSONResponse({"error": {"code": "conflict", "message": problem}}, 409)
    return csv_download(body, f"segment-{name}.csv" if name else "segments.csv")


def _charts(seen: Seen) -> dict[str, Markup]:
    charts = {"rfm": _rfm_heatmap(seen.grid), "rfm_segments": _sizes(seen.rfm, "RFM segments: customers")}
    if seen.report is None:
        nothing = empty("No saved segments yet: write one above and save it.")
        return {**charts, "sizes": nothing, "overlaps": nothing}
    return {**charts, "sizes": _sizes(seen.report, "Saved segments: customers"), "overlaps": _overlaps(seen.report)}


def _sizes(report: SegmentReport, title: str) -> Markup:
    rows = report.stats.to_pylist()
    if not rows:
        return empty("No segments.")
    fig = figure(title, height=max(240, 30 * len(rows) + 80), barmode="group")
    ordered = list(reversed(rows))
    names = [r["segment"] for r in ordered]
    fig.add_bar(
        y=names,
        x=[r["customers"] for r in ordered],
        orientation="h",
        name="customers",
        text=[_share(r["revenue_share"], "of revenue") for r in ordered],
        textposition="auto",
    )
    return chart(fig)


def _share(value: float | None, what: str) -> str:
    return "" if value is None or value != value else f"{value:.0%} {what}"


def _overlaps(report: SegmentReport) -> Markup:
    names = list(report.masks)
    if len(names) < 2:
        return empty("Save a second segment to see how much they overlap.")
    sizes = {r["segment"]: r["customers"] for r in report.stats.to_pylist()}
    jaccard = {(n, n): 1.0 for n in names}
    both = {(n, n): sizes[n] for n in names}
    for r in report.overlaps.to_pylist():
        pair = (r["segment_a"], r["segment_b"])
        value = r["jaccard"] if r["jaccard"] == r["jaccard"] else 0.0
        jaccard[pair] = jaccard[pair[::-1]] = value
        both[pair] = both[pair[::-1]] = r["both"]
    fig = figure("Overlaps: shared customers (colour: Jaccard index)", height=max(260, 40 * len(names) + 100))
    fig.add_trace(
        go.Heatmap(
            x=names,
            y=names,
            z=[[jaccard[(a, b)] for b in names] for a in names],
            text=[[str(both[(a, b)]) for b in names] for a in names],
            texttemplate="%{text}",
            zmin=0,
            zmax=1,
            colorscale="Blues",
            hovertemplate="%{y} and %{x}: %{text} customers (Jaccard %{z:.2f})<extra></extra>",
        )
    )
    return chart(fig)


def _rfm_heatmap(grid: desk.RfmGrid) -> Markup:
    if not any(map(sum, grid.customers)):
        return empty("No purchasers yet: the RFM grid needs purchases.")
    scores = [str(s) for s in desk.SCORES]
    hover = [
        [f"{grid.segments[r][f] or 'nobody'}<br>revenue {grid.revenue[r][f]:,.0f}" for f in range(5)] for r in range(5)
    ]
    fig = figure("RFM grid: customers by score (5 = best)", height=360)
    fig.add_trace(
        go.Heatmap(
            x=scores,
            y=scores,
            z=grid.customers,
            text=hover,
            texttemplate="%{z}",
            colorscale="YlGnBu",
            hovertemplate="R %{y}, F %{x}: %{z} customers<br>%{text}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="frequency score", type="category")
    fig.update_yaxes(title_text="recency score", type="category")
    return chart(fig)
