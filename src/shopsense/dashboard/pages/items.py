"""Items (``/items``): catalogue search; one item's popularity, conversion and "often bought with" neighbours."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from shopsense.dashboard.charts import chart, empty, figure
from shopsense.dashboard.deps import Reader, insights, render, serving
from shopsense.services.insights import ItemInsight

router = APIRouter()

NEIGHBOURS = 12


@router.get("/items", response_class=HTMLResponse)
async def items(
    request: Request,
    who: Reader,
    q: Annotated[str, Query(max_length=200)] = "",
    item: Annotated[str | None, Query(max_length=256)] = None,
) -> HTMLResponse:
    """Search the catalogue; with ``item``, that item's activity and neighbours."""
    found = await asyncio.wrap_future(insights(request).search(q, 50))
    detail: ItemInsight | None = None
    neighbours: list[dict[str, Any]] = []
    neighbour_error: str | None = None
    plot = None
    if item:
        detail = await asyncio.wrap_future(insights(request).item(item))
        if detail is not None:
            try:
                neighbours = await asyncio.to_thread(serving(request).similar, item, NEIGHBOURS)
            except LookupError as exc:  # KeyError included
                reason = str(exc.args[0]) if exc.args else ""
                neighbour_error = reason or "the served model does not know this item (too few events)"
            plot = _activity_chart(detail)
    return render(
        request,
        "items.html",
        q=q,
        found=found,
        item=item,
        detail=detail,
        neighbours=neighbours,
        neighbour_error=neighbour_error,
        plot=plot,
    )


def _activity_chart(detail: ItemInsight) -> Any:
    if not detail.by_type:
        return empty("No events for this item yet.")
    kinds = list(detail.by_type)
    fig = figure("Events and distinct customers, by type", barmode="group", height=280)
    fig.add_bar(x=kinds, y=[detail.by_type[k]["events"] for k in kinds], name="events")
    fig.add_bar(x=kinds, y=[detail.by_type[k]["users"] for k in kinds], name="customers")
    return chart(fig)
