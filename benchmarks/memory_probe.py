"""The soak's traffic without HTTP: is the serving core's memory flat once its cache is full?

A diagnostic beside benchmarks/soak.py. It opens the soak world (``soak.prepare``) in this process as the
server does (a :class:`shopsense.services.shop.Shop` and its serving service, glibc arenas capped alike)
and has ``--threads`` threads call the service directly: half recommendations with price filters (new
questions, cached under ``--cache-mb``), a quarter single events (a fifth from new users), user histories,
similar items and erasures of the users it created. Every ``--step`` calls it prints the process's
anonymous RSS, glibc's bytes in use and kept free (after a trim), Python's live blocks and the cache, and
writes the table to benchmarks/results/memory-probe.md. Set against the soak's per-request growth, what it
does not show is the HTTP layer's.

    .venv/bin/python benchmarks/memory_probe.py --calls 15000 --cache-mb 64
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import soak  # benchmarks/soak.py: the world

from shopsense.services import allocator
from shopsense.services.serving import ServingService
from shopsense.services.shop import Shop
from shopsense.settings import load_settings


def anon_mb() -> float:
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:")) / 1024


class Calls:
    """The soak's mix of work, called on the service directly."""

    def __init__(self, svc: ServingService) -> None:
        items = pq.read_table(soak.WORK / "raw" / "items.parquet", columns=["item_id", "price"])
        self.svc, self.items = svc, items.column("item_id").to_pylist()
        self.prices = np.quantile(np.asarray(items.column("price").to_pylist(), float), np.linspace(0, 0.9, 500))
        self.users = [f"user-{i}" for i in range(soak.WORLD.users)]
        self.created: list[str] = []

    def run(self, seed: int, calls: int) -> None:
        rng = random.Random(seed)
        for n in range(calls):
            draw = rng.random()
            if draw < 0.5:
                rules = {"min_price": round(float(rng.choice(self.prices)), 2)}
                self.svc.recommend(rng.choice(self.users), rng.choice([10, 20, 50, 100]), rules=rules)
            elif draw < 0.75:
                user = f"probe-{seed}-{n}" if rng.random() < 0.2 else rng.choice(self.users)
                table, _ = self.svc.checker.validate(
                    [{"user_id": user, "item_id": rng.choice(self.items), "type": "view"}]
                )
                self.svc.submit_events(table).result()
                if user.startswith("probe-"):
                    self.created.append(user)
            elif draw < 0.85:
                self.svc.user_history(rng.choice(self.users), 50).result()
            elif draw < 0.95:
                with contextlib.suppress(LookupError):  # an item the model does not know (KeyError is one)
                    self.svc.similar(rng.choice(self.items), 10)
            elif self.created:
                self.svc.erase_user(self.created.pop())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=15_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--step", type=int, default=500, help="calls between two lines")
    parser.add_argument("--cache-mb", type=float, default=64.0)
    args = parser.parse_args()
    run = soak.WORK / "probe"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(soak.prepare(), run)
    settings = load_settings(None, data_dir=run, serve={"cache_mb": args.cache_mb, "reload_seconds": 0})
    allocator.limit_arenas(settings.serve.malloc_arenas)
    shop = Shop(settings, server=True)
    calls, started = Calls(shop.serving()), time.monotonic()
    command = " ".join([".venv/bin/python", "benchmarks/memory_probe.py", *sys.argv[1:]])
    lines = [
        "# The serving core under the soak's mix, without HTTP\n",
        f"Command: `{command}` ({args.threads} threads). Memory after each step, glibc trimmed first.\n",
        "| calls | seconds | anonymous RSS MB | malloc in use MB | malloc kept free MB | Python blocks "
        "| cache MB | cached answers |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    try:
        for done in range(0, args.calls + 1, args.step):
            if done:
                share = args.step // args.threads
                workers = [threading.Thread(target=calls.run, args=(done * 10 + t, share)) for t in range(args.threads)]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
            allocator.trim()
            heap, held = allocator.heap(), calls.svc.held()
            lines.append(
                f"| {done:,} | {time.monotonic() - started:.0f} | {anon_mb():.0f} "
                f"| {heap['malloc_in_use'] / 2**20:.1f} | {heap['malloc_free'] / 2**20:.1f} "
                f"| {sys.getallocatedblocks():,} "
                f"| {held['cache_bytes'] / 2**20:.1f} | {held['cache_entries']:,} |"
            )
            print(lines[-1], flush=True)
    finally:
        shop.close()
    soak.RESULTS.mkdir(parents=True, exist_ok=True)
    (soak.RESULTS / "memory-probe.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
