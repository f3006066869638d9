"""Load benchmark of the REST service: `shopsense serve` on 127.0.0.1, driven from a separate process.

World: the synthetic shop with a 100k-item catalogue and 1M events, imported into a fresh embedded
store and the default pipeline trained on it (prepared once under benchmarks/.work/serve and reused).
The server runs as `shopsense serve` in its own process (one uvicorn worker; the embedded store has
one writer); the driver is another process with keep-alive connections. Phases, each for a bounded
time, each reporting throughput and p50/p95/p99 latency as seen by the client:

- recommendations for distinct users with the pipeline's defaults (answered from the answers the
  bundle precomputed at training while the user's history is unchanged; users without history
  share one answer);
- recommendations for a Zipf mix of 2,000 users (what a shop's traffic looks like);
- the same Zipf mix while one more connection posts view events for those users (at most 100 per
  second, one at a time), so that some answers must be computed (each event changes that user's next answer);
- recommendations computed live: distinct users with a per-request alpha, so neither the stored
  answers nor the cache can serve them (candidates, features, both heads and reasons every time:
  what a user who just acted gets);
- single events (one per request; concurrent writes share commits), from 32 and from 128 connections;
- batches of 1,000 events, from 4 and from 8 connections.

Every event is acknowledged only after its commit; after the run the server is stopped and the
store is counted, so the report says how many acknowledged events are stored. Also the server's
RSS (current and peak). The whole sequence runs ``--rounds`` times, each against a server started on a
fresh copy of the data, and each phase is reported from its median round with every round's
throughput beside it: this machine's speed drifts by up to 2x within minutes. Writes
benchmarks/results/serve.md and serve.json.

    .venv/bin/python benchmarks/serve.py                           # about 25 minutes the first time, 7 after
    .venv/bin/python benchmarks/serve.py --seconds 5 --rounds 1    # a quick look

With ``--store postgresql`` the same phases and driver run against ``--replicas`` servers on one PostgreSQL
database, plus a file import and kill -9 trials (benchmarks/serve_postgres.py; serve-postgres.md):

    .venv/bin/python benchmarks/serve.py --store postgresql --replicas 2 --seconds 15
    .venv/bin/python benchmarks/serve.py --store postgresql --replicas 2 --seconds 3 --rounds 1 --kill-trials 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from shopsense.domain import RecordKind  # noqa: E402
from shopsense.ingest.mapping import load_mapping  # noqa: E402
from shopsense.ingest.synthetic import GeneratorConfig, generate  # noqa: E402
from shopsense.services.data import DataService  # noqa: E402
from shopsense.services.keys import KeyRing  # noqa: E402
from shopsense.settings import load_settings  # noqa: E402
from shopsense.store import open_store  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "serve"
RESULTS = ROOT / "benchmarks" / "results"
SERVER_LOG = WORK / "server.log"
WORLD = GeneratorConfig(users=50_000, items=100_000, events=1_000_000, days=90, seed=11)
TARGETS: dict[str, tuple[str, int | None, int | None, str]] = {
    "recommendations_unique": ("req/s", 1_000, 25, ""),
    "recommendations_zipf": ("req/s", 1_000, 25, ""),
    "recommendations_zipf_acting": ("req/s", None, None, "none (shown: the same users acting as they browse)"),
    "recommendations_live": ("req/s", None, None, "none (shown for what a user who just acted waits)"),
    "events_single": ("req/s", 2_000, None, ""),
    "events_batch_1000": ("events/s", 50_000, None, ""),
}
"""Issue 5's targets on a 2-core machine: (unit, floor, p99 ceiling in ms, why a phase without one is shown)."""
ACTING_RATE = 100
"""View events per second posted for the Zipf users during the acting phase, from one more connection."""
SERVER_CONFIG = """
[serve]
rate_per_second = 1e9
rate_burst = 1000000000
reload_seconds = 0
"""


def world_files() -> Path:
    """The generated world's files (items, users, events), generated once; a different world starts afresh."""
    raw = WORK / "raw"
    for marker in (WORK / "ready.json", raw / "world.json"):
        if marker.exists() and json.loads(marker.read_text()).get("world") == WORLD.model_dump():
            return raw
    shutil.rmtree(WORK, ignore_errors=True)
    print("generating 1M events over 100k items…", file=sys.stderr)
    generate(WORLD, raw)
    (raw / "world.json").write_text(json.dumps({"world": WORLD.model_dump()}))
    return raw


