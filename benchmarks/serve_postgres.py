"""`benchmarks/serve.py --store postgresql`: the REST service on PostgreSQL, several replicas on one database.

A throwaway PostgreSQL server (tests/postgres.py's, but durable: ``fsync``, ``synchronous_commit`` and
``full_page_writes`` on, because what is measured is that an acknowledged event is stored) holds the
world: the same generated files as the embedded run, imported with ``shopsense import`` into a fresh
database (the first import timed as the file import below), and the default pipeline trained on it
once (its data directory cached under benchmarks/.work/serve/postgres and shared by the replicas).

- File import: ``shopsense import events`` of the world's 1M-event file into a fresh database (its
  items imported first, untimed), once per round; events/s over the command's wall time.
- Every phase of serve.py, each round against ``--replicas`` ``shopsense serve --port P`` processes on a
  fresh copy of the world database (``CREATE DATABASE … TEMPLATE``) and of the data directory, the driver's
  connections spread round-robin over them; throughput is summed over the replicas. After the round the
  replicas are stopped and PostgreSQL is counted: every acknowledged event stored, none twice.
- kill -9 trials: the replicas started afresh, concurrent clients post batches with event ids round-robin
  over them, one replica is killed (SIGKILL to its process group) mid-run; a client whose request failed
  re-sends the same batch to a surviving replica and goes on. Then the survivors are stopped and
  PostgreSQL is asked, by event_id, whether every acknowledged event is stored and whether any is stored
  twice.

Writes benchmarks/results/serve-postgres.md, .json and .png (throughput per phase against serve.json's
embedded run, where that exists). Servers' output goes to benchmarks/.work/serve/postgres/*.log, and
PostgreSQL's log is copied there before the server is stopped (always, as are the replicas).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import serve as base  # benchmarks/serve.py: the world, the phases, the driver

ROOT = base.ROOT
sys.path.insert(0, str(ROOT))

from tests.postgres import PostgresServer, PostgresStartFailed, PostgresUnavailable, find_bindir  # noqa: E402

WORK = base.WORK / "postgres"
TRAINED = WORK / "data"
RUN = WORK / "run"
PG_SETTINGS = {"shared_buffers": "256MB", "max_connections": "200", "max_wal_size": "4GB"}
"""Beyond tests/postgres.py's (and durable): room for the replicas' pools and a 1M-event import without a
forced checkpoint in the middle."""
IMPORT_TARGET = 250_000
"""Events/s of ``shopsense import events`` into PostgreSQL (issue target, 2 cores)."""
KILL_CLIENTS = 8
KILL_BATCH = 100
KILL_SECONDS = 4.0
KILL_AT = 1.5
"""Each trial: KILL_CLIENTS clients post KILL_BATCH-event batches for KILL_SECONDS s; one replica is killed
KILL_AT s after the clients start."""


# -- PostgreSQL -------------------------------------------------------------------------------


def start_postgres() -> PostgresServer:
    try:
        bindir, major = find_bindir()
        server = PostgresServer(bindir, major, durable=True, settings=PG_SETTINGS)
        server.start()
    except (PostgresUnavailable, PostgresStartFailed) as exc:
        raise SystemExit(f"PostgreSQL for the benchmark: {exc}") from exc
    return server


def admin(server: PostgresServer, *statements: str) -> None:
    import psycopg

    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


def copy_database(server: PostgresServer, source: str, name: str) -> str:
    """A fresh copy of ``source`` (no connection may be open on it); returns its URL."""
    admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    return server.url(name)


def query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql.encode(), params).fetchall()


def shopsense(url: str, data: Path, *args: str, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    """One ``shopsense`` command on the store at ``url`` with data directory ``data``; an error ends the run."""
    env = {**os.environ, "SHOPSENSE_STORE_URL": url, "SHOPSENSE_DATA_DIR": str(data)}
    done = subprocess.run([sys.executable, "-m", "shopsense", *args], env=env, capture_output=True, text=True)
    if log is not None:
        with log.open("a") as out:
            out.write(f"$ shopsense {' '.join(args)}  (exit {done.returncode})\n{done.stdout[-5000:]}{done.stderr}\n")
    if done.returncode:
        raise SystemExit(f"`shopsense {' '.join(args)}` failed ({done.returncode}): {done.stderr[-3000:]}")
    return done


def import_world(server: PostgresServer, raw: Path, name: str) -> dict[str, Any]:
    """Items (untimed), then the events file timed: into a fresh database ``name``."""
    admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin(server, f'CREATE DATABASE "{name}" OWNER shopsense')
    url = server.url(name)
    scratch = WORK / "import-data"
    shutil.rmtree(scratch, ignore_errors=True)
    log = WORK / "import.log"
    shopsense(url, scratch, "import", "items", str(raw / "items.parquet"), log=log)
    started = time.perf_counter()
    done = shopsense(url, scratch, "import", "events", str(raw / "events.parquet"), "--json", log=log)
    wall = time.perf_counter() - started
    try:
        said = json.loads(done.stdout)
    except json.JSONDecodeError:
        said = {}
    (stored,) = query(url, "SELECT count(*) FROM events")[0]
    events = int(stored)
    return {
        "database": name,
        "events": events,
        "wall_seconds": round(wall, 2),
        "events_per_s": round(events / wall),
        "reported": said,
        "met": events / wall >= IMPORT_TARGET,
    }


def trained_data(url: str) -> dict[str, Any]:
    """The default pipeline trained on the world database, once; later runs reuse its data directory
    (the same files imported the same way make the same store)."""
    marker = WORK / "ready.json"
    if marker.exists() and json.loads(marker.read_text()).get("world") == base.WORLD.model_dump():
        return dict(json.loads(marker.read_text()))
    shutil.rmtree(TRAINED, ignore_errors=True)
    print("training the default pipeline on PostgreSQL…", file=sys.stderr)
    started = time.perf_counter()
    done = shopsense(url, TRAINED, "train", "--pipeline", "default", "--json", log=WORK / "train.log")
    seconds = time.perf_counter() - started
    try:
        said = json.loads(done.stdout)
    except json.JSONDecodeError:
        said = {}
    prepared = {"world": base.WORLD.model_dump(), "train_seconds": round(seconds, 1), "train": said}
    marker.write_text(json.dumps(prepared))
    return prepared


# -- replicas ---------------------------------------------------------------------------------


class Replicas:
    """``count`` ``shopsense serve`` processes on one database and one data directory, each on its own port."""

    def __init__(self, url: str, data: Path, count: int, tag: str) -> None:
        self.url, self.data = url, data
        self.ports = [base.free_port() for _ in range(count)]
        self.logs = [WORK / f"{tag}-replica-{i}.log" for i in range(count)]
        self.processes: list[subprocess.Popen[bytes]] = []
        self.start_seconds: list[float] = []

    def start(self) -> None:
        """Start them all at once and wait until each is ready (its own start time)."""
        started = time.perf_counter()
        env = {"SHOPSENSE_STORE_URL": self.url}
        try:
            for port, log in zip(self.ports, self.logs, strict=True):
                self.processes.append(base.launch_server(self.data, port, log, env))
            for process, port, log in zip(self.processes, self.ports, self.logs, strict=True):
                base.wait_ready(process, port, log)
                self.start_seconds.append(round(time.perf_counter() - started, 1))
        except BaseException:
            self.stop()
            raise

    def kill(self, at: int) -> None:
        """kill -9 replica ``at`` and whatever it started (its process group)."""
        process = self.processes[at]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        for process in self.processes:
            base.stop_server(process)

    def rss(self) -> list[dict[str, float]]:
        return [base.rss_mb(p.pid) for p in self.processes if p.poll() is None]

    def __enter__(self) -> Replicas:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_key(url: str, data: Path) -> str:
    done = shopsense(url, data, "keys", "create", "benchmark", "--scope", "admin")
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    lines = [line for line in lines if line.startswith("ss_")] or lines[-1:]
    if not lines:
        raise SystemExit(f"`shopsense keys create` printed no key: {done.stdout!r} {done.stderr[-1000:]!r}")
    return lines[-1]


def fresh_run(server: PostgresServer, name: str) -> tuple[str, Path, str]:
    """A copy of the world database and of the trained data directory, and an admin key for them."""
    url = copy_database(server, "world", name)
    shutil.rmtree(RUN, ignore_errors=True)
    shutil.copytree(TRAINED, RUN)
    return url, RUN, create_key(url, RUN)


def event_counts(url: str, like: str | None = None) -> dict[str, int]:
    where = "WHERE event_id LIKE %s" if like else ""
    rows, distinct = query(
        url, f"SELECT count(*), count(DISTINCT event_id) FROM events {where}", [like] if like else None
    )[0]
    return {"rows": int(rows), "distinct_ids": int(distinct)}


def database_counters(url: str) -> dict[str, float]:
    """The database's transactions committed (read-only ones too) and rows inserted so far
    (pg_stat_database), and the server's WAL flushes to disk (pg_stat_wal: one per group of commits). The
    counters lag by up to 500 ms, PostgreSQL's stats flush interval, so the probe waits that long first."""
    time.sleep(0.6)
    commits, inserted, syncs = query(
        url,
        "SELECT xact_commit, tup_inserted, (SELECT wal_sync FROM pg_stat_wal) FROM pg_stat_database "
        "WHERE datname = current_database()",
    )[0]
    return {"commits": float(commits), "rows_inserted": float(inserted), "wal_syncs": float(syncs)}


