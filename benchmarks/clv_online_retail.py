"""CLV benchmark: BG/NBD + Gamma-Gamma against a naive forecast on Online Retail's real customers.

Online Retail I + II (``../shared/datasets/online_retail``, 2009-12-01 .. 2011-12-09) is imported
through shopsense's own adapter into the quality benchmark's cached store
(``benchmarks/.work/quality/online-retail``). Guests (``guest:<invoice>`` pseudo-users, one invoice
each) are left out: they cannot come back under the same id. For each split the models are fitted
on everything before the calibration end and forecast every calibration purchaser's purchase days
and net spend (purchases minus returns) in the holdout window, which they never saw:

- ``holdout 6 months``: calibration to 2011-06-10, holdout 2011-06-10 .. 2011-12-10 (183 days);
- ``holdout 90 days``: calibration to 2011-09-10, holdout 2011-09-10 .. 2011-12-10 (91 days).

The naive baseline repeats each customer's own history: repeat purchase days per day since the
first purchase, each worth the customer's mean net value per purchase day. Also timed: building
every profile (all 1M events, guests included) at 2011-12-10.

    .venv/bin/python benchmarks/clv_online_retail.py

Writes ``benchmarks/results/clv.md``, ``clv.json`` and ``clv.png``. ``run()`` returns the report
for other benchmarks (e.g. a marketing one) to embed.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from benchmarks.quality import DATASETS, RESULTS, load  # noqa: E402
from shopsense.features.clv import ClvValidation, validate_clv  # noqa: E402
from shopsense.features.profiles import CLV_ERROR_KEY, build_profiles  # noqa: E402

SPLITS = {
    "holdout 6 months": (datetime(2011, 6, 10, tzinfo=UTC), datetime(2011, 12, 10, tzinfo=UTC)),
    "holdout 90 days": (datetime(2011, 9, 10, tzinfo=UTC), datetime(2011, 12, 10, tzinfo=UTC)),
}
PROFILES_AS_OF = datetime(2011, 12, 10, tzinfo=UTC)
FREQUENCY_BINS = (0, 1, 2, 3, 4, 5, 6, 7, 10, 20)
"""Lower edges of the calibration-frequency bins of the plot (the last bin is open)."""
COMMAND = ".venv/bin/python benchmarks/clv_online_retail.py"
SERIES = ((-0.27, "actual", "actual"), (0.0, "predicted", "BG/NBD + Gamma-Gamma"), (0.27, "naive", "naive rate"))


def binned(customers: pa.Table) -> dict[str, list[dict[str, float]]]:
    """Mean actual vs forecast holdout purchases per calibration frequency, and spend per forecast decile."""
    data = {name: customers[name].to_numpy() for name in customers.column_names if name != "user_id"}
    by_frequency = np.searchsorted(np.array(FREQUENCY_BINS), data["frequency"], side="right") - 1
    deciles = np.minimum((np.argsort(np.argsort(data["predicted_spend"])) * 10) // len(by_frequency), 9)

    def means(groups: np.ndarray, label: np.ndarray, what: str) -> list[dict[str, float]]:
        rows = []
        for group in np.unique(groups):
            chosen = groups == group
            rows.append(
                {"bin": float(label[group]), "customers": int(chosen.sum())}
                | {k: float(data[f"{k}_{what}"][chosen].mean()) for k in ("actual", "predicted", "naive")}
            )
        return rows

    return {
        "purchases_by_frequency": means(by_frequency, np.array(FREQUENCY_BINS, dtype=float), "purchases"),
        "spend_by_predicted_decile": means(deciles, np.arange(1, 11, dtype=float), "spend"),
    }


def split_report(name: str, result: ClvValidation, seconds: float) -> dict[str, Any]:
    """One split's numbers: errors of both forecasts, fitted parameters, binned calibration."""
    return {
        "split": name,
        "calibration_end": result.calibration_end.isoformat(),
        "holdout_end": result.holdout_end.isoformat(),
        "horizon_days": result.horizon_days,
        "customers": result.customers.num_rows,
        "new_in_holdout": result.new_in_holdout,
        "actual_purchases": result.actual_purchases,
        "actual_spend": result.actual_spend,
        "model": vars(result.model),
        "naive": vars(result.naive),
        "params": result.params,
        "seconds": round(seconds, 2),
        **binned(result.customers),
    }


