"""Ranking benchmark: the two-stage pipeline against the best single model, and the attention/purchase trade-off.

Per dataset, on exactly the split, interaction weights and time decay that ``benchmarks/quality.py``
tuned (read from its cached report, so run that first), the best shopsense single model of the
quality benchmark is refitted and the two-stage ranker (candidates -> LightGBM heads) is fitted
on the same training period; both rank the whole catalogue for the same test users. The ranker
predicts the dataset's target event (``purchase_types`` = the split's target) and is scored with
alpha = 0 and no value term, i.e. by P(target), so the comparison is ranking quality only.

Also, per dataset: each head's AUC and log-loss on the *test* window (candidate pairs of the
test users labelled by what they did after the cut), LightGBM vs DIN on validation, MMR
diversity vs accuracy, and the cold-start slice. On the synthetic shop, which has a view -> cart
-> purchase funnel and prices, an alpha sweep gives attention-NDCG, purchase-NDCG and revenue@10.

Writes ``benchmarks/results/ranking.md``, ``ranking.json``, ``ranking.png`` (alpha sweep) and
``ranking-compare.png``.

    .venv/bin/python benchmarks/ranking.py                       # every dataset with a quality report
    .venv/bin/python benchmarks/ranking.py --datasets synthetic online-retail
    .venv/bin/python benchmarks/ranking.py --store shop=../myshop/.shopsense   # after quality.py --store the same
    .venv/bin/python benchmarks/ranking.py --objectives binary lambdarank auto --datasets online-retail

With ``--objectives`` it compares the LightGBM heads' objectives instead (issue 24, item 5): per dataset the
two-stage ranker is fitted once per objective on the same split and scored on the same test users (no
single model), and ``ranking-objective.md`` / ``ranking-objective.json`` are written, ``ranking.*`` left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks.quality import DATASETS, PARAMS, RESULTS, WORK, Dataset, load, store_dataset  # noqa: E402
from shopsense.eval import metrics  # noqa: E402
from shopsense.eval.harness import EvalConfig, ModelResult, Prepared, Task, compare, evaluate_model, prepare  # noqa: E402
from shopsense.eval.splits import Protocol, SplitConfig  # noqa: E402
from shopsense.ingest.synthetic import GeneratorConfig, generate  # noqa: E402
from shopsense.models.registry import build_model  # noqa: E402
from shopsense.ranking.candidates import CandidateConfig, Source  # noqa: E402
from shopsense.ranking.diversity import mmr  # noqa: E402
from shopsense.ranking.heads import HEADS, classification_metrics  # noqa: E402
from shopsense.ranking.ranker import RankerConfig, Scored, TwoStage  # noqa: E402

ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
LAMBDAS = (1.0, 0.8, 0.6, 0.4, 0.2)
SYNTHETIC = GeneratorConfig(users=6000, items=1500, events=400_000, days=90, seed=7)
SYNTHETIC_SPLIT = SplitConfig(test_quantile=0.85, target_types=("purchase",))
ATTENTION = ("view", "click", "cart", "favourite")


def best_single(name: str) -> dict[str, Any]:
    """The best shopsense model of the quality benchmark on this dataset's primary task, with its tuning."""
    path = WORK / "reports" / f"{name}.json"
    published = RESULTS / "quality.json"  # the committed results hold the same reports: use them without a cache
    if path.exists():
        report = json.loads(path.read_text())
    elif published.exists() and name in (reports := json.loads(published.read_text())):
        report = reports[name]
    else:
        raise SystemExit(f"{path} missing: run benchmarks/quality.py --datasets {name} first")
    ours = {n: m for n, m in report["models"].items() if not m["peer"] and m["ndcg@10"] is not None}
    best = max(ours, key=lambda n: ours[n]["ndcg@10"])
    return {
        "name": best,
        "params": {**ours[best]["params"], **PARAMS.get(best, {})},
        "weights": report["interaction_weights"],
        "half_life_days": report["half_life_days"],
        "quality_ndcg@10": ours[best]["ndcg@10"],
    }


