"""Plotly figures rendered in the browser by the plotly.js the ``plotly`` package ships (no CDN).

Contract: a page builds a ``plotly.graph_objects.Figure`` and passes ``chart(figure)`` to its template,
which writes it with ``{{ chart }}`` (it is markup: a ``<div class="chart">`` and the figure's JSON in a
``<script type="application/json">``, never executed). ``base.html`` loads ``/static/plotly.min.js`` and
``/static/dashboard.js``, which draws every ``.chart`` on the page. :func:`figure` gives the dashboard's
lean, consistent layout; ``empty(message)`` stands in where there is nothing to plot.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import plotly.graph_objects as go
from markupsafe import Markup, escape

COLORS = ("#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#525252")
"""The series colours, in order."""


def figure(title: str | None = None, *, height: int = 320, **layout: Any) -> go.Figure:
    """An empty figure with the dashboard's layout (no plotly template: its JSON is large)."""
    fig = go.Figure()
    fig.update_layout(
        template="none",
        title={"text": title, "x": 0, "font": {"size": 14}} if title else None,
        height=height,
        margin={"l": 48, "r": 16, "t": 36 if title else 12, "b": 40},
        colorway=list(COLORS),
        font={"family": "system-ui, sans-serif", "size": 12},
        legend={"orientation": "h", "y": -0.2},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        **layout,
    )
    fig.update_xaxes(gridcolor="#eee", zeroline=False, automargin=True)
    fig.update_yaxes(gridcolor="#eee", zeroline=False, automargin=True)
    return fig


def chart(fig: go.Figure, *, element_id: str | None = None) -> Markup:
    """The figure as markup for a template: a div and its JSON, drawn by ``/static/dashboard.js``."""
    element_id = element_id or f"chart-{secrets.token_hex(4)}"
    payload = fig.to_json(validate=False, engine="json")
    return _markup(element_id, payload)


def chart_json(fig: go.Figure) -> dict[str, Any]:
    """The figure as JSON data (for an endpoint whose ``fetch`` redraws a chart with ``Plotly.react``)."""
    loaded: dict[str, Any] = json.loads(fig.to_json(validate=False, engine="json"))
    return loaded


def empty(message: str) -> Markup:
    """A placeholder where a chart would be, saying why there is none."""
    return Markup('<div class="chart-empty">{}</div>').format(message)


def _markup(element_id: str, payload: str) -> Markup:
    safe = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    ident = escape(element_id)
    return Markup(
        f'<div class="chart" id="{ident}" data-figure="{ident}-data"></div>'
        f'<script type="application/json" id="{ident}-data">{safe}</script>'
    )