def profile_report(events: pa.Table, customer_events: pa.Table, items: pa.Table) -> dict[str, Any]:
    """Time a profile build over every event; summarise the registered customers' profiles.

    Segments come from a build over customers' events only: one-invoice guests would otherwise
    fill the bottom frequency quintile and push every real one-time buyer up to F = 2.
    """
    started = time.perf_counter()
    everyone = build_profiles(events, items, PROFILES_AS_OF)
    seconds = time.perf_counter() - started
    customers = build_profiles(customer_events, items, PROFILES_AS_OF)
    metadata = customers.schema.metadata or {}
    return {
        "as_of": PROFILES_AS_OF.isoformat(),
        "events": events.num_rows,
        "users": everyone.num_rows,
        "columns": everyone.num_columns,
        "seconds": round(seconds, 2),
        "clv_error": metadata.get(CLV_ERROR_KEY.encode(), b"").decode() or None,
        "customers": customers.num_rows,
        "lifecycle": dict(Counter(customers["lifecycle"].to_pylist()).most_common()),
        "rfm_segment": dict(Counter(customers["rfm_segment"].to_pylist()).most_common()),
        "clv_90d_total": float(np.nansum(customers["clv_90d"].to_numpy())),
    }


def run() -> dict[str, Any]:
    """Every split and the profile timing, as one JSON-able report."""
    started = time.perf_counter()
    events, items = load("online-retail", DATASETS["online-retail"])
    customers = events.filter(pc.invert(pc.starts_with(events["user_id"], "guest:")))
    splits = []
    for name, (calibration_end, holdout_end) in SPLITS.items():
        split_started = time.perf_counter()
        result = validate_clv(customers, calibration_end, holdout_end)
        splits.append(split_report(name, result, time.perf_counter() - split_started))
        print(f"[clv] {name}: {splits[-1]['model']}", file=sys.stderr)
    return {
        "dataset": "online-retail",
        "command": COMMAND,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "events": events.num_rows,
        "customer_events": customers.num_rows,
        "splits": splits,
        "profiles": profile_report(events, customers, items),
        "seconds": round(time.perf_counter() - started, 1),
    }


def bin_labels(edges: list[int]) -> list[str]:
    """ "3", "7-9", "20+": each bin from its lower edge to the next one's."""
    ends = [*(e - 1 for e in edges[1:]), None]
    return [
        f"{lo}+" if hi is None else str(lo) if hi == lo else f"{lo}-{hi}" for lo, hi in zip(edges, ends, strict=True)
    ]


