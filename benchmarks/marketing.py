"""Marketing benchmark: uplift targeting, CLV forecasts and simulated A/B tests, gathered in one report.

Each part is measured where the right answer is known:

1. Uplift on Kevin Hillstrom's randomised e-mail campaign: ``benchmarks/uplift_hillstrom.run()`` (about
   3 minutes on 2 cores; rewrites ``uplift.*``), or with ``--reuse`` its cached ``results/uplift.json``.
2. CLV on Online Retail's 6-month and 90-day holdouts: ``benchmarks/clv_online_retail.run()`` (rewrites
   ``clv.*``).
3. The A/B read-out on simulated experiments whose true effect is set: 1,000 experiments per design through
   ``shopsense.marketing.simulation`` (the read-out's own vectorised statistics). A 95% interval must
   contain the truth in 95 +/- 1.5% of experiments, a test with no effect must fire in about 5% of them,
   and with an effect it must fire as often as the power calculator of ``experiments.py`` predicts.
   Designs: n = 10,000 per arm, 5% baseline, +0.5 pp and +0 pp; and the sizes the calculator asks for
   80% power on conversion and on revenue per user. Every rate comes with its binomial (Wilson) 95%
   interval, since 1,000 experiments measure a 5% rate only to about +/- 1.4 pp.

    .venv/bin/python benchmarks/marketing.py [--reuse] [--seeds 5]

Writes ``benchmarks/results/marketing.md``, ``marketing.json`` and ``marketing-ab.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy import optimize  # noqa: E402
from statsmodels.stats.proportion import proportion_confint  # noqa: E402

from benchmarks import clv_online_retail, uplift_hillstrom  # noqa: E402
from shopsense.marketing.experiments import (  # noqa: E402
    METRICS,
    minimum_detectable_effect,
    minimum_detectable_effect_mean,
    sample_size,
    sample_size_mean,
)
from shopsense.marketing.simulation import Coverage, simulate_experiments  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
N_EXPERIMENTS = 1_000
N_PER_ARM = 10_000
BASELINE = 0.05
LIFT = 0.005
ALPHA = 0.05
POWER = 0.8
ORDER_VALUE_MEAN = 50.0
ORDER_VALUE_SIGMA = 1.0
SEED = 20_240_601
COVERAGE_GOAL = (0.935, 0.965)


@dataclass(frozen=True)
class Design:
    """One simulated experiment design: users per arm and the true absolute conversion lift."""

    name: str
    n_per_arm: int
    true_lift_abs: float
    purpose: str


def revenue_std() -> float:
    """Per-user standard deviation of revenue the calculator should be given, from the simulation's data model.

    Revenue per user is conversion (rate p) times lognormal spend S, so Var = p E[S^2] - (p E[S])^2 with
    E[S^2] = E[S]^2 exp(sigma^2). The calculator assumes equal variances; the root mean square of the two
    arms' variances makes its standard error equal Welch's exactly, so a gap between predicted and
    simulated power is the normal approximation on skewed revenue, not a wrong input.
    """
    second_moment = ORDER_VALUE_MEAN**2 * math.exp(ORDER_VALUE_SIGMA**2)
    variances = [p * second_moment - (p * ORDER_VALUE_MEAN) ** 2 for p in (BASELINE, BASELINE + LIFT)]
    return math.sqrt(sum(variances) / 2)


def designs() -> list[Design]:
    """The four designs: the headline effect, no effect, and the calculator's own 80%-power sizes."""
    return [
        Design("effect", N_PER_ARM, LIFT, "coverage and power vs prediction"),
        Design("no effect", N_PER_ARM, 0.0, "coverage and false-positive rate"),
        Design(
            "sized for conversion",
            sample_size(BASELINE, LIFT, ALPHA, POWER),
            LIFT,
            f"n from `sample_size` for {POWER:.0%} power on conversion",
        ),
        Design(
            "sized for revenue",
            sample_size_mean(revenue_std(), LIFT * ORDER_VALUE_MEAN, ALPHA, POWER),
            LIFT,
            f"n from `sample_size_mean` for {POWER:.0%} power on revenue per user",
        ),
    ]