# -- the phases -------------------------------------------------------------------------------


def run_round(server: PostgresServer, replicas: int, seconds: float, at: int, rounds: int) -> dict[str, Any]:
    url, data, key = fresh_run(server, f"round_{at}")
    before = event_counts(url)
    speed_before = base.machine_speed()
    group = Replicas(url, data, replicas, f"round-{at}")
    with group:
        phases = base.run_phases(
            group.ports, key, seconds, f"round {at + 1}/{rounds}", group.logs, lambda: database_counters(url)
        )
        memory = group.rss()
    speed_after = base.machine_speed()
    after = event_counts(url)
    acknowledged = sum(p["acknowledged_events"] for p in phases)
    stored_new = after["rows"] - before["rows"]
    duplicated = after["rows"] - after["distinct_ids"] - (before["rows"] - before["distinct_ids"])
    admin(server, f'DROP DATABASE IF EXISTS "round_{at}" WITH (FORCE)')
    return {
        "server_start_seconds": group.start_seconds,
        "speed": {"before": speed_before, "after": speed_after},
        "phases": phases,
        "durability": {
            "acknowledged": acknowledged,
            "stored_new": stored_new,
            "duplicated": duplicated,
            "ok": stored_new >= acknowledged and duplicated <= 0,
        },
        "rss": memory,
    }