def ranker_config(split: SplitConfig, best: dict[str, Any], head: str, objective: str | None = None) -> RankerConfig:
    """The default pipeline's sources, plus the dataset's best single model as one more source.

    The heads' labels are cut the way the split cuts the test (the last target events of each
    user, a random share of pairs, or the last stretch of time), inside the training data only.
    """
    targets = split.target_types
    sources = list(CandidateConfig().sources)
    if best["name"] not in {s.model for s in sources} and best["name"] != "hybrid":
        sources.append(Source(name="best", model=best["name"], n=50, params=best["params"]))
    return RankerConfig(
        candidates=CandidateConfig(sources=tuple(sources)),
        purchase_types=targets,
        attention_types=tuple(t for t in ATTENTION if t not in targets),
        fusion={"alpha": 0.0, "value": "none"},  # type: ignore[arg-type]
        tune_alpha=True,
        head=head,  # type: ignore[arg-type]
        **({"boost": {"objective": objective}} if objective else {}),  # None: BoostConfig's default
        **LABELS[split.protocol](split),
    )


LABELS: dict[Protocol, Any] = {
    Protocol.TEMPORAL: lambda split: {"label_mode": "time"},
    Protocol.LEAVE_LAST: lambda split: {"label_mode": "last", "label_last": split.last_k},
    Protocol.RANDOM: lambda split: {"label_mode": "random", "label_fraction": split.test_fraction},
}


def test_window_heads(model: TwoStage, prepared: Prepared) -> dict[str, Any]:
    """Each head's AUC / log-loss on the test users' candidate pairs, labelled by the test period."""
    history = prepared.data.rows(prepared.users)
    scored = model.score_candidates(history)
    truth = prepared.truth[:, : prepared.data.matrix.shape[1]]
    labels = np.asarray(truth[scored.frame.users, scored.frame.items]).ravel() > 0
    return {
        head: classification_metrics(labels.astype(float), scored.probabilities[:, i]) for i, head in enumerate(HEADS)
    }


def lists(scored: Scored, rows: int, k: int, alpha: float) -> np.ndarray:
    """Top-k per user row from the candidates' fused scores (-1 pads)."""
    scores = np.full(scored.candidates.items.shape, -np.inf)
    scores[scored.candidates.items >= 0] = scored.fused(alpha)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(scored.candidates.items, order, axis=1)
    return np.where(np.isfinite(np.take_along_axis(scores, order, axis=1)), top, -1)


def diversity_sweep(model: TwoStage, prepared: Prepared) -> list[dict[str, float]]:
    """MMR by category over the ranker's candidates: NDCG@10 (task all) vs intra-list diversity."""
    catalog = prepared.data.catalog
    if catalog is None or not (catalog.category >= 0).any():
        return []
    scored = model.score_candidates(prepared.data.rows(prepared.users))
    scores = np.full(scored.candidates.items.shape, -np.inf)
    scores[scored.candidates.items >= 0] = scored.fused(model.alpha_)
    items = np.where(np.isfinite(scores), scored.candidates.items, -1)
    out = []
    for lam in LAMBDAS:
        top, _ = mmr(items, np.where(np.isfinite(scores), scores, 0.0), 10, lam, category=catalog.category)
        out.append(
            {
                "lambda": lam,
                "ndcg@10": float(metrics.ndcg(top, prepared.truth, 10).mean()),
                "diversity@10": metrics.intra_list_diversity(top, catalog.category),
            }
        )
    return out


def split_for(name: str, spec: Dataset, max_users: int | None) -> tuple[dict[str, Any], Prepared]:
    """The dataset's best single model (from the quality benchmark) and its split, prepared with that model's
    interaction weights and decay: what every comparison here starts from."""
    best = best_single(name)
    events, catalog = load(name, spec)
    config = EvalConfig(
        split=spec.split,
        tasks=spec.tasks,
        weights=best["weights"],
        half_life_days=best["half_life_days"],
        max_test_users=max_users or spec.max_test_users,
    )
    return best, prepare(events, config, catalog)


