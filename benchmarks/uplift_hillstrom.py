"""Uplift benchmark: who is persuadable by an e-mail, on Kevin Hillstrom's randomised MineThatData campaign.

Per arm (Womens or Mens e-mail vs no e-mail) and target (``visit``, ``conversion``): a 70/30 split
stratified by arm and outcome; each approach of ``shopsense.marketing.uplift`` picks its LightGBM
hyper-parameters by Qini AUC on a 25% validation part of TRAIN, is refitted on all of TRAIN and is
scored once on TEST: Qini AUC, uplift AUC, uplift@30% (sklift ``uplift_at_k``, both strategies) and
the extra visits/conversions of e-mailing the top 30% versus 30% picked at random. Repeated for
``--seeds`` split seeds (seed 0 is the headline table), because uplift metrics on a few thousand
test rows are noisy.

The anchor is scikit-uplift's own pipeline tutorial (``notebooks/pipeline_usage_EN.ipynb``):
ClassTransformation + XGBoost on Womens vs control, target ``visit``, a 50/50 ``train_test_split``
with ``random_state=42``, uplift@30% = 0.0660 with ``strategy="overall"``. That exact split is
reproduced here too, so the comparison is like for like.

    .venv/bin/python benchmarks/uplift_hillstrom.py [--seeds 5]

Reads ../shared/datasets/hillstrom/hillstrom.csv.gz; writes benchmarks/results/uplift.md,
uplift.json and uplift-qini.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklift.metrics import qini_curve  # noqa: E402
from tqdm import tqdm  # noqa: E402

from shopsense.marketing.uplift import (  # noqa: E402
    APPROACHES,
    Approach,
    UpliftConfig,
    UpliftModel,
    evaluate_uplift,
    policy_value,
)

DATA = ROOT.parent / "shared" / "datasets" / "hillstrom" / "hillstrom.csv.gz"
RESULTS = ROOT / "benchmarks" / "results"
ARMS = {"womens": "Womens E-Mail", "mens": "Mens E-Mail"}
TARGETS = ("visit", "conversion")
FRACTION = 0.3
TUTORIAL_UPLIFT_AT_30 = 0.0660
OUTCOMES = ("visit", "conversion", "spend")
# Three capacities, from heavily smoothed to flexible; validation Qini picks one per approach and split.
GRID: tuple[dict[str, Any], ...] = (
    {"n_estimators": 100, "learning_rate": 0.05, "num_leaves": 4, "min_child_samples": 400},
    {"n_estimators": 100, "learning_rate": 0.05, "num_leaves": 7, "min_child_samples": 200},
    {"n_estimators": 200, "learning_rate": 0.03, "num_leaves": 15, "min_child_samples": 100},
)
METRICS = ("qini_auc", "uplift_auc", "uplift_at_k", "uplift_at_k_overall", "random_uplift", "extra_per_10k")


def load() -> pd.DataFrame:
    """The 64,000 customers, one row each; features are every column but the arm and the outcomes."""
    return pd.read_csv(DATA)


def experiment(frame: pd.DataFrame, arm: str, target: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Features, treatment flag and outcome for one e-mail arm against the no-e-mail control."""
    rows = frame[frame["segment"].isin([ARMS[arm], "No E-Mail"])].reset_index(drop=True)
    t = (rows["segment"] == ARMS[arm]).to_numpy(dtype=np.int8)
    return rows.drop(columns=["segment", *OUTCOMES]), t, rows[target].to_numpy(dtype=np.int8)