def plot(report: dict[str, Any], path: Path) -> None:
    """Binned calibration: holdout purchases by calibration frequency, spend by forecast decile, per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = report["splits"]
    fig, axes = plt.subplots(len(splits), 2, figsize=(12, 4.2 * len(splits)), squeeze=False)
    for row, split in zip(axes, splits, strict=True):
        for ax, key, unit in (
            (row[0], "purchases_by_frequency", "purchase days"),
            (row[1], "spend_by_predicted_decile", "net spend (GBP)"),
        ):
            bins = split[key]
            x = np.arange(len(bins))
            for offset, name, label in (
                (-0.27, "actual", "actual"),
                (0, "predicted", "BG/NBD + GG"),
                (0.27, "naive", "naive rate"),
            ):
                ax.bar(x + offset, [b[name] for b in bins], width=0.27, label=label)
            if key == "purchases_by_frequency":
                ax.set_xticks(x, bin_labels([int(b["bin"]) for b in bins]))
                ax.set_xlabel("repeat purchase days in calibration")
            else:
                ax.set_xticks(x, [str(int(b["bin"])) for b in bins])
                ax.set_xlabel("decile of forecast spend (10 = highest)")
            ax.set_ylabel(f"mean holdout {unit} per customer")
            ax.set_title(f"{split['split']}: {unit}")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: dict[str, Any]) -> str:
    """clv.md: the comparison table, the fitted parameters, the profile timing and honest notes."""
    lines = [
        "# Customer lifetime value on Online Retail: BG/NBD + Gamma-Gamma vs a naive forecast\n",
        f"Command: `{report['command']}` ({report['seconds']:.0f} s on {report['machine']}).\n",
        f"{report['customer_events']:,} events of registered customers (guests left out) of {report['events']:,}.",
        "Each split fits on everything before the calibration end and forecasts each calibration purchaser's",
        "purchase days and net spend in the holdout. Total error: (forecast total - actual total) / actual",
        "total. MAE: mean absolute error per customer. Naive: each customer's own repeat rate and mean spend.\n",
        "| split | customers | actual purchase days | forecast | total error | MAE purchases | actual spend (GBP) |"
        " total error spend | MAE spend (GBP) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for s in report["splits"]:
        for key, label in (("model", "BG/NBD + Gamma-Gamma"), ("naive", "naive rate")):
            e = s[key]
            lines.append(
                f"| {s['split']} | {s['customers']:,} | {s['actual_purchases']:,.0f} | {label} | "
                f"{e['purchases_total_error_pct']:+.1f}% | {e['purchases_mae']:.3f} | {s['actual_spend']:,.0f} | "
                f"{e['spend_total_error_pct']:+.1f}% | {e['spend_mae']:,.1f} |"
            )
    lines += ["\n![binned calibration](clv.png)\n", "## Fitted parameters (time unit: day)\n"]
    lines += ["| split | r | alpha | a | b | p | q | v | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for s in report["splits"]:
        p = s["params"]
        lines.append(
            f"| {s['split']} | {p['r']:.3f} | {p['alpha']:.2f} | {p['a']:.3f} | {p['b']:.3f} | {p['p']:.3f} | "
            f"{p['q']:.3f} | {p['v']:.2f} | {s['seconds']} |"
        )
    prof = report["profiles"]
    lines += notes(report)
    lines += [
        "\n## Full profile build\n",
        f"`build_profiles` at {prof['as_of']} over all {prof['events']:,} events (guests included): "
        f"{prof['users']:,} users, {prof['columns']} columns, **{prof['seconds']} s**. Lifecycle and RFM segments"
        f" of the {prof['customers']:,} registered customers (profiled without guests; CLV fitted: "
        f"{'no: ' + prof['clv_error'] if prof['clv_error'] else 'yes'}):\n",
        "| lifecycle | customers |",
        "|---|---:|",
        *[f"| {k} | {v:,} |" for k, v in prof["lifecycle"].items()],
        "",
        "| RFM segment | customers |",
        "|---|---:|",
        *[f"| {k} | {v:,} |" for k, v in prof["rfm_segment"].items()],
    ]
    return "\n".join(lines) + "\n"


def notes(report: dict[str, Any]) -> list[str]:
    """What the numbers say, including where the model does not help."""
    six, ninety = report["splits"]
    first = six["purchases_by_frequency"][0]
    repeaters = [b for b in six["purchases_by_frequency"] if b["bin"] >= 1]
    over = np.mean([b["naive"] / b["actual"] - 1 for b in repeaters])
    model_over = np.mean([abs(b["predicted"] / b["actual"] - 1) for b in repeaters])
    top = six["spend_by_predicted_decile"][-1]
    return [
        "\n## Notes\n",
        f"- **Purchase days, 6-month holdout:** BG/NBD's total is {six['model']['purchases_total_error_pct']:+.1f}% "
        f"off (naive {six['naive']['purchases_total_error_pct']:+.1f}%) and its per-customer MAE "
        f"{six['model']['purchases_mae']:.3f} vs {six['naive']['purchases_mae']:.3f}: better, but only by "
        f"{1 - six['model']['purchases_mae'] / six['naive']['purchases_mae']:.0%}; single customers are noisy. "
        f"By calibration frequency (plot) the model is within {model_over:.0%} of the actual mean on average "
        f"for repeat buyers, while the naive rate over-forecasts them by {over:.0%} (it has no dropout) and "
        f"forecasts 0 for the {first['customers']:,} one-time buyers, who bought on {first['actual']:.2f} days each.",
        f"- **Spend:** Gamma-Gamma pools each customer's mean towards the population's, so it under-forecasts the "
        f"top decile of wholesale buyers ({top['predicted']:,.0f} vs {top['actual']:,.0f} GBP each): total spend "
        f"{six['model']['spend_total_error_pct']:+.1f}% (naive {six['naive']['spend_total_error_pct']:+.1f}%), MAE "
        f"{six['model']['spend_mae']:,.1f} vs {six['naive']['spend_mae']:,.1f} GBP. The model does not beat the "
        "naive spend forecast per customer here; use its spend for ranking and budgets with that in mind.",
        f"- **90-day holdout (Sep-Dec 2011):** the Christmas wholesale peak; both forecasts are stationary and "
        f"fall short (model {ninety['model']['purchases_total_error_pct']:+.1f}%, naive "
        f"{ninety['naive']['purchases_total_error_pct']:+.1f}% of purchase days). BG/NBD knows no seasonality; "
        "the naive rate happens to be closer in total because it ignores dropout, while per customer the two "
        f"tie (MAE {ninety['model']['purchases_mae']:.3f} vs {ninety['naive']['purchases_mae']:.3f}).",
        "- **Settings:** lifetimes' penalizer is 0 (its default): its L2 penalty shrinks all four BG/NBD parameters "
        "towards 0, and on this data 0.001 already moves b from 3.4 to 1.3. A purchase is a purchase day "
        "(the models' unit); returns are netted against the latest purchase day before them.",
        "- **p_alive:** BG/NBD lets customers drop out only after a repeat purchase, so every one-time buyer has "
        "p_alive = 1 (churn_probability 0) however long ago they bought; profiles' `lifecycle` is the churn "
        "signal for them.",
    ]


def main() -> None:
    report = run()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "clv.json").write_text(json.dumps(report, indent=2))
    plot(report, RESULTS / "clv.png")
    (RESULTS / "clv.md").write_text(markdown(report))
    print((RESULTS / "clv.md").read_text())


if __name__ == "__main__":
    main()
