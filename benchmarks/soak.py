"""Soak test of the REST service: does its memory stay bounded under steady mixed traffic?

World: a small synthetic shop (20k users, 10k items, 200k events), imported into a fresh embedded store and the
default pipeline trained on it (prepared once under benchmarks/.work/soak and copied for each run, since the
run writes and erases). The server runs as ``shopsense serve`` on 127.0.0.1 (benchmarks/serve.py starts and
stops it); ``--clients`` threads, each with its own :class:`shopsense.client.Client`, send about ``--rate``
requests per second in all for ``--minutes``:

- single events and batches of 50 (known and new users: what the server keeps grows, by design);
- recommendations with varied ``k`` (10…100) and filters (``min_price``, ``max_price``, ``category``), so
  most questions are new and must be computed and cached;
- similar items, user histories, and erasures of users the run created.

Every ``--sample`` seconds it reads the server's RSS (/proc) and what ``GET /metrics`` says the server holds
(``shopsense_memory_held``: events in the live histories and their arrays' bytes, cached answers and their
bytes). The verdict compares the RSS slope after warm-up with the growth the kept data accounts for
(events times the server's bytes per held event, plus the cache's, ids', store's and answer log's bytes).
Writes benchmarks/results/soak.md, soak.json and soak.png (``--out`` elsewhere).

To find where unexplained growth sits, ``--python-malloc`` makes Python's objects come from glibc (so that
glibc's count includes them) and ``--trace`` runs the server under tracemalloc (Python's bytes in each
sample; its own bookkeeping, a few dozen bytes per live object, then shows in glibc's count).

    .venv/bin/python benchmarks/soak.py                 # 30 minutes (plus a few to prepare the first time)
    .venv/bin/python benchmarks/soak.py --minutes 2     # a quick check
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import serve as base  # benchmarks/serve.py: server start/stop, RSS

ROOT = base.ROOT

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from shopsense.client import Client, ClientError  # noqa: E402
from shopsense.domain import RecordKind  # noqa: E402
from shopsense.ingest.mapping import load_mapping  # noqa: E402
from shopsense.ingest.synthetic import GeneratorConfig, generate  # noqa: E402
from shopsense.services.data import DataService  # noqa: E402
from shopsense.services.keys import KeyRing  # noqa: E402
from shopsense.settings import load_settings  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "soak"
RESULTS = base.RESULTS
WORLD = GeneratorConfig(users=20_000, items=10_000, events=200_000, days=60, seed=23)
MIX = {"event": 30, "batch": 4, "recommend": 44, "similar": 10, "history": 10, "erase": 2}
"""Relative weights of the request kinds."""
BATCH = 50
KEPT = ("cache_bytes", "ids_bytes", "store_bytes", "answers_log_bytes")
"""What the server keeps by design besides the events' arrays, as /metrics counts it."""
TYPES = ["view"] * 8 + ["cart", "purchase"]


def prepare() -> Path:
    """Generate, import and train once; later runs copy the trained data directory."""
    template, marker = WORK / "template", WORK / "ready.json"
    if marker.exists() and json.loads(marker.read_text()).get("world") == WORLD.model_dump():
        return template
    shutil.rmtree(WORK, ignore_errors=True)
    print("generating, importing and training the soak world…", file=sys.stderr)
    generate(WORLD, WORK / "raw")
    service = DataService(load_settings(None, data_dir=template))
    for kind, name in ((RecordKind.ITEMS, "items"), (RecordKind.EVENTS, "events")):
        service.import_file(WORK / "raw" / f"{name}.parquet", load_mapping(None, kind, {}))
    from shopsense.services.recommendation import RecommendationService

    RecommendationService(service).train("default")
    service.close()
    marker.write_text(json.dumps({"world": WORLD.model_dump()}))
    return template