def compare_dataset(name: str, spec: Dataset, max_users: int | None, head: str) -> dict[str, Any]:
    """Best single model vs the two-stage ranker on one shared dataset."""
    started = time.perf_counter()
    best, prepared = split_for(name, spec, max_users)
    print(f"[{name}] best single model: {best['name']}", file=sys.stderr)
    single = evaluate_model(prepared, best["name"], build_model(best["name"], best["params"]))
    model = TwoStage(ranker_config(spec.split, best, head))
    print(f"[{name}] two-stage ranker", file=sys.stderr)
    two = evaluate_model(prepared, "two_stage", model)
    compare([single, two])
    return {
        "dataset": name,
        "split": prepared.split.description,
        "primary_task": str(spec.primary),
        "models": {r.name: summarise(r) for r in (single, two)},
        "single": best["name"],
        "heads_validation": model.heads_report_,
        "heads_test_window": test_window_heads(model, prepared),
        "training": {k: v for k, v in model.training_.items() if k != "feature_names"},
        "alpha": model.alpha_,
        "head": model.head_,
        "rank_by": model.rank_by_,
        "diversity": diversity_sweep(model, prepared),
        "seconds": round(time.perf_counter() - started, 1),
    }


def compare_objectives(name: str, spec: Dataset, max_users: int | None, objectives: list[str]) -> dict[str, Any]:
    """The two-stage ranker once per LightGBM objective on one dataset: same split, sources and test users."""
    started = time.perf_counter()
    best, prepared = split_for(name, spec, max_users)
    results, fitted = [], {}
    for objective in objectives:
        print(f"[{name}] two-stage ranker, objective {objective}", file=sys.stderr)
        model = TwoStage(ranker_config(spec.split, best, "lightgbm", objective))
        results.append(evaluate_model(prepared, objective, model))
        fitted[objective] = model
    compare(results)
    return {
        "dataset": name,
        "split": prepared.split.description,
        "primary_task": str(spec.primary),
        "objectives": {
            r.name: {
                **summarise(r),
                "validation": fitted[r.name].heads_report_.get("objective", {}),
                "heads_validation": fitted[r.name].heads_report_.get("lightgbm", {}),
                "heads_test_window": test_window_heads(fitted[r.name], prepared),
                "used": fitted[r.name].training_["objective"],
                "trees": {
                    head: booster.best_iteration or booster.num_trees()
                    for head, booster in fitted[r.name].boosted_.boosters_.items()
                },
                "alpha": fitted[r.name].alpha_,
                "rank_by": fitted[r.name].rank_by_,
                "training": {k: v for k, v in fitted[r.name].training_.items() if k != "feature_names"},
            }
            for r in results
        },
        "seconds": round(time.perf_counter() - started, 1),
    }


