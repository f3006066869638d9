"""Evaluation results as JSON (for machines), a markdown table (for reviewers) and a PNG (for people).

The JSON keeps, per model, the headline figures of the primary task at the top level —
``ndcg@10``, ``recall@20``, ``mrr@10``, ``ci95_ndcg@10``, ``fit_seconds``, ``peak_mb``, ``peer`` —
and every metric of every task below, so comparisons across runs need no parsing of tables.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from shopsense.eval.harness import ModelResult, Prepared, Task

_HEADLINE = ("ndcg@10", "recall@20", "mrr@10")
_COLUMNS = (
    ("NDCG@10", "ndcg@10"),
    ("Recall@20", "recall@20"),
    ("MRR@10", "mrr@10"),
    ("HR@10", "hit_rate@10"),
    ("P@10", "precision@10"),
    ("MAP@10", "map@10"),
    ("Cov@10", "coverage@10"),
    ("Nov@10", "novelty@10"),
    ("Div@10", "diversity@10"),
    ("PopBias@10", "popularity_bias@10"),
)


def build_report(dataset: str, prepared: Prepared, results: list[ModelResult], primary: Task) -> dict[str, Any]:
    """One dataset's results as plain JSON-ready data."""
    models: dict[str, Any] = {}
    tasks: dict[str, Any] = {}
    for result in results:
        head = result.tasks.get(primary)
        models[result.name] = {
            "peer": result.peer,
            **{name: _round(head.metrics.get(name)) if head else None for name in _HEADLINE},
            "ci95_ndcg@10": [_round(v) for v in head.ci95_ndcg10] if head else None,
            "fit_seconds": _round(result.fit_seconds, 2),
            "peak_mb": _round(result.peak_mb, 1),
            "params": result.params,
            "error": result.error,
            "skipped": result.skipped,
            "scaled_down": result.scaled_down,
        }
        for task, value in result.tasks.items():
            entry = tasks.setdefault(str(task), {"users": value.users, "models": {}})
            entry["models"][result.name] = {
                **{name: _round(v) for name, v in value.metrics.items()},
                "ci95_ndcg@10": [_round(v) for v in value.ci95_ndcg10],
                "p_vs_best": _round(value.p_vs_best),
            }
    return {
        "dataset": dataset,
        "split": prepared.split.description,
        "primary_task": str(primary),
        "items": len(prepared.data.items),
        "training_users": prepared.data.matrix.shape[0],
        "test_users": len(prepared.users),
        "test_items_unknown_to_training": prepared.unknown_test_items,
        "interaction_weights": prepared.config.weights,
        "half_life_days": prepared.config.half_life_days,
        "models": models,
        "tasks": tasks,
        "cold_start": {
            "users": prepared.cold.matrix.shape[0],
            "models": {r.name: {k: _round(v) for k, v in r.cold.items() if k in _HEADLINE} for r in results if r.cold},
        },
    }