# -- kill -9 trials ---------------------------------------------------------------------------


def kill_drive(ports: list[int], key: str, trial: int, seconds: float, clients: int, batch: int) -> dict[str, Any]:
    """The trial's clients (its own process): each posts batches of ``batch`` events with ids
    ``kill-T-C-N-J`` for ``seconds`` s, a batch at a time, round-robin over ``ports``; a failed request
    (connection error, 5xx or 429) is re-sent, the same batch, to the next replica not seen failing.
    Returns which batches were acknowledged and what went wrong on the way."""
    dead: set[int] = set()
    acked: dict[int, list[int]] = {c: [] for c in range(clients)}
    failures: dict[str, int] = {}
    resent = given_up = 0
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())

    def body(client: int, n: int) -> bytes:
        events = [
            {
                "event_id": f"kill-{trial}-{client}-{n}-{j}",
                "user_id": f"user-{(client * 7919 + n * 31 + j) % base.WORLD.users}",
                "item_id": f"item-{(n * 1013 + j * 17 + client) % base.WORLD.items}",
                "type": "view",
                "timestamp": now,
            }
            for j in range(batch)
        ]
        return base._post("/v1/events", key, json.dumps(events).encode())

    async def client(c: int, deadline: float) -> None:
        nonlocal resent, given_up
        turn = c
        stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            request = body(c, n)
            for attempt in range(100):
                live = [p for p in ports if p not in dead] or ports
                port = live[turn % len(live)]
                try:
                    if stream is None:
                        stream = await asyncio.open_connection("127.0.0.1", port)
                    status = await asyncio.wait_for(base.exchange(*stream, request), 60)
                except (OSError, asyncio.IncompleteReadError, IndexError, ValueError, TimeoutError) as exc:
                    name = "closed" if isinstance(exc, IndexError | asyncio.IncompleteReadError) else type(exc).__name__
                    failures[name] = failures.get(name, 0) + 1
                    dead.add(port)
                    if stream is not None:
                        stream[1].close()
                    stream, turn = None, turn + 1
                    resent += 1
                    continue
                if status == 200:
                    acked[c].append(n)
                    break
                failures[str(status)] = failures.get(str(status), 0) + 1
                if status >= 500 or status == 429:
                    resent += 1
                    await asyncio.sleep(0.05 * min(attempt + 1, 10))
                    continue
                break  # a 4xx other than 429: the batch itself is refused; not acknowledged, not re-sent
            else:
                given_up += 1
        if stream is not None:
            stream[1].close()

    async def main() -> None:
        deadline = time.perf_counter() + seconds
        print("started", file=sys.stderr, flush=True)  # the trial's clock starts here, not at the process start
        await asyncio.gather(*(client(c, deadline) for c in range(clients)))

    started = time.perf_counter()
    asyncio.run(main())
    return {
        "acked": {str(c): ns for c, ns in acked.items()},
        "failures": failures,
        "resent": resent,
        "given_up": given_up,
        "seconds": round(time.perf_counter() - started, 2),
    }


