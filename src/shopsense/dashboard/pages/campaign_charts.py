"""The campaigns page's plots: the split (assigned against planned), the lift of every treatment with its
confidence interval, each arm's conversion and revenue per user, and the design calculator's curve."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from markupsafe import Markup

from shopsense.dashboard.charts import chart, empty, figure
from shopsense.services.marketing_desk import CampaignRow, Design

LABELS = {"conversion": "conversion (pp)", "revenue_per_user": "revenue per user"}


def split(row: CampaignRow, readout: dict[str, Any] | None) -> Markup:
    """Users per arm against what the configured split expects of that many (the sample-ratio check's view)."""
    names = [v.name for v in row.config.variants]
    assigned = [row.assigned.get(n, 0) for n in names]
    total = sum(assigned)
    if not total:
        fig = figure("Planned split", height=260)
        fig.add_trace(go.Pie(labels=names, values=[v.weight for v in row.config.variants], hole=0.5, sort=False))
        return chart(fig)
    fig = figure("Users per arm: assigned and expected", height=280, barmode="group")
    fig.add_bar(x=names, y=assigned, name="assigned")
    fig.add_bar(x=names, y=[total * v.weight for v in row.config.variants], name="expected by the split")
    if readout is not None:
        srm = readout["sample_ratio"]
        verdict = "mismatch: do not trust the read-out" if srm["mismatch"] else "as planned"
        fig.update_layout(title_text=f"Users per arm: {verdict} (chi-square p = {_p(srm['p_value'])})")
    return chart(fig)


def lift(readout: dict[str, Any], metric: str) -> Markup:
    """Each treatment's difference from the hold-out on one metric, with its confidence interval."""
    lifts = [x for x in readout["lifts"] if x["metric"] == metric and x["diff"] is not None]
    if not lifts:
        return empty(f"No {LABELS[metric]} lift yet: the hold-out and the treatments need users.")
    level = f"{1 - readout['alpha']:.0%}"
    scale = 100.0 if metric == "conversion" else 1.0
    diffs = [scale * x["diff"] for x in lifts]
    lows = [scale * (x["diff_ci"][0] if x["diff_ci"][0] is not None else x["diff"]) for x in lifts]
    highs = [scale * (x["diff_ci"][1] if x["diff_ci"][1] is not None else x["diff"]) for x in lifts]
    fig = figure(f"Lift in {LABELS[metric]} over the hold-out, {level} CI", height=150 + 50 * len(lifts))
    hover = [f"{lo:+.2f} to {h:+.2f}, p = {_p(x['p_value'])}" for x, lo, h in zip(lifts, lows, highs, strict=True)]
    fig.add_scatter(
        x=diffs,
        y=[x["treatment"] for x in lifts],
        mode="markers",
        marker={"size": 12, "color": [_colour(x) for x in lifts]},
        error_x={
            "type": "data",
            "symmetric": False,
            "array": [h - d for h, d in zip(highs, diffs, strict=True)],
            "arrayminus": [d - lo for d, lo in zip(diffs, lows, strict=True)],
            "thickness": 2,
            "width": 8,
        },
        hovertext=hover,
        name=LABELS[metric],
    )
    fig.add_vline(x=0, line_color="#9ca3af", line_dash="dash")
    fig.update_xaxes(title_text=LABELS[metric], zeroline=False)
    fig.update_yaxes(type="category")
    fig.update_layout(showlegend=False)
    return chart(fig)


def _colour(lift: dict[str, Any]) -> str:
    """Green for a significant gain, red for a significant loss, grey for no detectable difference."""
    if not lift["significant"]:
        return "#6b7280"
    return "#16a34a" if lift["diff"] > 0 else "#dc2626"


def arms(readout: dict[str, Any]) -> Markup:
    """Conversion rate and revenue per user of every arm, side by side."""
    names = [v["name"] for v in readout["variants"]]
    fig = figure("Per arm: conversion and revenue per user", height=300, barmode="group")
    conversion = [100 * (v["conversion_rate"] or 0) for v in readout["variants"]]
    fig.add_bar(x=names, y=conversion, name="conversion %", offsetgroup="conversion")
    revenue = [v["revenue_per_user"] or 0 for v in readout["variants"]]
    fig.add_bar(x=names, y=revenue, name="revenue per user", yaxis="y2", offsetgroup="revenue")
    fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "title": {"text": "revenue"}})
    fig.update_layout(yaxis={"title": {"text": "conversion %"}})
    return chart(fig)


def design(found: Design) -> go.Figure:
    """The smallest detectable conversion lift against users per arm, the chosen design marked."""
    fig = figure("Detectable lift by users per arm", height=280)
    fig.add_scatter(x=[n for n, _ in found.curve], y=[100 * m for _, m in found.curve], mode="lines", name="MDE")
    fig.add_scatter(x=[found.n_per_arm], y=[100 * found.mde_abs], mode="markers", marker={"size": 10}, name="this")
    fig.update_xaxes(type="log", title_text="users per arm")
    fig.update_yaxes(title_text="detectable lift (pp)")
    fig.update_layout(showlegend=False)
    return fig


def _p(value: float | None) -> str:
    if value is None:
        return "undefined"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"