def predicted_rejection(metric: str, n_per_arm: int, true_diff: float) -> float:
    """What the power calculator predicts for the share of significant experiments.

    The calculator answers "what effect is detectable with this power", so the prediction is read
    backwards: the power at which its minimum detectable effect equals the true one. With no effect
    a test rejects at its level, alpha.
    """
    if true_diff == 0:
        return ALPHA
    mde: Callable[[float], float] = (
        (lambda power: minimum_detectable_effect(n_per_arm, BASELINE, ALPHA, power))
        if metric == "conversion"
        else (lambda power: minimum_detectable_effect_mean(n_per_arm, revenue_std(), ALPHA, power))
    )
    return float(optimize.brentq(lambda power: mde(power) - true_diff, ALPHA + 1e-6, 1 - 1e-9))


def wilson(rate: float) -> tuple[float, float]:
    """Binomial 95% interval of a share measured over the simulated experiments."""
    low, high = proportion_confint(round(rate * N_EXPERIMENTS), N_EXPERIMENTS, alpha=0.05, method="wilson")
    return float(low), float(high)


def score(design: Design, coverage: Coverage) -> dict[str, Any]:
    """One metric of one design: coverage and rejection rate with intervals, against their goals."""
    predicted = predicted_rejection(coverage.metric, design.n_per_arm, coverage.true_diff)
    rejection_ci = wilson(coverage.rejection_rate)
    return {
        "true_diff": coverage.true_diff,
        "mean_estimate": coverage.mean_estimate,
        "coverage": coverage.coverage,
        "coverage_ci95": wilson(coverage.coverage),
        "coverage_goal_met": COVERAGE_GOAL[0] <= coverage.coverage <= COVERAGE_GOAL[1],
        "relative_coverage": coverage.relative_coverage,
        "rejection_rate": coverage.rejection_rate,
        "rejection_ci95": rejection_ci,
        "predicted_rejection": predicted,
        "prediction_in_ci": rejection_ci[0] <= predicted <= rejection_ci[1],
    }


def ab_simulation() -> dict[str, Any]:
    """Every design simulated with its own fixed seed, scored per metric."""
    started = time.perf_counter()
    rows = []
    for offset, design in enumerate(designs()):
        result = simulate_experiments(
            N_EXPERIMENTS,
            design.n_per_arm,
            BASELINE,
            design.true_lift_abs,
            SEED + offset,
            alpha=ALPHA,
            order_value_mean=ORDER_VALUE_MEAN,
            order_value_sigma=ORDER_VALUE_SIGMA,
        )
        metrics = {m: score(design, getattr(result, m)) for m in METRICS}
        rows.append({**vars(design), "seed": SEED + offset, "metrics": metrics})
    return {
        "settings": {
            "n_experiments": N_EXPERIMENTS,
            "baseline_rate": BASELINE,
            "alpha": ALPHA,
            "order_value_mean": ORDER_VALUE_MEAN,
            "order_value_sigma": ORDER_VALUE_SIGMA,
            "revenue_std": revenue_std(),
            "coverage_goal": COVERAGE_GOAL,
        },
        "designs": rows,
        "seconds": round(time.perf_counter() - started, 2),
    }


def uplift_part(reuse: bool, seeds: int, command: str) -> dict[str, Any]:
    """The Hillstrom report: rerun (rewriting uplift.*) or, with ``reuse``, read from its cached JSON."""
    cached = RESULTS / "uplift.json"
    if reuse and cached.exists():
        report = json.loads(cached.read_text())
        source = f"reused `results/uplift.json` (made by `{report.get('command', 'unknown')}`), not rerun"
    else:
        report = uplift_hillstrom.run(seeds=seeds)
        uplift_hillstrom.write(report, command)
        report["command"] = command
        source = "run now" + (" (`--reuse` given but no cached uplift.json)" if reuse else "")
    keys = ("command", "machine", "seconds", "protocol", "data", "summary", "tutorial_split")
    return {"source": source, **{k: report[k] for k in keys}}


def clv_part(command: str) -> dict[str, Any]:
    """The Online Retail CLV report, written out as clv.* exactly as its own script does."""
    report = {**clv_online_retail.run(), "command": command}
    (RESULTS / "clv.json").write_text(json.dumps(report, indent=2))
    clv_online_retail.plot(report, RESULTS / "clv.png")
    (RESULTS / "clv.md").write_text(clv_online_retail.markdown(report))
    return report