def kill_trials(server: PostgresServer, replicas: int, trials: int) -> list[dict[str, Any]]:
    """``trials`` kill -9 trials on one copy of the world database (each trial's event ids its own)."""
    if trials <= 0:
        return []
    if replicas < 2:
        raise SystemExit("kill -9 trials need --replicas 2 or more (or --kill-trials 0)")
    url, data, key = fresh_run(server, "kill")
    results = []
    for trial in range(trials):
        victim = trial % replicas
        group = Replicas(url, data, replicas, f"kill-{trial}")
        with group:
            driver = subprocess.Popen(
                [
                    sys.executable,
                    base.__file__,
                    "--kill-drive",
                    ",".join(map(str, group.ports)),
                    key,
                    str(trial),
                    str(KILL_SECONDS),
                    str(KILL_CLIENTS),
                    str(KILL_BATCH),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert driver.stderr is not None
                driver.stderr.readline()  # "started" (or nothing, if it failed: then its error below)
                time.sleep(KILL_AT)
                group.kill(victim)
                out, err = driver.communicate(timeout=600)
            finally:
                if driver.poll() is None:
                    driver.kill()
                    driver.wait()
            if driver.returncode:
                raise SystemExit(f"the kill -9 trial's clients failed: {err[-3000:]}")
        drove = json.loads(out)
        acknowledged = {
            f"kill-{trial}-{c}-{n}-{j}" for c, ns in drove["acked"].items() for n in ns for j in range(KILL_BATCH)
        }
        stored = dict(
            query(
                url,
                "SELECT event_id, count(*) FROM events WHERE event_id LIKE %s GROUP BY event_id",
                [f"kill-{trial}-%"],
            )
        )
        missing = len(acknowledged - stored.keys())
        duplicated = sum(n - 1 for n in stored.values() if n > 1)
        result = {
            "trial": trial + 1,
            "killed_replica": victim,
            "killed_at_s": KILL_AT,
            "start_seconds": group.start_seconds,
            "acknowledged": len(acknowledged),
            "stored": len(stored),
            "stored_unacknowledged": len(stored.keys() - acknowledged),
            "missing": missing,
            "duplicated": duplicated,
            "failures": drove["failures"],
            "resent": drove["resent"],
            "given_up": drove["given_up"],
            "ok": missing == 0 and duplicated == 0,
        }
        print(json.dumps(result), file=sys.stderr)
        results.append(result)
    admin(server, 'DROP DATABASE IF EXISTS "kill" WITH (FORCE)')
    return results


# -- the report -------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    rounds, world, prepared = report["rounds"], base.WORLD, report["prepared"]
    imports = report["file_import"]
    mid = sorted(imports, key=lambda r: r["events_per_s"])[len(imports) // 2]
    pg = report["postgresql"]
    lines = [
        "# REST service under load: PostgreSQL, several replicas\n",
        f"Command: `{report['command']}` on {report['machine']}; PostgreSQL {pg['major']}, the replicas and the "
        "driver share the machine's cores.\n",
        f"PostgreSQL: a throwaway server (tests/postgres.py) on 127.0.0.1, durable: `fsync`, `synchronous_commit` "
        f"and `full_page_writes` on; {', '.join(f'`{k}={v}`' for k, v in pg['settings'].items() if k in PG_SETTINGS)}. "
        f"{report['replicas']} replicas: separate `shopsense serve --port P` processes on one database and one "
        "data directory; the driver's connections go round-robin over them and the figures are their sums.\n",
        f"World: {world.items:,} items, {world.users:,} users, {world.events:,} events (synthetic shop, seed "
        f"{world.seed}), imported with `shopsense import` and the default pipeline trained on it "
        f"({prepared['train_seconds']} s, cached between runs); replicas ready after "
        f"{'; '.join(', '.join(str(s) for s in r['server_start_seconds']) for r in rounds)} s (started together).\n",
        "## File import\n",
        f"`shopsense import events` of the world's {world.events:,}-event Parquet file into a fresh database (its "
        "items imported first, untimed), timed over the command's wall time (Python start included; the target "
        "is judged on it); beside it the seconds the command itself reports (reading, checking and writing).\n",
        "| round | events | seconds | events/s | reported seconds | events/s by those | target | met |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {at} | {r['events']:,} | {r['wall_seconds']} | {r['events_per_s']:,} | "
            f"{r['reported'].get('seconds', '-')} | {_rate(r['events'], r['reported'].get('seconds'))} | "
            f">= {IMPORT_TARGET:,} events/s | {'yes' if r['met'] else '**no**'} |"
            for at, r in enumerate(imports, 1)
        ),
        f"\nMedian: {mid['events_per_s']:,} events/s.\n",
        "## Phases\n",
        f"{len(rounds)} rounds, each every phase in order against replicas started on a fresh copy of the "
        "database and data directory. Each row is the round with the median throughput, with its latencies; "
        "the last column lists every round's throughput. Machine speed (lower is faster) before and after each "
        "round: " + "; ".join(f"{r['speed']['before']} / {r['speed']['after']} s" for r in rounds) + ".\n",
        *base.phase_table(report["phases"]),
    ]
    probed = [r for r in report["phases"] if r.get("store")]
    if probed:
        lines += [
            "What PostgreSQL did in each phase (median round): transactions committed per second, read-only "
            "ones included (`pg_stat_database.xact_commit`: every connection of the database, the replicas' "
            "background work too), WAL flushes to disk per second (`pg_stat_wal.wal_sync`: one per group of "
            "commits) and acknowledged events per WAL flush.\n",
            "| phase | connections | requests/s | transactions/s | WAL flushes/s | events per flush |",
            "|---|---|---|---|---|---|",
            *(
                f"| {r['phase']} | {r['connections']} | {r['req_per_s']:,.0f} | "
                f"{r['store']['commits'] / r['seconds']:,.0f} | {r['store'].get('wal_syncs', 0) / r['seconds']:,.0f} | "
                + (
                    f"{r['acknowledged_events'] / max(r['store'].get('wal_syncs', 0), 1):,.1f} |"
                    if r["phase"].startswith("events")
                    else "- |"
                )
                for r in probed
            ),
            "",
        ]
    for at, r in enumerate(rounds, 1):
        d = r["durability"]
        ok = "all acknowledged events stored, none twice" if d["ok"] else "**LOST OR DUPLICATED EVENTS**"
        lines.append(
            f"Round {at}: {d['acknowledged']:,} events acknowledged; after stopping the replicas PostgreSQL holds "
            f"{d['stored_new']:,} new events, {d['duplicated']:,} event ids twice ({ok}). Replicas' RSS at the end: "
            + ", ".join(f"{m['rss_mb']:.0f} MB (peak {m['peak_rss_mb']:.0f})" for m in r["rss"])
            + ".\n"
        )
    trials = report["kill_trials"]
    if trials:
        lines += [
            "## kill -9 trials\n",
            f"Each trial: {report['replicas']} replicas started afresh, {KILL_CLIENTS} clients posting "
            f"{KILL_BATCH}-event batches with event ids round-robin over them for {KILL_SECONDS:.0f} s, one "
            f"replica killed (SIGKILL to its process group) {KILL_AT} s after they start; a client whose request "
            "failed re-sends the same batch to a surviving replica and goes on. Then the survivors are stopped and "
            "PostgreSQL is counted by event_id.\n",
            "| trial | replicas ready (s) | killed | acknowledged | stored | stored, not acknowledged | missing | "
            "duplicated | failed requests | re-sent | ok |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for t in trials:
            failed = ", ".join(f"{k} {v}" for k, v in t["failures"].items()) or "0"
            lines.append(
                f"| {t['trial']} | {', '.join(map(str, t['start_seconds']))} | replica {t['killed_replica']} | "
                f"{t['acknowledged']:,} | {t['stored']:,} | "
                f"{t['stored_unacknowledged']:,} | {t['missing']:,} | {t['duplicated']:,} | {failed} | "
                f"{t['resent']:,} | {'yes' if t['ok'] else '**no**'} |"
            )
        lost = sum(t["missing"] for t in trials)
        twice = sum(t["duplicated"] for t in trials)
        lines.append(
            f"\nTotal over {len(trials)} trials: {sum(t['acknowledged'] for t in trials):,} events acknowledged, "
            f"{lost:,} missing, {twice:,} stored twice: target (nothing lost, nothing duplicated) "
            f"{'met' if lost == twice == 0 else '**not met**'}.\n"
        )
    if report.get("plot"):
        lines.append(f"![throughput per phase, embedded DuckDB vs PostgreSQL]({report['plot']})\n")
    return "\n".join(lines) + "\n"


def machine() -> str:
    """Cores, CPU model and memory, from /proc."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown CPU",
    )
    kb = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{os.cpu_count()} cores ({model}), {kb / 2**20:.0f} GiB memory"


def _rate(events: int, seconds: float | None) -> str:
    return f"{events / seconds:,.0f}" if seconds else "-"


def plot(report: dict[str, Any], path: Path) -> bool:
    """Throughput per phase, serve.json's embedded run beside this one; False without serve.json."""
    embedded = base.RESULTS / "serve.json"
    if not embedded.exists():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    duck = json.loads(embedded.read_text())["phases"]

    def rate(r: dict[str, Any]) -> float:
        return float(r["events_per_s"] if r["phase"] == "events_batch_1000" else r["req_per_s"])

    labels = [f"{r['phase']}\n({r['connections']} conn)" for r in report["phases"]]
    by_key = {(r["phase"], r["connections"]): rate(r) for r in duck}
    ours = [rate(r) for r in report["phases"]]
    theirs = [by_key.get((r["phase"], r["connections"]), 0.0) for r in report["phases"]]
    fig, ax = plt.subplots(figsize=(11, 5))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], theirs, 0.4, label="DuckDB, 1 server (serve.json)")
    ax.bar([i + 0.2 for i in x], ours, 0.4, label=f"PostgreSQL, {report['replicas']} replicas")
    ax.set_yscale("log")
    ax.set_xticks(list(x), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("req/s (events/s for batches), log scale")
    ax.set_title("REST service throughput per phase (median round)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(args: argparse.Namespace) -> None:
    if args.kill_drive:
        ports, key, trial, seconds, clients, batch = args.kill_drive
        print(
            json.dumps(
                kill_drive(
                    [int(p) for p in ports.split(",")], key, int(trial), float(seconds), int(clients), int(batch)
                )
            )
        )
        return
    if args.replicas < 1:
        raise SystemExit("--replicas must be at least 1")
    if args.kill_trials > 0 and args.replicas < 2:
        raise SystemExit("kill -9 trials need --replicas 2 or more (or --kill-trials 0)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the replicas and PostgreSQL are stopped
    raw = base.world_files()
    WORK.mkdir(parents=True, exist_ok=True)
    for old in WORK.glob("*.log"):
        old.unlink()
    server = start_postgres()
    try:
        print(f"PostgreSQL {server.major} at {server.url('world')}; importing the world…", file=sys.stderr)
        imports = [import_world(server, raw, "world")]
        print(json.dumps(imports[-1]), file=sys.stderr)
        prepared = trained_data(server.url("world"))
        rounds = []
        for at in range(args.rounds):
            if at:
                imports.append(import_world(server, raw, f"import_{at}"))
                admin(server, f'DROP DATABASE IF EXISTS "import_{at}" WITH (FORCE)')
                print(json.dumps(imports[-1]), file=sys.stderr)
            rounds.append(run_round(server, args.replicas, args.seconds, at, args.rounds))
        trials = kill_trials(server, args.replicas, args.kill_trials)
    finally:
        with contextlib.suppress(OSError):
            shutil.copyfile(server.log, WORK / "postgresql.log")
        server.stop()
    report: dict[str, Any] = {
        "command": ".venv/bin/python benchmarks/serve.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "store": "postgresql",
        "replicas": args.replicas,
        "postgresql": {
            "major": server.major,
            "settings": {**PG_SETTINGS, "fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"},
        },
        "world": base.WORLD.model_dump(),
        "prepared": prepared,
        "file_import": imports,
        "rounds": rounds,
        "phases": [base.median_round([r["phases"][at] for r in rounds]) for at in range(len(base.PHASES))],
        "kill_trials": trials,
    }
    base.RESULTS.mkdir(parents=True, exist_ok=True)
    if plot(report, base.RESULTS / "serve-postgres.png"):
        report["plot"] = "serve-postgres.png"
    (base.RESULTS / "serve-postgres.json").write_text(json.dumps(report, indent=2))
    (base.RESULTS / "serve-postgres.md").write_text(markdown(report))
    print(markdown(report))
