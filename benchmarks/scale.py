"""Scale benchmark: training the default pipeline in-process against on Apache Spark ``local[2]``.

For each size (synthetic events, the generator streaming them to Parquet), the events before the last
tenth of the time are the training data and the rest the test window. Each engine trains the default
pipeline in its own child process:

- ``inproc``: ``build_interactions`` + ``Pipeline.fit``, as ``shopsense train`` does;
- ``spark``: ``shopsense.spark.training.train_pipeline`` over a day-partitioned Parquet folder, as
  ``shopsense train --engine spark`` does (heads on a ``spark.sample_users`` sample, sources on every event).

Measured: wall time of the fit (child process, data reading included), the peak resident memory of the
driver's whole process tree (for Spark: the Python driver plus its JVM, which in local mode runs the
executors too; sampled every 0.2 s from /proc), and NDCG@10 of the resulting bundle on up to 2,000 test-window
users (their training events as history, the items they viewed, carted or bought in the window as the
truth), with a 95% bootstrap interval. A child that dies for memory is reported as out of memory.

From Spark's measured events per second per core, the results give an estimate on paper of a
1-billion-event training on a cluster.

    .venv/bin/python benchmarks/scale.py --sizes 1M             # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/scale.py --sizes 1M 10M 50M     # hours; sizes not given are "not run"

Writes benchmarks/results/scale.md, scale.json and scale.png.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / ".work" / "scale"
SIZES = {"1M": 1_000_000, "10M": 10_000_000, "50M": 50_000_000}
MEMORY_LIMIT_GB = 24
EVAL_USERS = 2_000


def _world(events: int) -> dict[str, int]:
    """Users and items grow with the events (about 50 events a user, 200 a item, at most 100k items)."""
    return {"users": max(1_000, events // 50), "items": min(100_000, max(500, events // 200)), "days": 120}


# -- data ---------------------------------------------------------------------------------------


def prepare(label: str, events: int, world: dict[str, int] | None = None) -> Path:
    """Synthetic data, its time split and the training events as a day-partitioned Parquet folder (cached).

    ``world`` (users, items, days) defaults to :func:`_world`'s growth with the events."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from shopsense.ingest.synthetic import GeneratorConfig, generate
    from shopsense.spark.events import write_partitioned

    folder = WORK / label
    if (folder / "done").exists():
        return folder
    raw = folder / "raw"
    generate(GeneratorConfig(events=events, seed=7, **(world or _world(events))), raw)
    dataset = ds.dataset(raw / "events.parquet")
    times = pc.cast(dataset.to_table(columns=["timestamp"]).column("timestamp"), pa.int64()).to_numpy()
    cut = int(np.quantile(times, 0.9))
    del times
    stamp = pa.scalar(cut, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    ts = ds.field("timestamp")
    with pq.ParquetWriter(folder / "train.parquet", dataset.schema) as train:
        for batch in dataset.to_batches(filter=ts < stamp, batch_size=500_000):
            train.write_batch(batch)
    pq.write_table(dataset.to_table(filter=ts >= stamp), folder / "test.parquet")
    write_partitioned(folder / "train.parquet", folder / "train_by_date")
    (folder / "done").write_text(str(cut))
    return folder


# -- the children -------------------------------------------------------------------------------


def child_inproc(folder: Path, out: Path) -> None:
    import pyarrow.parquet as pq

    from shopsense.features.interactions import build_interactions
    from shopsense.pipeline import Pipeline
    from shopsense.settings import DEFAULT_EVENT_TYPES

    started = time.perf_counter()
    events = pq.read_table(folder / "train.parquet")
    items = pq.read_table(folder / "raw" / "items.parquet")
    data = build_interactions(events, dict(DEFAULT_EVENT_TYPES), catalog=items)
    fitted = Pipeline().fit(data)
    seconds = time.perf_counter() - started
    out.write_bytes(pickle.dumps({"pipeline": fitted, "seconds": seconds}, protocol=5))


def child_spark(folder: Path, out: Path, master: str, driver_memory: str) -> None:
    import pyarrow.parquet as pq

    from shopsense.pipeline import PipelineConfig
    from shopsense.settings import DEFAULT_EVENT_TYPES
    from shopsense.spark.events import read_parquet
    from shopsense.spark.session import SparkConfig, start_session
    from shopsense.spark.training import train_pipeline

    config = SparkConfig(master=master, driver_memory=driver_memory, shuffle_partitions=8)
    started = time.perf_counter()
    spark = start_session(config, "shopsense-scale")
    session_seconds = time.perf_counter() - started
    events = read_parquet(spark, folder / "train_by_date")
    items = pq.read_table(folder / "raw" / "items.parquet")
    fit = train_pipeline(events, items, PipelineConfig(), dict(DEFAULT_EVENT_TYPES), sample_users=config.sample_users)
    seconds = time.perf_counter() - started
    spark.stop()
    facts = {"session_seconds": session_seconds, "sample_users": fit.sample_users, "stages": fit.stages}
    out.write_bytes(pickle.dumps({"pipeline": fit.pipeline, "seconds": seconds, **facts}, protocol=5))


# -- measuring ----------------------------------------------------------------------------------


def _tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[int(entry)] = int(line.split()[1]) * 1024
    family, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    return sum(rss.get(pid, 0) for pid in family)


def run_child(args: list[str], timeout_s: float, script: str = __file__) -> dict[str, Any]:
    """Run ``script ARGS`` as a child, sampling its process tree's memory; wall time, peak bytes and how it ended."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, script, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = 0
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        if time.perf_counter() - started > timeout_s:
            proc.kill()
            break
        time.sleep(0.2)
    proc.wait()
    reader.join(timeout=5)
    wall = time.perf_counter() - started
    tail = "".join(lines[-15:])
    status = "ok" if proc.returncode == 0 else "timeout" if wall > timeout_s else f"exit {proc.returncode}"
    if proc.returncode in (-9, 137) or "MemoryError" in tail or "OutOfMemoryError" in tail:
        status = "out of memory" if wall <= timeout_s else "timeout"
    return {"status": status, "wall_seconds": round(wall, 1), "peak_rss_gb": round(peak / 2**30, 2), "tail": tail}


def evaluate(folder: Path, pipeline: Any) -> dict[str, Any]:
    """NDCG@10 of a fitted pipeline on up to EVAL_USERS test-window users with training history."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import scipy.sparse as sp

    from shopsense.eval.metrics import bootstrap_ci, ndcg
    from shopsense.settings import DEFAULT_EVENT_TYPES

    test = pq.read_table(folder / "test.parquet", columns=["user_id", "item_id", "type"])
    test = test.filter(pc.is_in(test.column("type"), pa.array(["view", "cart", "purchase", "favourite"])))
    users = np.unique(test.column("user_id").to_numpy(zero_copy_only=False).astype(str))
    users = np.sort(np.random.default_rng(0).choice(users, min(EVAL_USERS, len(users)), replace=False))
    train = pq.read_table(
        folder / "train.parquet",
        filters=[("user_id", "in", users.tolist())],
        columns=["user_id", "item_id", "type", "timestamp"],
    )
    users = np.intersect1d(users, np.unique(train.column("user_id").to_numpy(zero_copy_only=False).astype(str)))
    lists = []
    for start in range(0, len(users), 250):
        chunk = users[start : start + 250].tolist()
        events = train.filter(pc.is_in(train.column("user_id"), pa.array(chunk)))
        answers = pipeline.recommend_users(chunk, events, dict(DEFAULT_EVENT_TYPES), 10)
        lists.extend(answers)
    items = pipeline.items_
    recommended = np.full((len(users), 10), -1, dtype=np.int64)
    for row, answer in enumerate(lists):
        index = items.index([r.item_id for r in answer])
        recommended[row, : len(index)] = index
    test = test.filter(pc.is_in(test.column("user_id"), pa.array(users.tolist())))
    rows = np.searchsorted(users, test.column("user_id").to_numpy(zero_copy_only=False).astype(str))
    cols = np.asarray(items.index(test.column("item_id").to_pylist()))
    keep = cols >= 0
    truth = sp.csr_matrix((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(len(users), len(items)))
    truth.data[:] = 1
    known = truth.getnnz(axis=1) > 0  # a user whose window holds only items the model never saw has no truth
    recommended, truth, users = recommended[known], truth[known], users[known]
    per_user = ndcg(recommended, truth, 10)
    interval = bootstrap_ci(per_user)
    return {"ndcg10": round(float(per_user.mean()), 4), "ci95": [round(interval.low, 4), round(interval.high, 4)],
            "users": len(users)}  # fmt: skip


# -- report -------------------------------------------------------------------------------------


def write_report(results: dict[str, Any], command: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    commands = sorted({r["command"] for size in results["sizes"].values() for r in _records(size) if "command" in r})
    lines = [
        "# Scale: in-process vs Spark local[2] training",
        "",
        "Commands (each row says which one measured it):",
        "",
        *(f"{n + 1}. `{c}`" for n, c in enumerate(commands or [command])),
        "",
        f"Machine: {results['machine']}. **Other work shared these CPUs while this ran** (other helpers' tests and",
        "benchmarks on the same 2 cores), so wall times are upper bounds for an idle machine.",
        "",
        "| size | engine | status | wall (s) | peak driver RSS (GB) | NDCG@10 [95% CI] | events/s/core | command |",
        "|---|---|---|---:|---:|---|---:|---:|",
    ]
    for label in SIZES:
        size = results["sizes"].get(label)
        if size is None:
            lines.append(f"| {label} | both | not run | | | | | |")
            continue
        for engine in ("inproc", "spark"):
            r = size.get(engine)
            if r is None:
                lines.append(f"| {label} | {engine} | not run | | | | | |")
                continue
            quality = f"{r['ndcg10']:.4f} [{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]" if "ndcg10" in r else "-"
            rate = f"{r['events_per_second_per_core']:,.0f}" if "events_per_second_per_core" in r else "-"
            lines.append(
                f"| {label} | {engine} | {r['status']} | {r['wall_seconds']:,.1f} | {r['peak_rss_gb']:.2f} "
                f"| {quality} | {rate} | {commands.index(r['command']) + 1 if r.get('command') in commands else ''} |"
            )
    lines += ["", "## Where the in-process engine runs out of 24 GiB", ""]
    measured = {k: v["inproc"] for k, v in results["sizes"].items() if isinstance(v.get("inproc"), dict)}
    out_of_memory = [k for k, r in measured.items() if r["status"] == "out of memory"]
    if out_of_memory:
        lines.append(f"Measured: it ran out of memory at {', '.join(out_of_memory)}.")
    else:
        ok = {k: r for k, r in measured.items() if r["status"] == "ok"}
        lines.append(f"Not measured: it completed every size it was run at ({', '.join(ok) or 'none'}).")
        if ok:
            label, record = max(ok.items(), key=lambda kv: SIZES[kv[0]])
            per_million = record["peak_rss_gb"] / (SIZES[label] / 1e6)
            guesses = ", ".join(f"{k}: ~{per_million * v / 1e6:,.0f} GB" for k, v in SIZES.items() if k not in ok)
            lines.append(
                f"A linear extrapolation of its peak at {label} ({record['peak_rss_gb']:.2f} GB) gives {guesses}: "
                "an extrapolation, not a measurement (its id arrays and the sample-free heads grow with the data)."
            )
    estimate = results.get("estimate_1b")
    lines += ["", "## 1 billion events on a cluster (estimate on paper)", ""]
    if estimate:
        lines += [
            f"Measured on Spark local[2] at {estimate['from_size']}: {estimate['per_core']:,.0f} training events per",
            "second per core in the part of the job that grows with the events (reading, weighting, the sample draw,",
            "popularity, co-occurrence, ALS), i.e. the wall time less the session start and less the heads' fit on the",
            f"labelled sample ({estimate['fixed_seconds']:,.0f} s on the driver, the same at any size since the sample",
            "size is a setting).",
            "",
            f"- at that rate 1e9 events need {estimate['core_hours']:,.1f} core-hours of executor work;",
            f"- on {estimate['cores']} cores with {estimate['efficiency']:.0%} parallel efficiency: about "
            f"{estimate['hours']:.1f} hours, the heads' driver-side fit included.",
            "",
            "Caveats: the co-occurrence self-join grows with the square of the items per user, not linearly, so a",
            "long-tailed real catalogue with heavy users costs more per event than this synthetic shop; the heads'",
            "sample (`spark.sample_users`) is fixed and its driver-side fit does not grow with the data; ALS time",
            "grows with factors x interactions per sweep. Treat the estimate as a first sizing, to confirm on 1% of",
            "the data.",
        ]
        lines += ["", *results.get("estimate_notes", [])]
    else:
        lines.append("Not computed: no Spark size completed.")
    for note in results.get("earlier_runs", []):
        lines += ["", f"Earlier run: {note}"]
    lines += ["", "Notes per size:", ""]
    for label, size in results["sizes"].items():
        lines.append(f"- {label}: {size.get('world')}; train events {size.get('train_events'):,}")
        for engine in ("inproc", "spark"):
            r = size.get(engine)
            if r and r["status"] != "ok":
                lines.append(f"  - {engine} ended: {r['status']}: `{r['tail'].strip().splitlines()[-1:]}`")
    (RESULTS / "scale.md").write_text("\n".join(lines) + "\n")
    _plot(results)


def _records(size: dict[str, Any]) -> list[dict[str, Any]]:
    return [size[engine] for engine in ("inproc", "spark") if isinstance(size.get(engine), dict)]


def _plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for engine, colour in (("inproc", "tab:blue"), ("spark", "tab:orange")):
        xs, wall, rss, quality = [], [], [], []
        for label in SIZES:
            r = results["sizes"].get(label, {}).get(engine)
            if r and r["status"] == "ok":
                xs.append(SIZES[label])
                wall.append(r["wall_seconds"])
                rss.append(r["peak_rss_gb"])
                quality.append(r.get("ndcg10", np.nan))
        for axis, values in zip(axes, (wall, rss, quality), strict=True):
            axis.plot(xs, values, "o-", color=colour, label=engine)
    for axis, title in zip(axes, ("wall time (s)", "peak driver RSS (GB)", "NDCG@10"), strict=True):
        axis.set_xscale("log")
        axis.set_xlabel("events")
        axis.set_title(title)
        axis.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "scale.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1M"], choices=list(SIZES))
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--timeout-minutes", type=float, default=120)
    parser.add_argument("--engines", nargs="+", default=["inproc", "spark"], choices=["inproc", "spark"])
    parser.add_argument("--report-only", action="store_true", help="rewrite scale.md/png from scale.json")
    args = parser.parse_args()
    command = "OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    previous = json.loads((RESULTS / "scale.json").read_text()) if (RESULTS / "scale.json").exists() else {}
    results: dict[str, Any] = {
        "command": command,
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "memory_limit_gb": MEMORY_LIMIT_GB,
        "sizes": previous.get("sizes", {}),
        "earlier_runs": previous.get("earlier_runs", []),
        "estimate_notes": previous.get("estimate_notes", []),
    }
    if args.report_only:
        write_report(_with_estimate(results), command)
        return
    for label in args.sizes:
        events = SIZES[label]
        folder = prepare(label, events)
        import pyarrow.parquet as pq

        size = results["sizes"].setdefault(label, {})
        size["world"] = _world(events)
        size["train_events"] = pq.ParquetFile(folder / "train.parquet").metadata.num_rows
        for engine in args.engines:
            out = folder / f"{engine}.pkl"
            out.unlink(missing_ok=True)
            child = ["--child", engine, str(folder), str(out), args.master, args.driver_memory]
            print(f"{label} {engine}: training", flush=True)
            record = run_child(child, args.timeout_minutes * 60)
            record["command"] = command
            print(
                f"{label} {engine}: fitted: {json.dumps({k: v for k, v in record.items() if k != 'tail'})}", flush=True
            )
            if record["status"] == "ok":
                fitted = pickle.loads(out.read_bytes())
                record["fit_seconds"] = round(fitted["seconds"], 1)
                record["events_per_second_per_core"] = size["train_events"] / record["wall_seconds"] / 2
                record.update({k: fitted[k] for k in ("session_seconds", "sample_users", "stages") if k in fitted})
                record.update(evaluate(folder, fitted["pipeline"]))
            size[engine] = record
            print(f"{label} {engine}: {json.dumps({k: v for k, v in record.items() if k != 'tail'})}", flush=True)
            write_report(_with_estimate(results), command)
    write_report(_with_estimate(results), command)


def _with_estimate(results: dict[str, Any]) -> dict[str, Any]:
    done = [(SIZES[k], v["spark"]) for k, v in results["sizes"].items() if v.get("spark", {}).get("status") == "ok"]
    if done:
        size, record = max(done, key=lambda pair: pair[0])
        label = next(k for k, v in SIZES.items() if v == size)
        train_events = results["sizes"][label]["train_events"]
        stages = record.get("stages") or {}
        # The heads' fit on the fixed-size sample runs once on the driver whatever the data size; the rest scales.
        fixed = stages.get("heads", 0.0)
        scaling = record["wall_seconds"] - fixed - record.get("session_seconds", 0.0)
        per_core = train_events / scaling / 2
        cores, efficiency = 64, 0.6
        core_hours = 1e9 / per_core / 3600
        results["estimate_1b"] = {"from_size": label, "per_core": per_core, "core_hours": core_hours,
                                  "cores": cores, "efficiency": efficiency, "fixed_seconds": fixed,
                                  "hours": core_hours / cores / efficiency + fixed / 3600}  # fmt: skip
    return results


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        engine, folder, out = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
        if engine == "inproc":
            child_inproc(folder, out)
        else:
            child_spark(folder, out, sys.argv[5], sys.argv[6])
    else:
        main()