def plot(ab: dict[str, Any], path: Path) -> None:
    """Coverage, false-positive rate and power, each with its binomial 95% interval, against the goals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(d, m, d["metrics"][m]) for d in ab["designs"] for m in METRICS]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6), gridspec_kw={"width_ratios": [4, 1.4, 3]})
    panels = (
        (axes[0], rows, "coverage", "coverage_ci95", "95% interval coverage"),
        (axes[1], [r for r in rows if r[0]["true_lift_abs"] == 0], "rejection_rate", "rejection_ci95", "FPR"),
        (axes[2], [r for r in rows if r[0]["true_lift_abs"] != 0], "rejection_rate", "rejection_ci95", "power"),
    )
    for ax, chosen, key, ci, title in panels:
        x = np.arange(len(chosen))
        values = np.array([s[key] for _, _, s in chosen])
        bounds = np.array([s[ci] for _, _, s in chosen])
        ax.errorbar(x, values, yerr=np.abs(bounds.T - values), fmt="o", capsize=4, label="simulated (95% CI)")
        labels = [f"{d['name']}: {m.replace('_', ' ')}" for d, m, _ in chosen]
        ax.set_xticks(x, labels, fontsize=8, rotation=30, ha="right")
        ax.set_xlim(-0.5, len(chosen) - 0.5)
        ax.set_title(f"{title} over {N_EXPERIMENTS:,} experiments")
    axes[0].axhspan(*COVERAGE_GOAL, color="green", alpha=0.15, label="goal 95 +/- 1.5%")
    axes[0].axhline(1 - ALPHA, color="green", lw=1)
    axes[1].axhline(ALPHA, color="green", lw=1, label=f"goal {ALPHA:.0%}")
    power_rows = panels[2][1]
    axes[2].scatter(
        np.arange(len(power_rows)),
        [s["predicted_rejection"] for _, _, s in power_rows],
        marker="x",
        s=80,
        color="red",
        label="power calculator",
        zorder=3,
    )
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(value: float, digits: int = 1) -> str:
    return f"{value * 100:.{digits}f}%"


def _mean_std(cell: dict[str, float], digits: int) -> str:
    return f"{cell['mean']:.{digits}f} +/- {cell['std']:.{digits}f}"


def _ci(bounds: tuple[float, float] | list[float]) -> str:
    return f"[{_pct(bounds[0])}, {_pct(bounds[1])}]"


def uplift_markdown(uplift: dict[str, Any]) -> list[str]:
    """Part 1: per arm and target, the best approach and how many beat random targeting."""
    seeds = uplift["protocol"]["seeds"]
    lines = [
        "## 1. Uplift targeting (Hillstrom e-mail campaign)",
        "",
        f"Source: {uplift['source']}; {seeds} split seeds, {uplift['seconds']} s on {uplift['machine']}.",
        "Full tables, protocol and Qini curves: [uplift.md](uplift.md). Mean +/- std over the seeds; `uplift@30%`",
        "is sklift `uplift_at_k` (by_group), `random` the average effect any 30% earns, `extra/10k` the extra",
        "outcomes per 10,000 customers from e-mailing the model's top 30% instead of a random 30%.",
        "",
        "| arm | target | best approach | uplift@30% | random | extra/10k | approaches beating random by > 1 std |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for arm, by_target in uplift["summary"].items():
        for target, by_approach in by_target.items():
            best = max(by_approach, key=lambda a: by_approach[a]["uplift_at_k"]["mean"])
            s = by_approach[best]
            sure = [a for a, m in by_approach.items() if m["extra_per_10k"]["mean"] - m["extra_per_10k"]["std"] > 0]
            lines.append(
                f"| {arm} | {target} | {best} | {_mean_std(s['uplift_at_k'], 4)} |"
                f" {s['random_uplift']['mean']:.4f} | {_mean_std(s['extra_per_10k'], 1)} |"
                f" {', '.join(sure) or 'none'} |"
            )
    tutorial = uplift["tutorial_split"]
    best = max(tutorial, key=lambda a: tutorial[a]["uplift_at_k_overall"])
    lines += [
        "",
        f"On scikit-uplift's own tutorial split (Womens, visit, 50/50, seed 42) the best approach, {best}, reaches"
        f" uplift@30% = {tutorial[best]['uplift_at_k_overall']:.4f} (overall) against the tutorial's"
        f" {uplift_hillstrom.TUTORIAL_UPLIFT_AT_30:.4f}.",
        "",
        "![Qini curves, seed 0, target visit](uplift-qini.png)",
        "",
    ]
    weak = [f"{a}/{t}" for a, by_t in uplift["summary"].items() for t, by_a in by_t.items() if not _any_sure(by_a)]
    if weak:
        lines += [
            f"Not met: on {', '.join(weak)} no approach beats random targeting by more than one std over seeds"
            " (a 30% test part holds only tens of conversions per arm; see the notes in uplift.md).",
            "",
        ]
    return lines


def _any_sure(by_approach: dict[str, Any]) -> bool:
    return any(m["extra_per_10k"]["mean"] - m["extra_per_10k"]["std"] > 0 for m in by_approach.values())


def clv_markdown(clv: dict[str, Any]) -> list[str]:
    """Part 2: BG/NBD + Gamma-Gamma against the naive rate on each holdout, with the verdict per measure."""
    lines = [
        "## 2. Customer lifetime value (Online Retail holdouts)",
        "",
        f"Run now, {clv['seconds']:.0f} s. Full tables, fitted parameters and notes: [clv.md](clv.md).",
        "MAE per customer over the holdout; total error = (forecast total - actual total) / actual total.",
        "",
        "| split | customers | MAE purchase days model / naive | total error model / naive |"
        " MAE spend (GBP) model / naive | total error spend model / naive |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    worse = []
    for s in clv["splits"]:
        model, naive = s["model"], s["naive"]
        lines.append(
            f"| {s['split']} | {s['customers']:,} | {model['purchases_mae']:.3f} / {naive['purchases_mae']:.3f} |"
            f" {model['purchases_total_error_pct']:+.1f}% / {naive['purchases_total_error_pct']:+.1f}% |"
            f" {model['spend_mae']:,.1f} / {naive['spend_mae']:,.1f} |"
            f" {model['spend_total_error_pct']:+.1f}% / {naive['spend_total_error_pct']:+.1f}% |"
        )
        worse += [
            f"{label} on {s['split']}"
            for key, label in (
                ("purchases_mae", "purchase-day MAE"),
                ("spend_mae", "spend MAE"),
                ("purchases_total_error_pct", "total purchase days"),
                ("spend_total_error_pct", "total spend"),
            )
            if abs(model[key]) >= abs(naive[key])
        ]
    lines += ["", "![binned calibration](clv.png)", ""]
    if worse:
        lines += [
            f"Not met: the model does not beat the naive forecast on {', '.join(worse)}; see the notes in"
            " clv.md (Gamma-Gamma pools the biggest spenders towards the mean; BG/NBD knows no seasonality, and the"
            " 90-day holdout is the Christmas peak).",
            "",
        ]
    return lines


def ab_markdown(ab: dict[str, Any]) -> list[str]:
    """Part 3: the designs, then coverage and rejection rate per design and metric, with computed verdicts."""
    settings = ab["settings"]
    lines = [
        "## 3. A/B read-out on simulated experiments",
        "",
        f"{settings['n_experiments']:,} experiments per design, {_pct(settings['baseline_rate'], 0)} baseline"
        f" conversion, converters spend lognormal (mean {settings['order_value_mean']:.0f}, sigma"
        f" {settings['order_value_sigma']}), so revenue per user is zero-inflated and skewed (std"
        f" {settings['revenue_std']:.2f} per user). Conversion: z-test + Newcombe interval; revenue per user:"
        f" Welch. Significant = p < {settings['alpha']} and the interval excludes 0. Brackets: binomial (Wilson)"
        f" 95% intervals over the experiments; {ab['seconds']} s in all.",
        "",
        "| design | users per arm | true lift | seed | what it checks |",
        "|---|---:|---:|---:|---|",
        *[
            f"| {d['name']} | {d['n_per_arm']:,} | +{d['true_lift_abs'] * 100:.1f} pp | {d['seed']} | {d['purpose']} |"
            for d in ab["designs"]
        ],
        "",
        "| design | metric | true diff | mean estimate | coverage [95% CI] | goal 93.5-96.5% | relative-lift"
        " coverage | rejection rate [95% CI] | calculator predicts | within CI |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for d in ab["designs"]:
        for metric, s in d["metrics"].items():
            lines.append(
                f"| {d['name']} | {metric} | {s['true_diff']:.4g} | {s['mean_estimate']:.4g} |"
                f" {_pct(s['coverage'])} {_ci(s['coverage_ci95'])} | {'met' if s['coverage_goal_met'] else 'NOT met'} |"
                f" {_pct(s['relative_coverage'])} | {_pct(s['rejection_rate'])} {_ci(s['rejection_ci95'])} |"
                f" {_pct(s['predicted_rejection'])} | {'yes' if s['prediction_in_ci'] else 'NO'} |"
            )
    lines += [
        "",
        "The rejection rate is the false-positive rate in the `no effect` design (goal: the calculator's 5%) and",
        "the power elsewhere. The calculator's prediction is read backwards from `minimum_detectable_effect`",
        "(`_mean` for revenue): the power at which its detectable effect equals the true one.",
        "",
        "![coverage, false-positive rate and power with 95% intervals](marketing-ab.png)",
        "",
        *ab_notes(ab),
    ]
    return lines


def ab_notes(ab: dict[str, Any]) -> list[str]:
    """Verdicts computed from the numbers, so a rerun can never leave a stale claim behind."""
    cells = [(d["name"], m, s) for d in ab["designs"] for m, s in d["metrics"].items()]
    missed = [f"{n}/{m} ({_pct(s['coverage'])})" for n, m, s in cells if not s["coverage_goal_met"]]
    off = [
        f"{n}/{m} (simulated {_pct(s['rejection_rate'])} {_ci(s['rejection_ci95'])}, predicted"
        f" {_pct(s['predicted_rejection'])})"
        for n, m, s in cells
        if not s["prediction_in_ci"]
    ]
    notes = [
        "Notes:",
        "",
        "- Coverage goal 95 +/- 1.5%: "
        + (f"NOT met for {', '.join(missed)}." if missed else f"met by all {len(cells)} design/metric cells."),
        "- Rejection rate vs the calculator (false-positive rate vs 5% under no effect): "
        + (
            f"outside the 95% interval for {', '.join(off)}."
            if off
            else "every prediction lies inside the simulated rate's 95% interval."
        ),
    ]
    if any("revenue" in cell for cell in off):
        notes.append(
            "- Revenue per user is a zero-inflated lognormal; the calculator's normal approximation on Cohen's d"
            " is where a gap would come from, since its std input is the exact one (see `revenue_std`)."
        )
    notes.append(
        "- 1,000 experiments pin a rate down to about +/- 1.4 pp at 95% (+/- 3 pp near 50%); a cell off by less"
        " is noise, not a finding. Seeds are fixed: reruns give the same numbers."
    )
    return notes


def markdown(report: dict[str, Any]) -> str:
    """marketing.md: the command, then one section per part."""
    lines = [
        "# Marketing benchmark: uplift, CLV and A/B read-out",
        "",
        f"Command: `{report['command']}` - {report['machine']}, {report['seconds']} s in all.",
        "",
        *uplift_markdown(report["uplift"]),
        *clv_markdown(report["clv"]),
        *ab_markdown(report["ab"]),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuse", action="store_true", help="read results/uplift.json instead of rerunning uplift")
    parser.add_argument("--seeds", type=int, default=5, help="uplift split seeds when it is rerun")
    args = parser.parse_args()
    command = " ".join([".venv/bin/python", "benchmarks/marketing.py", *sys.argv[1:]])
    started = time.perf_counter()
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "command": command,
        "machine": f"{platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores",
        "uplift": uplift_part(args.reuse, args.seeds, command),
        "clv": clv_part(command),
        "ab": ab_simulation(),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    (RESULTS / "marketing.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report["ab"], RESULTS / "marketing-ab.png")
    (RESULTS / "marketing.md").write_text(markdown(report))
    print((RESULTS / "marketing.md").read_text())


if __name__ == "__main__":
    main()
