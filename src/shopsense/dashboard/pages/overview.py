"""Overview (``/``): events per day by type and channel, the view → cart → purchase funnel, revenue net of
returns, active customers and top categories, over a date range."""

from __future__ import annotations

import asyncio

import plotly.graph_objects as go
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from shopsense.dashboard.charts import chart, empty, figure
from shopsense.dashboard.deps import Reader, insights, render
from shopsense.services.insights import Overview, parse_day

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, who: Reader, start: str | None = None, end: str | None = None) -> HTMLResponse:
    """The shop at a glance."""
    first, last = parse_day(start), parse_day(end)
    if first and last and first > last:
        first, last = last, first
    seen = await asyncio.wrap_future(insights(request).overview(first, last))
    return render(request, "overview.html", seen=seen, charts=_charts(seen))


def _charts(seen: Overview) -> dict[str, Markup]:
    if not seen.days:
        nothing = empty("No events in this range.")
        return dict.fromkeys(("types", "channels", "funnel", "revenue", "active", "categories"), nothing)
    days = [d.isoformat() for d in seen.days]
    types = figure("Events per day, by type", barmode="stack")
    for kind, series in seen.by_type.items():
        types.add_bar(x=days, y=series, name=kind)
    channels = figure("Events per day, by channel", barmode="stack")
    for channel, series in seen.by_channel.items():
        channels.add_bar(x=days, y=series, name=channel)
    funnel = figure("View → cart → purchase (events)")
    # No views recorded (order lines only): the steps with events, without shares of nothing ("Infinity%").
    steps = seen.funnel if seen.funnel[0][1] > 0 else [(s, n) for s, n in seen.funnel if n > 0] or seen.funnel
    shares = "value+percent initial" if steps[0][1] > 0 and len(steps) > 1 else "value"
    funnel.add_trace(go.Funnel(y=[step for step, _ in steps], x=[n for _, n in steps], textinfo=shares))
    revenue = figure("Revenue net of returns, per day")
    revenue.add_bar(x=days, y=seen.revenue, name="net revenue", marker_color="#16a34a")
    active = figure("Active customers per day")
    active.add_scatter(x=days, y=seen.active, mode="lines", name="active customers", line={"color": "#7c3aed"})
    categories = figure("Top categories", height=max(240, 28 * len(seen.categories) + 60))
    cats = list(reversed(seen.categories))
    categories.add_bar(y=[c["category"] for c in cats], x=[c["events"] for c in cats], orientation="h", name="events")
    categories.add_bar(
        y=[c["category"] for c in cats], x=[c["purchases"] for c in cats], orientation="h", name="purchases"
    )
    return {
        "types": chart(types),
        "channels": chart(channels),
        "funnel": chart(funnel),
        "revenue": chart(revenue),
        "active": chart(active),
        "categories": chart(categories) if seen.categories else empty("No categorised items."),
    }