def to_markdown(report: dict[str, Any]) -> str:
    """Tables per task, best model first, peers marked."""
    lines = [
        f"### {report['dataset']}",
        "",
        f"{report['split']}. {report['items']:,} items ranked (full catalogue); "
        f"{report['test_items_unknown_to_training']:,} held-out items never seen in training count as misses. "
        f"Primary task: `{report['primary_task']}`. *fit s* is training time; *peak MB* is the growth of "
        "resident memory while fitting and ranking.",
    ]
    for task, entry in report["tasks"].items():
        title = "next purchases, repeats included" if task == Task.ALL else "new items only (seen items excluded)"
        lines += ["", f"**Task `{task}` — {title}; {entry['users']:,} users**", ""]
        header = ["model", *(label for label, _ in _COLUMNS), "95% CI NDCG@10", "p vs best", "fit s", "peak MB"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        ranked = sorted(entry["models"].items(), key=lambda kv: -(kv[1].get("ndcg@10") or 0))
        for name, values in ranked:
            model = report["models"][name]
            label = f"{name} *(peer)*" if model["peer"] else f"**{name}**"
            ci = values.get("ci95_ndcg@10") or [None, None]
            cells = [label, *(_fmt(values.get(key)) for _, key in _COLUMNS)]
            cells += [f"{_fmt(ci[0])} to {_fmt(ci[1])}", _fmt(values.get("p_vs_best"), 3)]
            cells += [_fmt(model["fit_seconds"], 1), _fmt(model["peak_mb"], 0)]
            lines.append("| " + " | ".join(cells) + " |")
    models = report["models"].items()
    failed = [f"{name} ({model['error']})" for name, model in models if model.get("error") and not model.get("skipped")]
    if failed:
        lines += ["", "No result: " + "; ".join(failed) + "."]
    skipped = [f"{name} ({model['error']})" for name, model in models if model.get("skipped")]
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped) + "."]
    scaled = report.get("scaled_down") or [note for _, model in models for note in model.get("scaled_down") or []]
    if scaled:
        lines += ["", "Scaled down to fit this machine: " + "; ".join(dict.fromkeys(scaled)) + "."]
    cold = report["cold_start"]
    if cold["users"] and cold["models"]:
        lines += ["", f"Cold-start slice ({cold['users']:,} test users with no training history, task `all`):", ""]
        lines += ["| model | NDCG@10 | Recall@20 |", "|---|---|---|"]
        for name, values in sorted(cold["models"].items(), key=lambda kv: -(kv[1].get("ndcg@10") or 0)):
            lines.append(f"| {name} | {_fmt(values.get('ndcg@10'))} | {_fmt(values.get('recall@20'))} |")
    return "\n".join(lines) + "\n"


def plot(reports: list[dict[str, Any]], path: Path) -> Path:
    """NDCG@10 with 95% CIs per model, one panel per dataset and task; peers hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(r, task) for r in reports for task in r["tasks"]]
    if not panels:  # every model skipped or failed: the report says why
        fig, ax = plt.subplots(figsize=(6, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no model produced lists (see the report)", ha="center", va="center")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 1.2 + 0.32 * _most_models(reports) * len(panels)))
    for ax, (report, task) in zip(list(getattr(axes, "flat", [axes])), panels, strict=True):
        entries = sorted(report["tasks"][task]["models"].items(), key=lambda kv: kv[1].get("ndcg@10") or 0)
        names = [name for name, _ in entries]
        means = [values.get("ndcg@10") or 0 for _, values in entries]
        lows = [m - (v["ci95_ndcg@10"][0] or m) for m, (_, v) in zip(means, entries, strict=True)]
        highs = [(v["ci95_ndcg@10"][1] or m) - m for m, (_, v) in zip(means, entries, strict=True)]
        peers = [report["models"][name]["peer"] for name in names]
        bars = ax.barh(names, means, xerr=[lows, highs], color=["#bbbbbb" if p else "#2b7bba" for p in peers])
        for bar, peer in zip(bars, peers, strict=True):
            if peer:
                bar.set_hatch("//")
        ax.set_title(f"{report['dataset']} — task {task}", fontsize=10)
        ax.set_xlabel("NDCG@10 (95% bootstrap CI); grey hatched = peer library")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(reports: list[dict[str, Any]], folder: Path, stem: str, preamble: str = "") -> list[Path]:
    """``stem.md``, ``stem.json`` and ``stem.png`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / f"{stem}.md"
    md.write_text(preamble + "\n".join(to_markdown(r) for r in reports))
    js = folder / f"{stem}.json"
    js.write_text(json.dumps({r["dataset"]: r for r in reports}, indent=2, default=str) + "\n")
    return [md, js, plot(reports, folder / f"{stem}.png")]


def _most_models(reports: list[dict[str, Any]]) -> int:
    return max((len(r["models"]) for r in reports), default=1)


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"
