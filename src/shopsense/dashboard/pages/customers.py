"""Customers (``/customers``): find one; their profile (RFM and segment, interests, price band, channel mix,
lifecycle, churn risk, CLV), behaviour timeline, and recommendations with P(attention), P(purchase) and the
reason for each item, re-ranked live by an alpha slider and rule toggles (``/customers/recommendations``)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from markupsafe import Markup

from shopsense.dashboard.charts import chart, empty, figure
from shopsense.dashboard.deps import Marketer, render, serving
from shopsense.errors import ConfigError, ShopsenseError
from shopsense.services.insights import served_alpha, top_customers
from shopsense.services.keys import Scope
from shopsense.services.marketing import MarketingService

router = APIRouter()

TIMELINE = 500
"""Newest events plotted on a customer's timeline."""
RULE_TOGGLES = {
    "exclude_purchased": "Hide items they bought",
    "exclude_unavailable": "Hide unavailable items",
    "collapse_variants": "One item per variant group",
}


@router.get("/customers", response_class=HTMLResponse)
async def customers(
    request: Request, who: Marketer, user: Annotated[str | None, Query(max_length=256)] = None
) -> HTMLResponse:
    """Find a customer; with ``user``, their profile, timeline and recommendations."""
    svc = serving(request)
    user = (user or "").strip() or None
    context: dict[str, Any] = {"user": user, "rules": RULE_TOGGLES, "alpha": served_alpha(svc), "profile": None}
    context["can_recommend"] = who.can(Scope.RECOMMEND_READ)
    if user is None:
        try:
            table = await asyncio.wrap_future(svc.marketing(MarketingService.profiles))
            context["top"] = top_customers(table)
        except ConfigError as exc:
            context["top"], context["profiles_error"] = [], str(exc)
        return render(request, "customers.html", **context)
    history = await asyncio.wrap_future(svc.user_history(user, TIMELINE))
    try:
        profile = await asyncio.wrap_future(svc.marketing(lambda m: m.profile(user)))
    except ConfigError as exc:
        profile, context["profiles_error"] = None, str(exc)
    context.update(
        found=history is not None,
        profile=profile,
        history=(history or [])[:50],
        charts=_charts(profile, history or []),
    )
    return render(request, "customers.html", **context)


@router.get("/customers/recommendations")
async def recommendations(
    request: Request,
    who: Marketer,
    user: Annotated[str, Query(min_length=1, max_length=256)],
    alpha: Annotated[float | None, Query(ge=0, le=1)] = None,
    k: Annotated[int, Query(ge=1, le=50)] = 10,
    exclude_purchased: bool | None = None,
    exclude_unavailable: bool | None = None,
    collapse_variants: bool | None = None,
) -> JSONResponse:
    """The customer's recommendations as JSON, re-ranked with ``alpha`` and the rule toggles (for the page)."""
    if not who.can(Scope.RECOMMEND_READ):
        return JSONResponse({"error": {"code": "forbidden", "message": "your key cannot read recommendations"}}, 403)
    toggles = {"exclude_purchased": exclude_purchased, "exclude_unavailable": exclude_unavailable}
    toggles["collapse_variants"] = collapse_variants
    rules = {name: value for name, value in toggles.items() if value is not None} or None
    svc = serving(request)
    try:
        answer = await asyncio.to_thread(svc.recommend, user, k, alpha=alpha, rules=rules)
    except ShopsenseError as exc:
        return JSONResponse({"error": {"code": "invalid_request", "message": str(exc)}}, 400)
    return JSONResponse(
        {
            "user_id": user,
            "model_version": answer.model_version,
            "fallback": answer.fallback,
            "alpha": alpha if alpha is not None else served_alpha(svc),
            "items": [
                {k: item.get(k) for k in ("item_id", "title", "score", "p_attention", "p_purchase", "reason")}
                for item in answer.items
            ],
        }
    )


def _charts(profile: dict[str, Any] | None, history: list[dict[str, Any]]) -> dict[str, Markup]:
    charts: dict[str, Markup] = {}
    if history:
        timeline = figure("Behaviour timeline (newest events)", height=260)
        by_type: dict[str, tuple[list[Any], list[str]]] = {}
        for event in history:
            xs, ys = by_type.setdefault(event["type"], ([], []))
            xs.append(event["timestamp"].isoformat())
            ys.append(str(event["item_id"]))
        for kind, (xs, ys) in by_type.items():
            timeline.add_scatter(x=xs, y=[kind] * len(xs), mode="markers", name=kind, text=ys, hoverinfo="x+text")
        charts["timeline"] = chart(timeline)
    else:
        charts["timeline"] = empty("No events.")
    interests = [i for i in (profile or {}).get("interests") or [] if i.get("weight")]
    if interests:
        top = sorted(interests, key=lambda i: i["weight"])[-12:]
        fig = figure("Interests", height=max(200, 24 * len(top) + 60))
        fig.add_bar(y=[i["tag"] for i in top], x=[i["weight"] for i in top], orientation="h", name="weight")
        charts["interests"] = chart(fig)
    else:
        charts["interests"] = empty("No interests yet.")
    shares = {
        key.removeprefix("channel_"): value
        for key, value in (profile or {}).items()
        if key.startswith("channel_") and isinstance(value, float) and value > 0
    }
    if shares:
        fig = figure("Channel mix", height=240)
        fig.add_pie(labels=list(shares), values=list(shares.values()), hole=0.5)
        charts["channels"] = chart(fig)
    else:
        charts["channels"] = empty("No channel recorded.")
    return charts