class Traffic:
    """The request mix: what exists (users, items, prices, categories) and the users this run created."""

    def __init__(self, seed: int) -> None:
        items = pq.read_table(WORK / "raw" / "items.parquet", columns=["item_id", "price", "category"])
        self.items = items.column("item_id").to_pylist()
        self.prices = np.quantile(np.asarray(items.column("price").to_pylist(), float), np.linspace(0, 0.9, 500))
        self.categories = sorted({c.split(" > ")[0] for c in items.column("category").to_pylist() if c})
        self.users = [f"user-{i}" for i in range(WORLD.users)]
        self.created: list[str] = []
        self.lock = threading.Lock()
        self.counter = 0
        self.rng = random.Random(seed)

    def user(self, rng: random.Random, new: list[str] | None = None) -> str:
        """A known user (Zipf-like: a few are very active), or one this run created; given ``new`` (an event
        being written), sometimes a new one, added to ``new``: it may be erased only once its event is sent."""
        if rng.random() < 0.2:
            with self.lock:
                if new is not None:
                    self.counter += 1
                    new.append(f"soak-{self.counter}")
                    return new[-1]
                if self.created:
                    return rng.choice(self.created)
        return self.users[min(int(rng.paretovariate(1.2)) - 1, len(self.users) - 1) * 7 % len(self.users)]

    def send(self, client: Client, rng: random.Random, count: int) -> None:
        """``count`` events in one request; the users they create become erasable once it is acknowledged."""
        new: list[str] = []
        events = [
            {"user_id": self.user(rng, new), "item_id": rng.choice(self.items), "type": rng.choice(TYPES)}
            for _ in range(count)
        ]
        client.send_events(events, batch_size=max(count, 1))
        with self.lock:
            self.created.extend(new)

    def request(self, client: Client, rng: random.Random) -> str:
        kind = rng.choices(list(MIX), list(MIX.values()))[0]
        if kind in ("event", "batch"):
            self.send(client, rng, 1 if kind == "event" else BATCH)
        elif kind == "recommend":
            params: dict[str, Any] = {"min_price": round(float(rng.choice(self.prices)), 2)}
            if rng.random() < 0.3:
                params["max_price"] = params["min_price"] + round(rng.uniform(5, 200), 2)
            if rng.random() < 0.2:
                params["category"] = rng.choice(self.categories)
            client.recommend(self.user(rng), rng.choice([10, 20, 50, 100]), **params)
        elif kind == "similar":
            try:
                client.similar(rng.choice(self.items), rng.choice([10, 50]))
            except ClientError as exc:  # an item the model does not know
                if exc.status != 404:
                    raise
        elif kind == "history":
            try:
                client.history(self.user(rng), 50)
            except ClientError as exc:
                if exc.status != 404:
                    raise
        else:
            with self.lock:
                victim = self.created.pop(rng.randrange(len(self.created))) if self.created else None
            if victim is not None:
                client.erase_user(victim)
        return kind


def drive(url: str, key: str, traffic: Traffic, rate: float, clients: int, stop: threading.Event) -> dict[str, Any]:
    """``clients`` threads, each pacing ``rate / clients`` requests per second until ``stop``."""
    counts: dict[str, int] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        rng, gap = random.Random(index), clients / rate
        with Client(url, key, timeout=30) as client:
            due = time.monotonic() + rng.uniform(0, gap)
            while not stop.is_set():
                stop.wait(max(due - time.monotonic(), 0))
                if stop.is_set():
                    return
                due = max(due + gap, time.monotonic() - gap)  # behind: no burst to catch up
                try:
                    kind = traffic.request(client, rng)
                except (ClientError, OSError) as exc:
                    kind = "error"
                    with lock:
                        errors.append(repr(exc)[:300])
                with lock:
                    counts[kind] = counts.get(kind, 0) + 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"requests": counts, "errors": errors[:20], "error_count": len(errors)}