def prepare() -> Path:
    """Generate, import and train once; later runs reuse the data directory."""
    data = WORK / "data"
    marker = WORK / "ready.json"
    if marker.exists() and json.loads(marker.read_text()).get("world") == WORLD.model_dump():
        return data
    raw = world_files()
    shutil.rmtree(data, ignore_errors=True)
    service = DataService(load_settings(None, data_dir=data))
    started = time.perf_counter()
    for kind, name in ((RecordKind.ITEMS, "items"), (RecordKind.EVENTS, "events")):
        service.import_file(raw / f"{name}.parquet", load_mapping(None, kind, {}))
    imported = time.perf_counter() - started
    from shopsense.services.recommendation import RecommendationService

    print("training the default pipeline…", file=sys.stderr)
    result = RecommendationService(service).train("default")
    service.close()
    marker.write_text(
        json.dumps(
            {
                "world": WORLD.model_dump(),
                "import_seconds": round(imported, 1),
                "train_seconds": round(result.seconds, 1),
                "precompute_seconds": result.bundle.metrics["precompute_seconds"],
                "precomputed_users": result.bundle.answers_users,
            }
        )
    )
    return data


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_server(
    data: Path, port: int, log: Path = SERVER_LOG, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `shopsense serve` on ``port`` in its own session (so that it and any process it starts can be
    stopped, or killed, together), its stdout and stderr to ``log``."""
    config = log.parent / "serve.toml"
    config.write_text(SERVER_CONFIG)
    env = {**os.environ, "SHOPSENSE_DATA_DIR": str(data), "SHOPSENSE_CONFIG": str(config), **(env or {})}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:  # a file, not a pipe: an unread pipe would block a server that logs
        return subprocess.Popen(
            [sys.executable, "-m", "shopsense", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(process: subprocess.Popen[bytes], port: int, log: Path = SERVER_LOG, timeout: float = 600) -> None:
    """Until ``GET /ready`` answers 200; a server that exits or takes over ``timeout`` seconds is an error."""
    deadline = time.perf_counter() + timeout
    while True:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited ({process.returncode}); {log}:\n{log.read_text()[-3000:]}")
        if time.perf_counter() > deadline:
            raise SystemExit(
                f"server on port {port} not ready after {timeout:.0f} s; {log}:\n{log.read_text()[-3000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
                if b" 200 " in sock.recv(200):
                    return
        except OSError:
            pass
        time.sleep(0.25)


def start_server(data: Path, port: int) -> tuple[subprocess.Popen[bytes], float]:
    started = time.perf_counter()
    process = launch_server(data, port)
    try:
        wait_ready(process, port)
    except BaseException:
        stop_server(process)
        raise
    return process, time.perf_counter() - started


def stop_server(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGTERM to the server's process group and wait; SIGKILL to the group if it does not end in time."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # what the server started and left behind


def rss_mb(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "peak_rss_mb": int(fields["VmHWM"].split()[0]) / 1024}


# -- the driver (its own process) --------------------------------------------------------------


async def _worker(port: int, requests: Any, deadline: float, out: list[tuple[float, int]], pace: float = 0.0) -> None:
    """One keep-alive connection sending requests back to back (or one per ``pace`` seconds). A minimal
    HTTP/1.1 client: the general-purpose ones (httpx, aiohttp) spend more CPU per request than the
    server under test, which on two cores would measure the driver."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        status = await exchange(reader, writer, next(requests))
        out.append((time.perf_counter() - started, status))
        if pace:
            await asyncio.sleep(max(0.0, started + pace - time.perf_counter()))
    writer.close()


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a keep-alive connection and read its whole answer; its status."""
    writer.write(request)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


def _get(path: str, key: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n\r\n".encode()


def _post(path: str, key: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _requests(phase: str, key: str, seed: int, connections: int = 0, run: str = "") -> Any:
    rng = random.Random(seed)
    tag = f"{run}{connections}-{seed}"  # event ids differ between runs of a phase: none is a re-send
    n = 0
    now = datetime.now(UTC).isoformat()
    # Drawn only where used: a million draws per connection stalled the driver's event loop for seconds.
    zipf = np.random.default_rng(seed).zipf(1.2, 100_000) % 2_000 if "zipf" in phase else None
    while True:
        n += 1
        if phase == "recommendations_unique":
            yield _get(f"/v1/recommendations?user_id=user-{(n * 7919 + seed) % WORLD.users}&k=10", key)
        elif phase == "recommendations_live":
            yield _get(f"/v1/recommendations?user_id=user-{(n * 7919 + seed * 1013) % WORLD.users}&k=10&alpha=0.3", key)
        elif phase in ("recommendations_zipf", "recommendations_zipf_acting"):
            assert zipf is not None
            yield _get(f"/v1/recommendations?user_id=user-{int(zipf[n % len(zipf)])}&k=10", key)
        elif phase == "zipf_events":
            assert zipf is not None
            event = {
                "event_id": f"bench-acting-{tag}-{n}",
                "user_id": f"user-{int(zipf[n % len(zipf)])}",
                "item_id": f"item-{rng.randrange(WORLD.items)}",
                "type": "view",
                "timestamp": datetime.now(UTC).isoformat(),
            }
            yield _post("/v1/events", key, json.dumps(event).encode())
        elif phase == "events_single":
            event = {
                "event_id": f"bench-single-{tag}-{n}",
                "user_id": f"user-{rng.randrange(WORLD.users)}",
                "item_id": f"item-{rng.randrange(WORLD.items)}",
                "type": "view",
                "timestamp": now,
            }
            yield _post("/v1/events", key, json.dumps(event).encode())
        else:
            batch = [
                {
                    "event_id": f"bench-batch-{tag}-{n}-{j}",
                    "user_id": f"user-{rng.randrange(WORLD.users)}",
                    "item_id": f"item-{rng.randrange(WORLD.items)}",
                    "type": "view",
                    "timestamp": now,
                }
                for j in range(1_000)
            ]
            yield _post("/v1/events", key, json.dumps(batch).encode())


def drive(ports: list[int], key: str, phase: str, seconds: float, connections: int, run: str = "") -> dict[str, Any]:
    """Run one phase against the servers (connection i to ``ports[i % len(ports)]``: one port for the
    embedded store, one per replica for PostgreSQL) and summarise what the client saw. In the acting
    phase one more connection posts view events for the same Zipf users; only recommendations are timed.
    ``run`` tells event ids of two runs of one phase apart (a run repeated on one store would re-send)."""
    out: list[tuple[float, int]] = []
    acted: list[tuple[float, int]] = []
    acting = phase == "recommendations_zipf_acting"

    async def main() -> None:
        deadline = time.perf_counter() + seconds
        workers = [
            _worker(ports[seed % len(ports)], _requests(phase, key, seed, connections, run), deadline, out)
            for seed in range(connections)
        ]
        if acting:
            events = _requests("zipf_events", key, connections, connections)
            workers.append(_worker(ports[connections % len(ports)], events, deadline, acted, pace=1 / ACTING_RATE))
        await asyncio.gather(*workers)

    answers_before = cache_hits(ports)
    started = time.perf_counter()
    asyncio.run(main())
    wall = time.perf_counter() - started
    answers = {k: v - answers_before.get(k, 0.0) for k, v in cache_hits(ports).items()}
    latency = np.array([t for t, _ in out]) * 1000
    statuses: dict[str, int] = {}
    for _, status in out:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = statuses.get("200", 0)
    per_request = 1_000 if phase == "events_batch_1000" else 1
    return {
        "phase": phase,
        "connections": connections,
        "seconds": round(wall, 1),
        "requests": len(out),
        "statuses": statuses,
        "req_per_s": round(len(out) / wall, 1),
        "events_per_s": round(ok * per_request / wall, 1) if phase.startswith("events") else None,
        "acknowledged_events": ok * per_request if phase.startswith("events") else sum(s == 200 for _, s in acted),
        "answers": answers,
        "p50_ms": round(float(np.percentile(latency, 50)), 2),
        "p95_ms": round(float(np.percentile(latency, 95)), 2),
        "p99_ms": round(float(np.percentile(latency, 99)), 2),
    }


# -- orchestration ------------------------------------------------------------------------------

PHASES = (
    ("recommendations_unique", 8),
    ("recommendations_zipf", 16),
    ("recommendations_zipf_acting", 16),
    ("recommendations_live", 4),
    ("events_single", 32),
    ("events_single", 128),
    ("events_batch_1000", 4),
    ("events_batch_1000", 8),
)
"""Writes run at two concurrencies: a group commit's throughput grows with the writers in flight."""


def machine_speed() -> float:
    """Seconds a fixed pure-Python loop takes (median of three): this machine's CPU speed drifts (1.7x
    within one run, measured so), so a run's figures are only comparable with another's at a similar value."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(3_000_000):
            total += i
        times.append(time.perf_counter() - started)
    return round(sorted(times)[1], 3)


def cache_hits(ports: list[int]) -> dict[str, float]:
    """How the servers answered recommendations so far (their /metrics counters, summed over ``ports``)."""
    counts: dict[str, float] = {}
    for port in ports:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            text = b""
            while chunk := sock.recv(65536):
                text += chunk
        for line in text.decode().splitlines():
            if line.startswith("shopsense_recommendations_total{"):
                labels, value = line.rsplit(" ", 1)
                name = labels.split("{", 1)[1].rstrip("}")
                counts[name] = counts.get(name, 0.0) + float(value)
    return counts


def markdown(report: dict[str, Any]) -> str:
    rounds = report["rounds"]
    lines = [
        "# REST service under load\n",
        f"Command: `{report['command']}` on {report['machine']}; server and driver share the machine's 2 cores.\n",
        f"World: {WORLD.items:,} items, {WORLD.users:,} users, {WORLD.events:,} events (synthetic shop, seed "
        f"{WORLD.seed}); import {report['prepared']['import_seconds']} s, training "
        f"{report['prepared']['train_seconds']} s, precomputing the default answers of "
        f"{report['prepared'].get('precomputed_users', 0):,} users {report['prepared'].get('precompute_seconds')} s "
        f"(cached between runs); server start (1M events into memory, bundle loaded) "
        f"{', '.join(str(r['server_start_seconds']) for r in rounds)} s.\n",
        f"{len(rounds)} rounds, each every phase in order against a server started on a fresh copy of the data. "
        "Each row is the round with the median throughput, with its latencies; the last column lists every "
        "round's throughput. Machine speed (`machine_speed`, a fixed pure-Python loop; lower is faster) before "
        "and after each round: "
        + "; ".join(f"{r['speed']['before']} / {r['speed']['after']} s" for r in rounds)
        + ".\n",
        *phase_table(report["phases"]),
    ]
    for at, r in enumerate(rounds, 1):
        d = r["durability"]
        lines.append(
            f"Round {at}: {d['acknowledged']:,} events acknowledged; after stopping the server the store holds "
            f"{d['stored_new']:,} new events ({'all acknowledged events stored' if d['ok'] else '**LOST EVENTS**'}). "
            f"Server RSS {r['rss']['rss_mb']:.0f} MB at the end, peak {r['rss']['peak_rss_mb']:.0f} MB.\n"
        )
    lines.append("The server's RSS excludes the process that reads large event batches (`serve.parse_processes`).")
    return "\n".join(lines) + "\n"


def phase_met(r: dict[str, Any]) -> tuple[bool | None, str]:
    """Whether a phase's median round met its target (None where it has none), and the target in words."""
    unit, floor, lat, shown = TARGETS[r["phase"]]
    rate = r["events_per_s"] if unit == "events/s" else r["req_per_s"]
    if floor is None:
        return None, shown
    target = f">= {floor:,} {unit}" + (f", p99 <= {lat} ms" if lat else "")
    return rate >= floor and (lat is None or r["p99_ms"] <= lat), target


def phase_table(phases: list[dict[str, Any]]) -> list[str]:
    """The phases' table (median rounds) and how the recommendation phases were answered."""
    lines = [
        "| phase | connections | req/s | events/s | p50 ms | p95 ms | p99 ms | non-200 | target | met | rounds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    acting = next(r for r in phases if r["phase"] == "recommendations_zipf_acting")
    for r in phases:
        met, target = phase_met(r)
        bad = sum(v for k, v in r["statuses"].items() if k != "200")
        events = f"{r['events_per_s']:,.0f}" if r["events_per_s"] else "-"
        lines.append(
            f"| {r['phase']} | {r['connections']} | {r['req_per_s']:,.0f} | {events} | {r['p50_ms']} | {r['p95_ms']} "
            f"| {r['p99_ms']} | {bad} | {target} | {'-' if met is None else 'yes' if met else '**no**'} "
            f"| {', '.join(f'{rate:,.0f}' for rate in r['all_rounds'])} |"
        )
    lines.append(
        "\nHow each recommendation phase was answered (its median round): stored or cached answers / computed "
        "live. "
        + "; ".join(
            f"{r['phase']}: {_answered(r['answers'], 'true'):,.0f} / {_answered(r['answers'], 'false'):,.0f}"
            for r in phases
            if r["phase"].startswith("recommendations")
        )
        + f". In `recommendations_zipf_acting` one more connection posts view events for the same Zipf users, at most "
        f"{ACTING_RATE} per second, each acknowledged before the next is sent ({acting['acknowledged_events']:,} in "
        f"its median round); each makes that user's next answer a computed one. Only recommendations are timed.\n"
    )
    return lines


def _answered(answers: dict[str, float], cached: str) -> float:
    return sum(n for labels, n in answers.items() if f'cached="{cached}"' in labels)


def run_round(data: Path, seconds: float, at: int, rounds: int) -> dict[str, Any]:
    """Every phase against one server started on a fresh copy of the prepared data, then the count
    of stored events against the acknowledged ones."""
    run_data = WORK / "run"
    shutil.rmtree(run_data, ignore_errors=True)
    shutil.copytree(data, run_data)
    key, _ = KeyRing(run_data / "keys.json").create("benchmark", ["admin"])
    store = open_store(f"duckdb:///{run_data / 'shopsense.duckdb'}")
    before = store.summary().events
    store.close()
    port = free_port()
    speed_before = machine_speed()
    server, start_seconds = start_server(run_data, port)
    try:
        phases = run_phases([port], key, seconds, f"round {at + 1}/{rounds}", [SERVER_LOG])
        memory = rss_mb(server.pid)
    finally:
        stop_server(server)
    speed_after = machine_speed()
    store = open_store(f"duckdb:///{run_data / 'shopsense.duckdb'}")
    stored_new = store.summary().events - before
    store.close()
    acknowledged = sum(p["acknowledged_events"] for p in phases)
    return {
        "server_start_seconds": round(start_seconds, 1),
        "speed": {"before": speed_before, "after": speed_after},
        "phases": phases,
        "durability": {"acknowledged": acknowledged, "stored_new": stored_new, "ok": stored_new >= acknowledged},
        "rss": memory,
    }


def run_phases(
    ports: list[int],
    key: str,
    seconds: float,
    label: str,
    logs: list[Path],
    probe: Callable[[], dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Every phase in order, each driven from its own process against ``ports``; ``logs`` (the servers')
    are quoted when the driver fails. ``probe`` (counters of the store, say) is read before and after each
    phase and the differences kept with it as ``store``."""
    phases = []
    for phase, connections in PHASES:
        before = probe() if probe else {}
        print(f"{label}, {phase}: {connections} connections for {seconds:.0f} s…", file=sys.stderr)
        driven = subprocess.run(
            [
                sys.executable,
                __file__,
                "--drive",
                ",".join(map(str, ports)),
                key,
                phase,
                str(seconds),
                str(connections),
            ],
            capture_output=True,
            text=True,
        )
        if driven.returncode:
            tails = "\n".join(f"{log}:\n{log.read_text(errors='replace')[-3000:]}" for log in logs if log.exists())
            raise SystemExit(f"the driver failed in {phase}: {driven.stderr[-3000:]}\n{tails}")
        phases.append(json.loads(driven.stdout))
        if probe:
            phases[-1]["store"] = {k: v - before.get(k, 0) for k, v in probe().items()}
        print(json.dumps(phases[-1]), file=sys.stderr)
    return phases


def median_round(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase's result from the round with the median throughput (its latencies with it), and
    every round's throughput: this machine's speed drifts, so one round alone can mislead."""
    rates = [r["events_per_s"] or r["req_per_s"] for r in results]
    order = sorted(range(len(results)), key=rates.__getitem__)
    return {**results[order[len(order) // 2]], "all_rounds": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=3, help="full runs, each on a fresh server; the median is shown")
    parser.add_argument(
        "--store",
        choices=("duckdb", "postgresql"),
        default="duckdb",
        help="the embedded store and one server (serve.md), or PostgreSQL and --replicas servers (serve-postgres.md)",
    )
    parser.add_argument("--replicas", type=int, default=2, help="with --store postgresql: `shopsense serve` processes")
    parser.add_argument("--kill-trials", type=int, default=20, help="with --store postgresql: kill -9 trials (0: none)")
    parser.add_argument(
        "--drive", nargs=5, metavar=("PORT", "KEY", "PHASE", "SECONDS", "CONNECTIONS"), help=argparse.SUPPRESS
    )
    parser.add_argument("--kill-drive", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        port, key, phase, seconds, connections = args.drive
        print(json.dumps(drive([int(p) for p in port.split(",")], key, phase, float(seconds), int(connections))))
        return
    if args.kill_drive or args.store == "postgresql":
        import serve_postgres  # benchmarks/ is the script's folder, first on sys.path

        serve_postgres.main(args)
        return
    data = prepare()
    rounds = [run_round(data, args.seconds, at, args.rounds) for at in range(args.rounds)]
    report = {
        "command": ".venv/bin/python benchmarks/serve.py " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores",
        "world": WORLD.model_dump(),
        "prepared": json.loads((WORK / "ready.json").read_text()),
        "rounds": rounds,
        "phases": [median_round([r["phases"][at] for r in rounds]) for at in range(len(PHASES))],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "serve.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
