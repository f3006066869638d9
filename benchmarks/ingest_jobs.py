"""Ingest latency with and without a running job: does long work hold up event writes?

Long work (a profile build scans every event and fits the churn and CLV models) runs as a job on its own
store handle, off the writer thread that acknowledges events. This measures it: single events posted from
32 connections for ``--seconds`` with no job running, then again while a profile-build job runs (started
with ``POST /v1/profiles/build``; the job's status is read before and after the loaded window, so the
report says whether it ran the whole time), on both stores:

- the embedded store: one ``shopsense serve`` over benchmarks/serve.py's 1M-event world imported into
  DuckDB, with the bundle trained for the PostgreSQL run;
- PostgreSQL: ``--replicas`` replicas over a fresh copy of the world database (durable settings), the job
  started on the first.

Reuses benchmarks/serve.py's world and driver and benchmarks/serve_postgres.py's PostgreSQL server and
trained data directory (run ``benchmarks/serve.py --store postgresql`` once first). Writes
benchmarks/results/ingest-jobs.{md,json}.

    .venv/bin/python benchmarks/ingest_jobs.py            # about 4 minutes once the world is prepared
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import serve as base  # benchmarks/serve.py: the world, the driver
import serve_postgres as pg  # the PostgreSQL server, the trained data directory

CONNECTIONS = 32
JOB_WAIT_S = 120.0


def job_status(port: int, key: str, url: str) -> dict[str, Any]:
    answer = httpx.get(f"http://127.0.0.1:{port}{url}", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    answer.raise_for_status()
    status: dict[str, Any] = answer.json()
    return status


def start_job(port: int, key: str) -> str:
    """A profile build, started and seen running; its status URL."""
    answer = httpx.post(
        f"http://127.0.0.1:{port}/v1/profiles/build", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    if answer.status_code != 202:
        raise SystemExit(f"POST /v1/profiles/build answered {answer.status_code}: {answer.text[:500]}")
    url = str(answer.json()["url"])
    deadline = time.perf_counter() + JOB_WAIT_S
    while job_status(port, key, url)["status"] == "queued":
        if time.perf_counter() > deadline:
            raise SystemExit("the profile-build job did not start")
        time.sleep(0.2)
    return url


def measure(ports: list[int], key: str, seconds: float) -> dict[str, Any]:
    """Ingest alone, then ingest while a job runs; the job is then awaited for its duration."""
    alone = base.drive(ports, key, "events_single", seconds, CONNECTIONS, run="alone-")
    started = time.perf_counter()
    url = start_job(ports[0], key)
    before = job_status(ports[0], key, url)
    loaded = base.drive(ports, key, "events_single", seconds, CONNECTIONS, run="job-")
    after = job_status(ports[0], key, url)
    while (status := job_status(ports[0], key, url))["status"] in ("queued", "running"):
        time.sleep(0.5)
    return {
        "without_job": alone,
        "with_job": loaded,
        "job": {
            "kind": status.get("kind"),
            "status": status["status"],
            "seconds": round(time.perf_counter() - started, 1),
            "running_when_window_began": before["status"] == "running",
            "running_when_window_ended": after["status"] == "running",
            "error": status.get("error"),
        },
    }


def embedded(raw: Path, seconds: float) -> dict[str, Any]:
    """One server over the world imported into a fresh embedded store, with the PostgreSQL run's bundle."""
    data = base.WORK / "jobs-duckdb"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    shutil.copytree(pg.TRAINED / "models", data / "models")
    for kind in ("items", "events"):
        pg.shopsense(f"duckdb:///{data / 'shopsense.duckdb'}", data, "import", kind, str(raw / f"{kind}.parquet"))
    key = pg.create_key(f"duckdb:///{data / 'shopsense.duckdb'}", data)
    port = base.free_port()
    process, _ = base.start_server(data, port)
    try:
        return {"store": "duckdb", "servers": 1, **measure([port], key, seconds)}
    finally:
        base.stop_server(process)


def postgres(replicas: int, seconds: float, raw: Path) -> dict[str, Any]:
    server = pg.start_postgres()
    try:
        pg.import_world(server, raw, "world")
        pg.trained_data(server.url("world"))
        url, data, key = pg.fresh_run(server, "jobs_run")
        with pg.Replicas(url, data, replicas, "jobs") as running:
            return {"store": "postgresql", "servers": replicas, **measure(running.ports, key, seconds)}
    finally:
        with contextlib.suppress(OSError):
            shutil.copyfile(server.log, pg.WORK / "postgresql-jobs.log")
        server.stop()


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Ingest latency with and without a running job",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}  ",
        f"Single events (one per POST) from {CONNECTIONS} connections for {report['seconds']:.0f} s each, before and "
        "while a profile-build job (`POST /v1/profiles/build`: every event scanned, churn and CLV fitted) runs "
        "on its own store handle.",
        "",
        "| store | servers | job | req/s | p50 ms | p99 ms | job ran the whole window | job took |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        job = run["job"]
        whole = job["running_when_window_began"] and job["running_when_window_ended"]
        for label, phase in (("none", run["without_job"]), ("profile build", run["with_job"])):
            ran = ("yes" if whole else "no") if label != "none" else ""
            took = f"{job['seconds']:.0f} s ({job['status']})" if label != "none" else ""
            lines.append(
                f"| {run['store']} | {run['servers']} | {label} | {phase['req_per_s']:,.0f} | {phase['p50_ms']:.1f} "
                f"| {phase['p99_ms']:.1f} | {ran} | {took} |"
            )
    lines += [
        "",
        "Every request in both windows is counted; a job that ended before its window did is marked `no` "
        "(its window then held some unloaded time).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="per window")
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    if not (pg.WORK / "ready.json").exists():
        raise SystemExit("run `benchmarks/serve.py --store postgresql` first: it trains the bundle used here")
    raw = base.world_files()
    runs = [embedded(raw, args.seconds), postgres(args.replicas, args.seconds, raw)]
    report = {
        "command": ".venv/bin/python benchmarks/ingest_jobs.py " + " ".join(sys.argv[1:]),
        "machine": pg.machine(),
        "seconds": args.seconds,
        "connections": CONNECTIONS,
        "runs": runs,
    }
    base.RESULTS.mkdir(parents=True, exist_ok=True)
    (base.RESULTS / "ingest-jobs.json").write_text(json.dumps(report, indent=2))
    (base.RESULTS / "ingest-jobs.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