def objective_markdown(reports: list[dict[str, Any]]) -> str:
    """The tables of ranking-objective.md."""
    commands = "\n".join(f"- `{c}`" for c in dict.fromkeys(r["command"] for r in reports))
    lines = [
        "# LightGBM heads: binary classifiers vs lambdarank rankers (issue 24, item 5)\n",
        f"Commands (each dataset's report is cached and kept until its next run):\n{commands}\n",
        "Per dataset the two-stage ranker is fitted once per `boost.objective` on the same split, sources,",
        "interaction weights and test users as `ranking.md` (alpha tuned on validation users, no value term).",
        "`binary`: one classifier per head; `lambdarank`: one ranker per head over each user's candidates,",
        "Platt-scaled on held-out users; `auto`: fits both and keeps lambdarank only if its blend ranks the",
        "validation users' targets better than binary's by more than two standard errors of the per-user",
        "difference (`SURE` in `shopsense/ranking/ranker.py`), else binary. p: paired t-test on per-user",
        "NDCG@10 against the best objective of that task. fit s: the whole two-stage fit (candidate sources,",
        "features, heads, refit) in seconds, on a 2-core machine shared with other jobs (load average 5-9",
        "during these runs): compare them only roughly. `--objectives` does not run the synthetic funnel.\n",
        "| dataset | task | objective | used | NDCG@10 [95% CI] | p vs best | Recall@20 | alpha | ranked by | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        for task in next(iter(r["objectives"].values()))["tasks"]:
            for objective, o in r["objectives"].items():
                t = o["tasks"][task]
                lines.append(
                    f"| {r['dataset']} | {task}{' (primary)' if task == r['primary_task'] else ''} | {objective} | "
                    f"{o['used']} | {t['ndcg@10']:.4f} [{t['ci95_ndcg@10'][0]:.4f}, {t['ci95_ndcg@10'][1]:.4f}] | "
                    f"{_p(t['p_vs_best'])} | {t['recall@20']:.4f} | "
                    f"{o['alpha']} | {o['rank_by'] or 'heads'} | {o['fit_seconds']:,.0f} |"
                )
    same = [
        r["dataset"]
        for r in reports
        if all(v["attention"] == v["purchase"] for v in (o["heads_validation"] for o in r["objectives"].values()))
    ]
    if same:
        lines.append(
            f"\nOn {', '.join(same)} every event is a target event, so the attention and purchase labels coincide"
            " and the two heads are one model twice: these rows compare the objectives on one head.\n"
        )
    lines += [
        "\n## Does validation predict the test?\n",
        "Lambdarank minus binary, primary task: on the validation users (what `auto` decides on) and on the",
        "test users (what it should have decided on).\n",
        "| dataset | validation gain [2 SE] | test gain | test p | auto kept | best on test |",
        "|---|---|---|---|---|---|",
    ]
    for r in reports:
        runs, task = r["objectives"], r["primary_task"]
        both = next((o["validation"] for o in runs.values() if len(o["validation"]) > 2), None)
        if both is None or not {"binary", "lambdarank"} <= set(runs):
            continue
        gain = both["lambdarank"]["ranked_ndcg@10"] - both["binary"]["ranked_ndcg@10"]
        a, b = runs["binary"]["tasks"][task], runs["lambdarank"]["tasks"][task]
        p = a["p_vs_best"] if b["p_vs_best"] is None else b["p_vs_best"]
        lines.append(
            f"| {r['dataset']} | {gain:+.4f} [{2 * both['lambdarank']['gain_se']:.4f}] | "
            f"{b['ndcg@10'] - a['ndcg@10']:+.4f} | {_p(p)} | "
            f"{both['chosen']} | {'lambdarank' if b['ndcg@10'] > a['ndcg@10'] else 'binary'} |"
        )
    lines += [
        "\n## Validation (users held out of the label window): what `auto` chose on\n",
        "| dataset | objective fitted | attention NDCG@10 | purchase NDCG@10 | ranked NDCG@10 (blend) | alpha |"
        " gain vs binary (2 SE needed) | chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        runs = list(r["objectives"].values())
        auto = [o for o in runs if len(o["validation"]) > 2]  # fitted both: its report alone has both
        for o in auto or runs:
            for fitted, v in o["validation"].items():
                if fitted == "chosen":
                    continue
                base = o["validation"].get("binary", {}).get("ranked_ndcg@10")
                gain = f"{v['ranked_ndcg@10'] - base:+.4f} ({2 * v['gain_se']:.4f})" if "gain_se" in v and base else "-"
                lines.append(
                    f"| {r['dataset']} | {fitted} | {v['attention_ndcg@10']:.4f} | {v['purchase_ndcg@10']:.4f} | "
                    f"{v['ranked_ndcg@10']:.4f} | {v.get('alpha', '-')} | {gain} | "
                    f"{'✓' if auto and o['validation']['chosen'] == fitted else ''} |"
                )
    lines += [
        "\n## Heads' probabilities on the test window (a lambdarank head's after its Platt map)\n",
        "| dataset | objective | head | trees | validation AUC / log-loss | test-window AUC | test-window log-loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        for objective, o in r["objectives"].items():
            for head in HEADS:
                v, t = o["heads_validation"][head], o["heads_test_window"][head]
                lines.append(
                    f"| {r['dataset']} | {objective} | {head} | {o.get('trees', {}).get(head, '-')} | "
                    f"{v['auc']:.3f} / {v['logloss']:.4f} | {t['auc']:.3f} | {t['logloss']:.4f} |"
                )
    return "\n".join(lines) + "\n"


def _p(value: float | None) -> str:
    """A paired test's p-value as a table shows it: 'best' for the reference itself."""
    if value is None:
        return "best"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def summarise(result: ModelResult) -> dict[str, Any]:
    """Per-task NDCG@10 / Recall@20 with CI and paired p-value, plus cost and the cold-start slice."""
    return {
        "fit_seconds": round(result.fit_seconds, 1),
        "peak_mb": round(result.peak_mb, 1),
        "tasks": {
            str(task): {
                "ndcg@10": round(value.metrics["ndcg@10"], 4),
                "recall@20": round(value.metrics["recall@20"], 4),
                "ci95_ndcg@10": [round(v, 4) for v in value.ci95_ndcg10],
                "p_vs_best": None if value.p_vs_best is None else round(value.p_vs_best, 4),
                "users": value.users,
            }
            for task, value in result.tasks.items()
        },
        "cold_start": {k: round(v, 4) for k, v in result.cold.items() if k in ("ndcg@10", "recall@20")},
    }


def synthetic(args: argparse.Namespace) -> dict[str, Any]:
    """The alpha sweep on the synthetic funnel: attention-NDCG, purchase-NDCG and revenue@10 per alpha."""
    started = time.perf_counter()
    folder = WORK.parent / "ranking" / "synthetic"
    if not (folder / "events.parquet").exists():
        generate(SYNTHETIC, folder)
    events, catalog = pq.read_table(folder / "events.parquet"), pq.read_table(folder / "items.parquet")
    purchase = prepare(events, EvalConfig(split=SYNTHETIC_SPLIT, max_test_users=args.max_users), catalog)
    attention = prepare(
        events,
        EvalConfig(split=SYNTHETIC_SPLIT.model_copy(update={"target_types": ATTENTION}), max_test_users=args.max_users),
        catalog,
    )
    # The strongest of four single models by test NDCG: a choice that can only favour the baseline.
    single = max(
        (evaluate_model(purchase, name, build_model(name)) for name in ("item_knn", "als", "ease", "hybrid")),
        key=lambda result: result.tasks[Task.ALL].metrics["ndcg@10"],
    )
    best_name = single.name
    model = TwoStage(
        RankerConfig(fusion={"alpha": 0.0, "value": "none"}, tune_alpha=True, head=args.head)  # type: ignore[arg-type]
    )
    two = evaluate_model(purchase, "two_stage", model)
    compare([single, two])
    sweep = alpha_sweep(model, purchase, attention, catalog)
    return {
        "dataset": "synthetic",
        "split": purchase.split.description,
        "generator": SYNTHETIC.model_dump(),
        "primary_task": "all",
        "models": {r.name: summarise(r) for r in (single, two)},
        "single": best_name,
        "heads_validation": model.heads_report_,
        "heads_test_window": test_window_heads(model, purchase),
        "training": {k: v for k, v in model.training_.items() if k != "feature_names"},
        "alpha": model.alpha_,
        "head": model.head_,
        "rank_by": model.rank_by_,
        "diversity": diversity_sweep(model, purchase),
        "alpha_sweep": sweep,
        "seconds": round(time.perf_counter() - started, 1),
    }


def alpha_sweep(model: TwoStage, purchase: Prepared, attention: Prepared, catalog: pa.Table) -> list[dict[str, float]]:
    """Rank the union of both test populations once per alpha (value = price^0.5) and score each truth."""
    users = np.union1d(purchase.users, attention.users)
    scored = model.score_candidates(purchase.data.rows(users))
    scored = Scored(scored.candidates, scored.frame, scored.probabilities, price_value(purchase, scored))
    n_items = purchase.data.matrix.shape[1]
    price = np.nan_to_num(purchase.data.catalog.prices() if purchase.data.catalog else np.zeros(n_items))
    rows_p = np.searchsorted(users, purchase.users)
    rows_a = np.searchsorted(users, attention.users)
    out = []
    for alpha in ALPHAS:
        top = lists(scored, len(users), 10, alpha)
        hit = metrics.hits(top[rows_p], purchase.truth)
        revenue = (hit & (top[rows_p] >= 0)) * price[np.maximum(top[rows_p], 0)]
        out.append(
            {
                "alpha": alpha,
                "attention_ndcg@10": float(metrics.ndcg(top[rows_a], attention.truth, 10).mean()),
                "purchase_ndcg@10": float(metrics.ndcg(top[rows_p], purchase.truth, 10).mean()),
                "revenue@10": float(revenue.sum(axis=1).mean()),
            }
        )
    return out


def price_value(prepared: Prepared, scored: Scored) -> np.ndarray:
    """The sweep blends with value = (price / median)^0.5, the default pipeline's value term."""
    from shopsense.ranking.fusion import FusionConfig, item_value

    return item_value(prepared.data.catalog, prepared.data.matrix.shape[1], FusionConfig())[scored.frame.items]


def plots(reports: list[dict[str, Any]], folder: Path) -> list[Path]:
    """ranking.png: the alpha sweep's trade-off; ranking-compare.png: pipeline vs single model per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    sweep = next((r["alpha_sweep"] for r in reports if r.get("alpha_sweep")), None)
    if sweep:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        x = [p["attention_ndcg@10"] for p in sweep]
        y = [p["purchase_ndcg@10"] for p in sweep]
        points = axes[0].scatter(x, y, c=[p["revenue@10"] for p in sweep], cmap="viridis", s=60)
        axes[0].plot(x, y, color="grey", lw=0.8)
        for p in sweep:
            axes[0].annotate(f"alpha={p['alpha']:.1f}", (p["attention_ndcg@10"], p["purchase_ndcg@10"]), fontsize=7)
        axes[0].set(xlabel="attention NDCG@10", ylabel="purchase NDCG@10", title="alpha sweep (synthetic funnel)")
        fig.colorbar(points, ax=axes[0], label="revenue@10 per user")
        axes[1].plot([p["alpha"] for p in sweep], [p["revenue@10"] for p in sweep], marker="o")
        axes[1].set(xlabel="alpha", ylabel="revenue@10 per user", title="revenue of the top 10 by alpha")
        fig.tight_layout()
        paths.append(folder / "ranking.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(reports)), 4))
    names = [r["dataset"] for r in reports]
    for offset, key in ((-0.2, "single"), (0.2, "two_stage")):
        values, errors = [], []
        for r in reports:
            model = r["models"][r["single"] if key == "single" else "two_stage"]["tasks"][r["primary_task"]]
            values.append(model["ndcg@10"])
            errors.append([model["ndcg@10"] - model["ci95_ndcg@10"][0], model["ci95_ndcg@10"][1] - model["ndcg@10"]])
        label = "best single model" if key == "single" else "two-stage pipeline"
        ax.bar(np.arange(len(names)) + offset, values, 0.4, yerr=np.array(errors).T, label=label, capsize=3)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set(ylabel="NDCG@10 (primary task, 95% CI)", title="two-stage pipeline vs the best single model")
    ax.legend()
    fig.tight_layout()
    paths.append(folder / "ranking-compare.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def ranked_by(report: dict[str, Any]) -> str:
    """What ordered the candidates: the heads, or one source with the heads breaking its ties (and why)."""
    orders = report["heads_validation"].get("purchase_ndcg_by_order")
    if not orders:
        return "heads (no source check)"
    chosen = report.get("rank_by")
    detail = ", ".join(f"{name} {value:.3f}" for name, value in orders.items())
    return f"{'source ' + chosen if chosen else 'heads'} (validation NDCG@10: {detail})"


def markdown(reports: list[dict[str, Any]]) -> str:
    """The tables of ranking.md."""
    commands = "\n".join(f"- `{c}`" for c in dict.fromkeys(r["command"] for r in reports))
    lines = [
        "# Two-stage ranking: pipeline vs the best single model\n",
        f"Commands (each dataset's report is cached and kept until its next run):\n{commands}\n",
        "Per-dataset seconds below. The single model is the best shopsense model of",
        "`benchmarks/results/quality.md` on that dataset, refitted here on the same split, weights and decay;",
        "the pipeline ranks without a value term, with the alpha that ranked purchases best on its own",
        "validation users",
        "(never the test period; shown per dataset). The heads learn from labels cut inside the training",
        "data the way the split cuts the test (time window, each user's last target events, or a random",
        "share of pairs). Where one candidate source alone ordered the validation users' targets better",
        'than the heads, the pipeline ranks by that source and the heads break its ties ("ranked by").',
        "p: paired t-test on per-user NDCG@10.\n",
        "| dataset | task | best single model | NDCG@10 [95% CI] | two-stage NDCG@10 [95% CI] | change | p |"
        " Recall@20 single / two-stage | alpha | head | ranked by | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        single, two = r["models"][r["single"]]["tasks"], r["models"]["two_stage"]["tasks"]
        for task in two:
            a, b = single[task], two[task]
            p = b["p_vs_best"] if b["p_vs_best"] is not None else a["p_vs_best"]
            change = b["ndcg@10"] / a["ndcg@10"] - 1 if a["ndcg@10"] else float("nan")
            lines.append(
                f"| {r['dataset']} | {task}{' (primary)' if task == r['primary_task'] else ''} | {r['single']} | "
                f"{a['ndcg@10']:.4f} [{a['ci95_ndcg@10'][0]:.4f}, {a['ci95_ndcg@10'][1]:.4f}] | "
                f"{b['ndcg@10']:.4f} [{b['ci95_ndcg@10'][0]:.4f}, {b['ci95_ndcg@10'][1]:.4f}] | {change:+.1%} | "
                f"{p if p is not None else '-'} | {a['recall@20']:.4f} / {b['recall@20']:.4f} | "
                f"{r.get('alpha', '-')} | {r.get('head', 'lightgbm')} | {ranked_by(r)} | "
                f"{r['seconds']:,.0f} |"
            )
    lines += [
        "\n![pipeline vs single model](ranking-compare.png)\n",
        "## Heads: validation (users held out of the label window) and the test window\n",
    ]
    lines += [
        "| dataset | head | validation AUC | validation log-loss | DIN validation AUC / log-loss |"
        " test-window AUC | test-window log-loss | test positives |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        for head in HEADS:
            v, t = r["heads_validation"]["lightgbm"][head], r["heads_test_window"][head]
            din = r["heads_validation"].get("din", {}).get(head)
            din_text = f"{din['auc']:.3f} / {din['logloss']:.4f}" if din else "not run"
            lines.append(
                f"| {r['dataset']} | {head} | {v['auc']:.3f} | {v['logloss']:.4f} | {din_text} | {t['auc']:.3f} | "
                f"{t['logloss']:.4f} | {t['positives']:.2%} |"
            )
    sweep = next((r for r in reports if r.get("alpha_sweep")), None)
    if sweep:
        lines += ["\n## Alpha sweep (synthetic funnel; value = (price/median)^0.5)\n", "![alpha sweep](ranking.png)\n"]
        lines += ["| alpha | attention NDCG@10 | purchase NDCG@10 | revenue@10 per user |", "|---|---|---|---|"]
        lines += [
            f"| {p['alpha']:.1f} | {p['attention_ndcg@10']:.4f} | {p['purchase_ndcg@10']:.4f} | {p['revenue@10']:.2f} |"
            for p in sweep["alpha_sweep"]
        ]
    lines += [
        "\n## Diversity (MMR by category) vs accuracy\n",
        "| dataset | lambda | NDCG@10 | intra-list diversity@10 |",
        "|---|---|---|---|",
    ]
    for r in reports:
        lines += [
            f"| {r['dataset']} | {d['lambda']:.1f} | {d['ndcg@10']:.4f} | {d['diversity@10']:.3f} |"
            for d in r["diversity"]
        ]
    lines += [
        "\n## Cold-start users (no history before the cut)\n",
        "| dataset | model | NDCG@10 | Recall@20 |",
        "|---|---|---|---|",
    ]
    for r in reports:
        for name, model in r["models"].items():
            if model["cold_start"]:
                lines.append(
                    f"| {r['dataset']} | {name} | {model['cold_start']['ndcg@10']:.4f} |"
                    f" {model['cold_start']['recall@20']:.4f} |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--datasets", nargs="*", choices=["synthetic", *sorted(DATASETS)], help="default: all (none with --store)"
    )
    parser.add_argument(
        "--store",
        action="append",
        default=[],
        metavar="[NAME=]DATA_DIR_OR_URL",
        help="an imported store as one more dataset (repeatable; run benchmarks/quality.py --store on it first)",
    )
    parser.add_argument("--store-target", default="purchase", help="--store: comma-separated event types to predict")
    parser.add_argument("--max-users", type=int, help="evaluate a seeded sample of test users per dataset")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="rewrite the results from the cached reports")
    parser.add_argument(
        "--head",
        choices=["lightgbm", "din", "auto"],
        default="lightgbm",
        help="auto: both, keep the better on validation",
    )
    parser.add_argument(
        "--objectives",
        nargs="+",
        choices=["binary", "lambdarank", "auto"],
        help="compare these LightGBM objectives instead; writes ranking-objective.md/json (synthetic not run)",
    )
    args = parser.parse_args()
    stores = dict(store_dataset(text, args.store_target) for text in args.store)
    public = args.datasets or ([] if stores else ["synthetic", *DATASETS])
    DATASETS.update(stores)
    if args.objectives:
        objectives_main(args, [n for n in public if n != "synthetic" and n not in stores] + list(stores))
        return
    names = [] if args.report_only else [n for n in public if n not in stores] + list(stores)
    cache = WORK.parent / "ranking" / "reports"
    cache.mkdir(parents=True, exist_ok=True)
    command = ".venv/bin/python benchmarks/ranking.py " + " ".join(sys.argv[1:])
    for name in names:
        report = (
            synthetic(args) if name == "synthetic" else compare_dataset(name, DATASETS[name], args.max_users, args.head)
        )
        report["command"] = command
        (cache / f"{name}.json").write_text(json.dumps(report, default=str))
    reports = [
        json.loads((cache / f"{n}.json").read_text())
        for n in ["synthetic", *DATASETS]
        if (cache / f"{n}.json").exists()
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ranking.json").write_text(json.dumps(reports, indent=2, default=str))
    (args.out / "ranking.md").write_text(markdown(reports))
    for path in plots(reports, args.out):
        print(f"wrote {path}", file=sys.stderr)
    print((args.out / "ranking.md").read_text())


def objectives_main(args: argparse.Namespace, datasets: list[str]) -> None:
    """--objectives: one fit per objective per dataset (public and --store), cached per dataset, all written to
    ranking-objective.*."""
    names = [] if args.report_only else datasets
    cache = WORK.parent / "ranking" / "objective-reports"
    cache.mkdir(parents=True, exist_ok=True)
    command = ".venv/bin/python benchmarks/ranking.py " + " ".join(sys.argv[1:])
    for name in names:
        report = compare_objectives(name, DATASETS[name], args.max_users, args.objectives)
        report["command"] = command
        (cache / f"{name}.json").write_text(json.dumps(report, default=str))
    reports = [json.loads((cache / f"{n}.json").read_text()) for n in DATASETS if (cache / f"{n}.json").exists()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ranking-objective.json").write_text(json.dumps(reports, indent=2, default=str))
    (args.out / "ranking-objective.md").write_text(objective_markdown(reports))
    print((args.out / "ranking-objective.md").read_text())


if __name__ == "__main__":
    main()
