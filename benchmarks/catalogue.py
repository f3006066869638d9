"""Large-catalogue benchmark: time and peak memory of training with ~90,000 items on 2 cores.

A grocery-like shop has a long catalogue: before the neighbour products were blocked, item-kNN and the
hybrid peaked at 13.9 GB on 1.5M events over ~90k items, and the default pipeline's co-occurrence
feature materialised the whole item x item product. This benchmark generates such a shop (seeded
synthetic data, 1.5M events, 90,000 items, 30,000 customers, Zipf popularity) and trains, each in its own
child process whose process tree's resident memory is sampled every 0.2 s:

- ``default``: the pipeline ``shopsense train`` builds with no flags (candidate sources, features, heads),
  with its NDCG@10 on up to 2,000 test-window customers (the last tenth of the time) and a 95% bootstrap CI;
- ``item_knn`` and ``hybrid``: the two single models that ran out of bounds, fitted on the training events.

The target (issue 24): item-kNN on a 100k-item catalogue in at most 4 GB; train in minutes.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/catalogue.py          # about 10 minutes on 2 cores

Writes benchmarks/results/catalogue.md, catalogue.json and catalogue.png.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scale import child_inproc, evaluate, prepare, run_child  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
LABEL = "catalogue-1.5M-90k"
EVENTS = 1_500_000
WORLD = {"users": 30_000, "items": 90_000, "days": 120}
TARGET_GB = 4.0
JOBS = ("default", "item_knn", "hybrid")


def child_model(name: str, folder: Path, out: Path) -> None:
    """Fit one registered model, with its default parameters, on the training events."""
    import pyarrow.parquet as pq

    from shopsense.features.interactions import build_interactions
    from shopsense.models.registry import build_model
    from shopsense.settings import DEFAULT_EVENT_TYPES

    started = time.perf_counter()
    events = pq.read_table(folder / "train.parquet")
    items = pq.read_table(folder / "raw" / "items.parquet")
    data = build_interactions(events, dict(DEFAULT_EVENT_TYPES), catalog=items)
    build_model(name).fit(data)
    out.write_bytes(pickle.dumps({"seconds": time.perf_counter() - started}, protocol=5))


def write_report(results: dict[str, Any]) -> None:
    """catalogue.json, a table with the command on top, and a bar chart of memory and time against the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "catalogue.json").write_text(json.dumps(results, indent=1))
    rows = [
        "| job | status | wall (s) | fit (s) | peak RSS (GB) | within 4 GB | NDCG@10 [95% CI] |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for job in JOBS:
        r = results["jobs"].get(job)
        if r is None:
            rows.append(f"| {job} | not run | | | | | |")
            continue
        quality = f"{r['ndcg10']:.4f} [{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]" if "ndcg10" in r else "-"
        within = "yes" if r["peak_rss_gb"] <= TARGET_GB else "**no**"
        rows.append(
            f"| {job} | {r['status']} | {r['wall_seconds']:,.1f} | {r.get('fit_seconds', '-')} | "
            f"{r['peak_rss_gb']:.2f} | {within} | {quality} |"
        )
    text = [
        "# Large catalogue: training with 90,000 items on 2 cores",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {results['machine']}. Data: seeded synthetic shop, {results['train_events']:,} training events "
        f"(the first nine tenths of {EVENTS:,} over {WORLD['days']} days), {WORLD['items']:,} items, "
        f"{WORLD['users']:,} customers. Each job runs in its own process; peak RSS is its whole process tree's, "
        "sampled every 0.2 s; wall includes reading the events. NDCG@10 (default pipeline only): up to 2,000 "
        "customers of the test window, their training events as history, what they viewed, carted, favourited "
        "or bought in the window as the truth.",
        "",
        *rows,
        "",
        f"Target (issue 24): item-kNN on a ~100k-item catalogue within {TARGET_GB:.0f} GB, training in minutes.",
        "",
        "![peak memory and wall time per job](catalogue.png)",
        "",
    ]
    if results.get("notes"):
        text += ["Notes:", "", *(f"- {note}" for note in results["notes"]), ""]
    (RESULTS / "catalogue.md").write_text("\n".join(text))
    done = [job for job in JOBS if job in results["jobs"]]
    fig, (memory, wall) = plt.subplots(1, 2, figsize=(9, 3.4))
    memory.bar(done, [results["jobs"][j]["peak_rss_gb"] for j in done], color="#4c72b0")
    memory.axhline(TARGET_GB, color="#c44e52", linestyle="--", label=f"target {TARGET_GB:.0f} GB")
    memory.set_ylabel("peak RSS (GB)")
    memory.legend()
    wall.bar(done, [results["jobs"][j]["wall_seconds"] for j in done], color="#55a868")
    wall.set_ylabel("wall time (s)")
    fig.suptitle(f"{results['train_events']:,} events, {WORLD['items']:,} items, 2 cores")
    fig.tight_layout()
    fig.savefig(RESULTS / "catalogue.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=JOBS)
    parser.add_argument("--timeout-minutes", type=float, default=30)
    args = parser.parse_args()
    command = " ".join(
        ["OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/catalogue.py", *map(shlex.quote, sys.argv[1:])]
    )
    folder = prepare(LABEL, EVENTS, WORLD)
    import pyarrow.parquet as pq

    previous = json.loads((RESULTS / "catalogue.json").read_text()) if (RESULTS / "catalogue.json").exists() else {}
    results: dict[str, Any] = {
        "command": command,
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "train_events": pq.ParquetFile(folder / "train.parquet").metadata.num_rows,
        "jobs": previous.get("jobs", {}) if previous.get("command") == command else {},
        "notes": previous.get("notes", []),
    }
    for job in args.jobs:
        out = folder / f"{job}.pkl"
        out.unlink(missing_ok=True)
        print(f"{job}: training", flush=True)
        record = run_child(["--child", job, str(folder), str(out)], args.timeout_minutes * 60, script=__file__)
        print(f"{job}: fitted: {json.dumps({k: v for k, v in record.items() if k != 'tail'})}", flush=True)
        if record["status"] == "ok":
            fitted = pickle.loads(out.read_bytes())
            record["fit_seconds"] = round(fitted["seconds"], 1)
            if "pipeline" in fitted:
                record.update(evaluate(folder, fitted["pipeline"]))
        out.unlink(missing_ok=True)
        results["jobs"][job] = record
        print(f"{job}: {json.dumps({k: v for k, v in record.items() if k != 'tail'})}", flush=True)
        write_report(results)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        job, folder, out = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
        if job == "default":
            child_inproc(folder, out)
        else:
            child_model(job, folder, out)
    else:
        main()