def held(port: int) -> dict[str, float]:
    """What the server's /metrics says it holds (``shopsense_memory_held``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("shopsense_memory_held{"):
            what = line.split('what="', 1)[1].split('"', 1)[0]
            found[what] = float(line.rsplit(" ", 1)[1])
    return found


def sample(pid: int, port: int, started: float) -> dict[str, float]:
    """RSS, its anonymous part (what the process allocated, not the model files it maps) and what it holds."""
    status = Path(f"/proc/{pid}/status").read_text()
    anon = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("RssAnon:"))
    return {"t_s": round(time.monotonic() - started, 1), **base.rss_mb(pid), "anon_mb": anon / 1024, **held(port)}


def slope(xs: list[float], ys: list[float]) -> float:
    return float(np.polyfit(xs, ys, 1)[0]) if len(xs) > 1 and len(set(xs)) > 1 else 0.0


def verdict(samples: list[dict[str, float]], warmup_s: float) -> dict[str, Any]:
    """RSS growth after warm-up against what the kept data accounts for, per minute."""
    after = [s for s in samples if s["t_s"] >= warmup_s] or samples
    minutes = [s["t_s"] / 60 for s in after]
    rss = slope(minutes, [s["rss_mb"] for s in after])
    anon = slope(minutes, [s["anon_mb"] for s in after])
    events = slope(minutes, [s.get("events", 0) for s in after])
    cache = slope(minutes, [s.get("cache_bytes", 0) / 2**20 for s in after])
    ids = slope(minutes, [s.get("ids_bytes", 0) / 2**20 for s in after])
    store = slope(minutes, [s.get("store_bytes", 0) / 2**20 for s in after])
    logged = slope(minutes, [s.get("answers_log_bytes", 0) / 2**20 for s in after])
    in_use = slope(minutes, [s.get("malloc_in_use_bytes", 0) / 2**20 for s in after])
    kept = slope(minutes, [s.get("malloc_free_bytes", 0) / 2**20 for s in after])
    arrow = slope(minutes, [s.get("arrow_bytes", 0) / 2**20 for s in after])
    blocks = slope(minutes, [s.get("python_blocks", 0) for s in after])
    traced = slope(minutes, [s.get("python_traced_bytes", 0) / 2**20 for s in after])
    last = after[-1]
    per_event = last.get("events_bytes", 0) / last["events"] if last.get("events") else 0.0
    explained = events * per_event / 2**20 + cache + ids + store + logged
    unexplained = rss - explained
    span = (after[-1]["t_s"] - after[0]["t_s"]) / 60
    grew = after[-1]["rss_mb"] - after[0]["rss_mb"]
    rss_per_event = grew * 2**20 / (after[-1]["events"] - after[0]["events"]) if events > 0 and grew > 0 else None
    bounded = unexplained * 60 < max(50.0, 0.05 * after[0]["rss_mb"])
    cache_ok = all(s.get("cache_bytes", 0) <= s.get("cache_max_bytes", float("inf")) for s in samples)
    words = (
        f"After {warmup_s / 60:.1f} min of warm-up, over {span:.1f} min, RSS changed {rss:+.2f} MB/min "
        f"({anon:+.2f} MB/min anonymous, the rest pages of mapped files). The events "
        f"kept grew {events:,.0f}/min at {per_event:.0f} B each as the server accounts its arrays "
        f"({events * per_event / 2**20:+.2f} MB/min), their ids {ids:+.2f} MB/min, the store's buffers and "
        f"remembered keys {store:+.2f} MB/min, the answer cache {cache:+.2f} MB/min, the answers remembered "
        f"for impressions {logged:+.2f} MB/min: "
        f"{explained:+.2f} MB/min explained, {unexplained:+.2f} MB/min not ({unexplained * 60:+.0f} MB/hour). "
    )
    if rss_per_event is not None:
        words += (
            f"Put all of RSS's growth on the events and each cost {rss_per_event:,.0f} B (ids and allocator "
            "slack included, which the arrays' count leaves out). "
        )
    words += (
        f"Where RSS went, by the allocators' own counts: glibc malloc in use {in_use:+.2f} MB/min and freed but "
        f"kept {kept:+.2f} MB/min, Arrow's buffers {arrow:+.2f} MB/min, Python's live blocks {blocks:+,.0f}/min"
        + (f" ({traced:+.2f} MB/min traced). " if "python_traced_bytes" in last else ". ")
    )
    words += (
        "Verdict: no growth beyond the data kept at this length (under 50 MB/hour or 5% of RSS)."
        if bounded
        else "Verdict: RSS grows faster than the data kept explains; look for a leak."
    )
    return {
        "rss_mb_per_min": rss,
        "anon_mb_per_min": anon,
        "events_per_min": events,
        "accounted_bytes_per_event": per_event,
        "cache_mb_per_min": cache,
        "ids_mb_per_min": ids,
        "malloc_in_use_mb_per_min": in_use,
        "malloc_kept_free_mb_per_min": kept,
        "arrow_mb_per_min": arrow,
        "python_blocks_per_min": blocks,
        "python_traced_mb_per_min": traced if "python_traced_bytes" in last else None,
        "store_mb_per_min": store,
        "answers_log_mb_per_min": logged,
        "explained_mb_per_min": explained,
        "unexplained_mb_per_min": unexplained,
        "rss_bytes_per_event_if_all_events": rss_per_event,
        "bounded": bounded,
        "cache_within_bound": cache_ok,
        "words": words,
    }


def markdown(report: dict[str, Any]) -> str:
    v = report["verdict"]
    lines = [
        "# Soak: memory under steady mixed traffic\n",
        f"{report['started']}, {report['minutes']} min at ~{report['rate']} req/s from {report['clients']} clients "
        f"(achieved {report['achieved_rate']:.1f} req/s), world {report['world']['users']:,} users / "
        f"{report['world']['items']:,} items / {report['world']['events']:,} events, `serve.cache_mb` "
        f"{report['cache_mb']}. Command: `{report['command']}`.\n",
        f"Requests: {json.dumps(report['requests'])}; errors: {report['error_count']}.\n",
        f"{v['words']} The answer cache stayed within its bound in every sample: {v['cache_within_bound']}.\n",
        "![RSS and what the data accounts for](soak.png)\n",
        "| minute | RSS MB | anonymous MB | peak RSS MB | events held | events MB (arrays) | ids MB | store MB "
        "| answers | cache MB | log MB "
        "| malloc in use MB | malloc kept free MB | Arrow MB | Python blocks | Python traced MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_minute: dict[int, dict[str, float]] = {}
    for s in report["samples"]:
        by_minute[int(s["t_s"] // 60)] = s  # the last sample of each minute
    for minute, s in sorted(by_minute.items()):
        lines.append(
            f"| {minute} | {s['rss_mb']:.0f} | {s['anon_mb']:.0f} | {s['peak_rss_mb']:.0f} | "
            f"{s.get('events', 0):,.0f} | "
            f"{s.get('events_bytes', 0) / 2**20:.1f} | {s.get('ids_bytes', 0) / 2**20:.1f} | "
            f"{s.get('store_bytes', 0) / 2**20:.1f} | {s.get('cache_entries', 0):,.0f} | "
            f"{s.get('cache_bytes', 0) / 2**20:.1f} | {s.get('answers_log_bytes', 0) / 2**20:.1f} | "
            f"{s.get('malloc_in_use_bytes', 0) / 2**20:.0f} | "
            f"{s.get('malloc_free_bytes', 0) / 2**20:.0f} | {s.get('arrow_bytes', 0) / 2**20:.1f} | "
            f"{s.get('python_blocks', 0):,.0f} | "
            + (f"{s['python_traced_bytes'] / 2**20:.1f} |" if "python_traced_bytes" in s else "- |")
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    first = samples[0]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(minutes, [s["rss_mb"] for s in samples], label="server RSS")
    ax.plot(minutes, [s["anon_mb"] for s in samples], label="its anonymous part (not mapped files)")
    accounted = [
        first["rss_mb"]
        + (s.get("events_bytes", 0) - first.get("events_bytes", 0)) / 2**20
        + sum(s.get(what, 0) - first.get(what, 0) for what in KEPT) / 2**20
        for s in samples
    ]
    ax.plot(minutes, accounted, "--", label="first RSS + growth of the data kept (events, ids, store, cache, log)")
    ax.plot(minutes, [s.get("cache_bytes", 0) / 2**20 for s in samples], ":", label="answer cache")
    ax.axvline(report["warmup_s"] / 60, color="grey", lw=0.8)
    ax.set_xlabel("minutes")
    ax.set_ylabel("MB")
    ax.set_title("shopsense serve under steady mixed load")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second, all clients together")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--cache-mb", type=float, default=None, help="serve.cache_mb (default: the setting's)")
    parser.add_argument(
        "--trace", action="store_true", help="run the server under tracemalloc: Python's bytes in each sample (slower)"
    )
    parser.add_argument(
        "--python-malloc",
        action="store_true",
        help="PYTHONMALLOC=malloc: Python's objects from glibc, so that glibc's count includes them (a diagnosis)",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS / "soak", help="where the .md, .json and .png go (a path without suffix)"
    )
    args = parser.parse_args()
    template = prepare()
    run = WORK / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(template, run / "data")
    key, _ = KeyRing(run / "data" / "keys.json").create("soak", ["admin"])
    port = base.free_port()
    env = {} if args.cache_mb is None else {"SHOPSENSE_SERVE__CACHE_MB": str(args.cache_mb)}
    env |= {"PYTHONTRACEMALLOC": "1"} if args.trace else {}
    env |= {"PYTHONMALLOC": "malloc"} if args.python_malloc else {}
    log = run / "server.log"
    process = base.launch_server(run / "data", port, log, env)
    try:
        base.wait_ready(process, port, log)
        traffic, stop = Traffic(7), threading.Event()
        started = time.monotonic()
        samples = [sample(process.pid, port, started)]
        outcome: dict[str, Any] = {}
        load = threading.Thread(
            target=lambda: outcome.update(
                drive(f"http://127.0.0.1:{port}", key, traffic, args.rate, args.clients, stop)
            ),
            daemon=True,
        )
        load.start()
        end = started + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(args.sample, max(end - time.monotonic(), 0)))
            samples.append(sample(process.pid, port, started))
            if process.poll() is not None:
                raise SystemExit(f"the server exited ({process.returncode}); {log}")
        stop.set()
        load.join()
        elapsed = time.monotonic() - started
    finally:
        base.stop_server(process)
    cache_mb = args.cache_mb if args.cache_mb is not None else load_settings(None).serve.cache_mb
    for s in samples:
        s["cache_max_bytes"] = cache_mb * 2**20
    warmup_s = min(300.0, args.minutes * 60 / 4)
    total = sum(outcome.get("requests", {}).values())
    report = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "minutes": args.minutes,
        "command": " ".join([".venv/bin/python", "benchmarks/soak.py", *sys.argv[1:]]),
        "rate": args.rate,
        "clients": args.clients,
        "achieved_rate": total / elapsed,
        "world": WORLD.model_dump(),
        "cache_mb": cache_mb,
        "warmup_s": warmup_s,
        **outcome,
        "samples": samples,
        "verdict": verdict(samples, warmup_s),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    args.out.with_suffix(".md").write_text(markdown(report).replace("(soak.png)", f"({args.out.name}.png)"))
    print(report["verdict"]["words"])


if __name__ == "__main__":
    main()