def split(t: np.ndarray, y: np.ndarray, seed: int, test_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Row indices, stratified so both parts keep the arm sizes and each arm's conversion rate."""
    rows = np.arange(len(t))
    first, second = train_test_split(rows, test_size=test_size, random_state=seed, stratify=2 * t + y)
    return np.sort(first), np.sort(second)


def fit_predict(
    approach: Approach,
    params: dict[str, Any],
    seed: int,
    data: tuple[pd.DataFrame, np.ndarray, np.ndarray],
    train: np.ndarray,
    test: np.ndarray,
) -> np.ndarray:
    """Fit on ``train`` rows, return uplift on ``test`` rows."""
    x, t, y = data
    model = UpliftModel(UpliftConfig(approach=approach, seed=seed, **params))
    return model.fit(x.iloc[train], t[train], y[train]).predict_uplift(x.iloc[test])


def tune(
    approach: Approach, seed: int, data: tuple[pd.DataFrame, np.ndarray, np.ndarray], train: np.ndarray
) -> dict[str, Any]:
    """The grid point with the best Qini AUC on a validation quarter of TRAIN (TEST is never seen)."""
    _, t, y = data
    inner, valid = split(t[train], y[train], seed, test_size=0.25)
    fit_rows, valid_rows = train[inner], train[valid]
    qini = [
        evaluate_uplift(y[valid_rows], t[valid_rows], fit_predict(approach, params, seed, data, fit_rows, valid_rows))[
            "qini_auc"
        ]
        for params in GRID
    ]
    return GRID[int(np.argmax(qini))]


def measure(y: np.ndarray, t: np.ndarray, uplift: np.ndarray) -> dict[str, float]:
    """Test metrics, plus extra outcomes per 10,000 customers from e-mailing the top 30% instead of a random 30%."""
    metrics = evaluate_uplift(y, t, uplift, FRACTION)
    value = policy_value(y, t, uplift, FRACTION)
    metrics["extra_per_10k"] = (value.incremental - value.random_incremental) / len(y) * 10_000
    return metrics


def run(seeds: int = 5) -> dict[str, Any]:
    """Every approach on every arm and target, over ``seeds`` split seeds; seed 0 also gives Qini curves."""
    start = time.perf_counter()
    frame = load()
    cells = [(arm, target, seed) for arm in ARMS for target in TARGETS for seed in range(seeds)]
    per_seed: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    curves: dict[str, dict[str, Any]] = {}
    for arm, target, seed in tqdm(cells, desc="uplift", unit="split"):
        data = experiment(frame, arm, target)
        _, t, y = data
        train, test = split(t, y, seed, test_size=0.3)
        for approach in APPROACHES:
            params = tune(approach, seed, data, train)
            uplift = fit_predict(approach, params, seed, data, train, test)
            result = {"seed": seed, "params": params, **measure(y[test], t[test], uplift)}
            per_seed.setdefault(arm, {}).setdefault(target, {}).setdefault(approach, []).append(result)
            if seed == 0 and target == "visit":
                curves.setdefault(arm, {})[approach] = _qini_points(y[test], t[test], uplift)
    return {
        "data": {arm: _describe(frame, arm) for arm in ARMS},
        "protocol": {
            "test_size": 0.3,
            "validation_size_of_train": 0.25,
            "fraction": FRACTION,
            "grid": list(GRID),
            "seeds": seeds,
        },
        "per_seed": per_seed,
        "summary": {
            arm: {
                target: {a: _summary(rows) for a, rows in by_approach.items()} for target, by_approach in by_t.items()
            }
            for arm, by_t in per_seed.items()
        },
        "tutorial_split": _tutorial_split(frame),
        "curves": curves,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": f"{platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores",
    }


def _describe(frame: pd.DataFrame, arm: str) -> dict[str, Any]:
    """Size and outcome rates of one arm and the control: the sanity check against published figures."""
    rows = frame[frame["segment"].isin([ARMS[arm], "No E-Mail"])]
    treated = rows["segment"] == ARMS[arm]
    out: dict[str, Any] = {"rows": len(rows), "treated": int(treated.sum())}
    for target in TARGETS:
        out[f"{target}_rate"] = {"treated": rows[target][treated].mean(), "control": rows[target][~treated].mean()}
    return out


def _summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation over seeds of each metric."""
    out = {}
    for metric in METRICS:
        values = [row[metric] for row in rows]
        out[metric] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out


def _tutorial_split(frame: pd.DataFrame) -> dict[str, Any]:
    """sklift's tutorial protocol exactly: Womens vs control, visit, 50/50 unstratified split with seed 42."""
    data = experiment(frame, "womens", "visit")
    _, t, y = data
    train, test = (np.sort(part) for part in train_test_split(np.arange(len(t)), test_size=0.5, random_state=42))
    out: dict[str, Any] = {}
    for approach in APPROACHES:
        params = tune(approach, 42, data, train)
        out[approach] = {
            "params": params,
            **measure(y[test], t[test], fit_predict(approach, params, 42, data, train, test)),
        }
    return out


def _qini_points(y: np.ndarray, t: np.ndarray, uplift: np.ndarray, points: int = 101) -> dict[str, list[float]]:
    """The Qini curve (extra outcomes vs people targeted), thinned to ``points`` for plotting and JSON."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        x, q = qini_curve(y, uplift, t)
    keep = np.unique(np.linspace(0, len(x) - 1, points).round().astype(int))
    return {"fraction": (x[keep] / x[-1]).tolist(), "extra": q[keep].tolist()}


def _fmt(cell: dict[str, float], scale: float = 1.0, digits: int = 4) -> str:
    return f"{cell['mean'] * scale:.{digits}f} +/- {cell['std'] * scale:.{digits}f}"


def write(report: dict[str, Any], command: str) -> None:
    """uplift.md (tables and notes), uplift.json (everything but the curves' bulk) and uplift-qini.png."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "uplift.json").write_text(json.dumps({**report, "command": command}, indent=1) + "\n")
    _plot(report["curves"])
    (RESULTS / "uplift.md").write_text(_markdown(report, command))


def _markdown(report: dict[str, Any], command: str) -> str:
    seeds = report["protocol"]["seeds"]
    lines = [
        "# Uplift benchmark: Hillstrom e-mail experiment",
        "",
        f"Command: `{command}` - {report['machine']}, {report['seconds']} s.",
        "",
        "Data: 64,000 customers randomly assigned to a Womens e-mail, a Mens e-mail or no e-mail (Hillstrom 2008).",
        "Each arm is compared with the no-e-mail control. Split: 70/30 stratified by arm and outcome; each approach",
        "picks its LightGBM capacity (3-point grid) by Qini AUC on a validation quarter of TRAIN, is refitted on all",
        "of TRAIN and scored once on TEST. `uplift@30%` is sklift `uplift_at_k(k=0.3)`: `by_group` takes the top 30%",
        "of each arm, `overall` the top 30% of everyone (what `target()` contacts). `random` is the average effect,",
        "i.e. what e-mailing 30% at random earns per contact. `extra/10k` = extra visits (or conversions) per 10,000",
        "customers from e-mailing the model's top 30% instead of a random 30% (`policy_value`).",
        "",
    ]
    first = {
        arm: {target: {a: rows[0] for a, rows in by_a.items()} for target, by_a in by_t.items()}
        for arm, by_t in report["per_seed"].items()
    }
    for arm in ARMS:
        for target in TARGETS:
            d = report["data"][arm][f"{target}_rate"]
            lines += [
                f"## {arm.capitalize()} e-mail vs no e-mail, target `{target}`",
                "",
                f"{target} rate: treated {d['treated']:.2%}, control {d['control']:.2%}.",
                "",
                f"| approach | Qini AUC (seed 0) | uplift AUC | uplift@30% by_group | overall | random | extra/10k |"
                f" Qini AUC, {seeds} seeds | uplift@30% by_group, {seeds} seeds | extra/10k, {seeds} seeds |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for approach in APPROACHES:
                r = first[arm][target][approach]
                s = report["summary"][arm][target][approach]
                lines.append(
                    f"| {approach} | {r['qini_auc']:.4f} | {r['uplift_auc']:.4f} | {r['uplift_at_k']:.4f} |"
                    f" {r['uplift_at_k_overall']:.4f} | {r['random_uplift']:.4f} | {r['extra_per_10k']:.1f} |"
                    f" {_fmt(s['qini_auc'])} | {_fmt(s['uplift_at_k'])} | {_fmt(s['extra_per_10k'], digits=1)} |"
                )
            lines.append("")
    lines += [
        "## Against scikit-uplift's tutorial, on its own split",
        "",
        "Womens vs control, target `visit`, `train_test_split(test_size=0.5, random_state=42)` unstratified, as in",
        f"sklift's `pipeline_usage_EN.ipynb`, which reports uplift@30% = {TUTORIAL_UPLIFT_AT_30:.4f}",
        "(`strategy='overall'`, ClassTransformation + XGBoost max_depth=2 + CatBoostEncoder).",
        "Tuning here again uses only the train half.",
        "",
        "| approach | uplift@30% overall | by_group | random | Qini AUC | chosen params |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for approach, r in report["tutorial_split"].items():
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        lines.append(
            f"| {approach} | {r['uplift_at_k_overall']:.4f} | {r['uplift_at_k']:.4f} | {r['random_uplift']:.4f} |"
            f" {r['qini_auc']:.4f} | {params} |"
        )
    lines += ["", "![Qini curves, seed 0, target visit](uplift-qini.png)", "", "## Notes", "", *_notes(report), ""]
    return "\n".join(lines)


def _notes(report: dict[str, Any]) -> list[str]:
    """Conclusions computed from the numbers, so a rerun can never leave stale claims behind."""
    tutorial = report["tutorial_split"]
    beaten = [a for a in tutorial if tutorial[a]["uplift_at_k_overall"] > TUTORIAL_UPLIFT_AT_30]
    best = max(tutorial, key=lambda a: tutorial[a]["uplift_at_k_overall"])
    notes = [
        f"- Tutorial split: {len(beaten)} of {len(tutorial)} approaches exceed sklift's 0.0660"
        f" ({', '.join(beaten) or 'none'}); best {best} at {tutorial[best]['uplift_at_k_overall']:.4f}."
        f" uplift@30% includes the average effect ({tutorial[best]['random_uplift']:.4f} on that split), which any"
        f" 30% earns: the tutorial's model adds {TUTORIAL_UPLIFT_AT_30 - tutorial[best]['random_uplift']:.4f} over"
        f" random, {best} {tutorial[best]['uplift_at_k_overall'] - tutorial[best]['random_uplift']:.4f}. One split"
        " of ~21k test rows: differences of 0.005 are within the seed-to-seed spread below."
    ]
    for arm in ARMS:
        for target in TARGETS:
            summary = report["summary"][arm][target]
            extra = {a: summary[a]["extra_per_10k"] for a in APPROACHES}
            sure = [a for a in APPROACHES if extra[a]["mean"] - extra[a]["std"] > 0]
            top = max(APPROACHES, key=lambda a: summary[a]["uplift_at_k"]["mean"])
            low = min(APPROACHES, key=lambda a: summary[a]["uplift_at_k"]["mean"])
            gap = summary[top]["uplift_at_k"]["mean"] - summary[low]["uplift_at_k"]["mean"]
            spread = statistics.fmean(summary[a]["uplift_at_k"]["std"] for a in APPROACHES)
            notes.append(
                f"- {arm}/{target}: beats random targeting by more than one std over seeds: {', '.join(sure) or 'none'}"
                f" (extra/10k {', '.join(f'{a} {_fmt(extra[a], digits=1)}' for a in APPROACHES)}). Best mean"
                f" uplift@30% {top}, worst {low}: gap {gap:.4f} vs a typical seed std of {spread:.4f}."
            )
    notes += [
        "- `conversion` is rare (0.6-1.3%): a 30% test part holds only about 35-80 conversions per arm, so its"
        " metrics are mostly noise, and so is the validation Qini that picks the hyper-parameters.",
        "- The brief said `strategy='by_group'` \"as in the tutorial\"; the tutorial's notebook calls"
        " `strategy='overall'`. Both are reported; with arms of equal size they differ little.",
        "- Hyper-parameters are chosen per approach and per split on TRAIN only (validation quarter); TEST rows"
        " are scored once, after the choice. LightGBM runs single-threaded with a fixed seed: reruns are identical.",
    ]
    return notes


def _plot(curves: dict[str, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.5), squeeze=False)
    for ax, (arm, by_approach) in zip(axes[0], curves.items(), strict=True):
        for approach, curve in by_approach.items():
            ax.plot(curve["fraction"], curve["extra"], label=approach)
        end = next(iter(by_approach.values()))["extra"][-1]
        ax.plot([0, 1], [0, end], "k--", label="random")
        ax.set_title(f"{arm.capitalize()} e-mail vs none, visit (test, seed 0)")
        ax.set_xlabel("fraction of customers e-mailed (by predicted uplift)")
        ax.set_ylabel("extra visits (Qini)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "uplift-qini.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="split seeds to average over (seed 0 = headline)")
    args = parser.parse_args()
    report = run(seeds=args.seeds)
    write(report, " ".join([".venv/bin/python", "benchmarks/uplift_hillstrom.py", *sys.argv[1:]]))
    print((RESULTS / "uplift.md").read_text())


if __name__ == "__main__":
    main()
