"""Ingest benchmark: rows/s and peak memory for importing real and synthetic data.

Each import runs in a fresh subprocess (a new store) so its peak RSS is its own.
Reads ../shared/datasets/online_retail (both files) and generates a seeded 10M-event
synthetic set as Parquet and CSV under benchmarks/.work/.

    .venv/bin/python benchmarks/ingest.py [--events 10000000]

Writes benchmarks/results/ingest.md, ingest.json and ingest.png (``make bench-ingest``).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
RESULTS = ROOT / "benchmarks" / "results"
# The child reports its own peak RSS on its last stderr line, whatever exit path the CLI takes.
_CHILD = (
    "import resource, sys\n"
    "from shopsense.cli import app\n"
    "try:\n    app(sys.argv[1:])\n"
    "finally:\n    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)"
)
SHOPSENSE = [sys.executable, "-c", _CHILD]
ONLINE_RETAIL = ROOT.parent / "shared" / "datasets" / "online_retail"

TARGETS = {"parquet": 1_000_000, "csv": 300_000}
MEMORY_TARGET_MIB = 2048


def _run(args: list[str]) -> tuple[float, float, str]:
    """Run one shopsense command in a child; return (seconds, peak RSS MiB, stdout)."""
    start = time.perf_counter()
    done = subprocess.run([*SHOPSENSE, *args], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return seconds, peak_kib / 1024, done.stdout


def _import(name: str, args: list[str], repeat: int) -> dict[str, object]:
    """Import ``repeat`` times, each into a fresh store; report the median time and the worst memory."""
    times, peaks = [], []
    rows = written = 0
    for _ in range(repeat):
        data = WORK / "store"
        shutil.rmtree(data, ignore_errors=True)
        seconds, peak, stdout = _run(["--data-dir", str(data), "import", *args, "--json"])
        reports = json.loads(stdout)
        reports = reports if isinstance(reports, list) else [reports]
        rows = sum(int(r["rows_read"]) for r in reports if r["kind"] == "events")
        written = sum(int(r["rows_written"]) for r in reports if r["kind"] == "events")
        times.append(seconds)
        peaks.append(peak)
        shutil.rmtree(data, ignore_errors=True)
    median = statistics.median(times)
    return {
        "case": name,
        "events_read": rows,
        "events_written": written,
        "runs": repeat,
        "seconds": round(median, 2),
        "seconds_min_max": [round(min(times), 2), round(max(times), 2)],
        "events_per_s": round(rows / median),
        "peak_rss_mib": round(max(peaks)),
    }


def replot() -> None:
    """Redraw the PNG from the committed JSON (``python benchmarks/ingest.py --replot``)."""
    plot(json.loads((RESULTS / "ingest.json").read_text())["results"], RESULTS / "ingest.png")


def main() -> None:
    """Generate data, run each import in its own process, write the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3, help="imports per case; the median is reported")
    parser.add_argument("--replot", action="store_true", help="only redraw ingest.png from ingest.json")
    ns = parser.parse_args()
    if ns.replot:
        replot()
        return
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = []
    for fmt in ("parquet", "csv"):
        out = WORK / f"synthetic-{fmt}"
        if not (out / f"events.{fmt}").exists():
            _run(["generate", "--out", str(out), "--users", str(ns.users), "--items", str(ns.items),
                  "--events", str(ns.events), "--format", fmt])  # fmt: skip
        row = _import(f"synthetic {ns.events:,} events ({fmt})", ["events", str(out / f"events.{fmt}")], ns.repeat)
        row["target_events_per_s"] = TARGETS[fmt]
        results.append(row)
        print(row, flush=True)
    if ONLINE_RETAIL.is_dir():
        row = _import(
            "Online Retail I + II (adapter, 1,067,370 lines)",
            ["dataset", "online-retail", str(ONLINE_RETAIL)],
            ns.repeat,
        )
        row["target_events_per_s"] = TARGETS["csv"]
        results.append(row)
        print(row, flush=True)
    meta = {
        "command": "python benchmarks/ingest.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {platform.python_version()}, 2 cores",
        "memory_target_mib": MEMORY_TARGET_MIB,
    }
    (RESULTS / "ingest.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = [
        "# Ingest benchmark",
        "",
        f"Command: `{meta['command']}` — {meta['machine']}. Each import runs in a fresh process into an empty "
        "store; seconds are the median of the runs (fastest and slowest beside it), peak RSS the largest of them.",
        "",
        "| case | events read | events written | runs | median s (min to max) | events/s | target events/s "
        "| peak RSS MiB (target ≤ 2048) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        spread = r["seconds_min_max"]
        assert isinstance(spread, list)
        fast, slow = spread
        lines.append(
            f"| {r['case']} | {r['events_read']:,} | {r['events_written']:,} | {r['runs']} | "
            f"{r['seconds']} ({fast} to {slow}) | "
            f"{r['events_per_s']:,} | {r['target_events_per_s']:,} | {r['peak_rss_mib']:,} |"
        )
    lines += ["", "![ingest throughput and memory](ingest.png)"]
    (RESULTS / "ingest.md").write_text("\n".join(lines) + "\n")
    plot(results, RESULTS / "ingest.png")
    print("\n".join(lines))


def plot(results: list[dict[str, object]], path: Path) -> None:
    """Two bar charts: events/s against its target, and peak memory against the 2 GiB target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [str(r["case"]).replace(" (adapter, 1,067,370 lines)", "") for r in results]
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(12, 0.9 * len(results) + 1.6), sharey=True)
    ys = list(range(len(results)))
    speed.barh(ys, [float(r["events_per_s"]) / 1e3 for r in results], color="#4c78a8")  # type: ignore[arg-type]
    for y, r in zip(ys, results, strict=True):
        speed.plot([float(r["target_events_per_s"]) / 1e3] * 2, [y - 0.4, y + 0.4], color="#e45756", lw=2)  # type: ignore[arg-type]
    speed.set_xlabel("thousand events per second (red: target)")
    speed.set_yticks(ys, names)
    memory.barh(ys, [float(r["peak_rss_mib"]) for r in results], color="#72b7b2")  # type: ignore[arg-type]
    memory.axvline(MEMORY_TARGET_MIB, color="#e45756", lw=2)
    memory.set_xlabel("peak RSS, MiB (red: 2 GiB target)")
    fig.suptitle("shopsense ingest, 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
