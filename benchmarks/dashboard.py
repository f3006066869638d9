"""Dashboard benchmark: each page's server time on a store holding both Online Retail files (~1M events).

Builds the store once under ``benchmarks/.work/dashboard`` (reused by later runs): both files of
``../shared/datasets/online_retail`` imported with ``shopsense import dataset online-retail``, the default
pipeline trained, customer profiles built. Then it starts ``shopsense serve``, signs in with Chromium
(``/usr/bin/chromium`` through Playwright) and loads every dashboard page ``--loads`` times after one
warm-up load, reading the browser's navigation timing: the server time is ``responseStart - requestStart``
(from the request sent to the first byte of the page), the page time ``loadEventEnd - startTime``. Pages a
build lacks (404) are reported as missing. It saves a screenshot of each page to ``docs/img/dashboard-<page>.png``.

    .venv/bin/python benchmarks/dashboard.py [--loads 20]

Writes ``benchmarks/results/dashboard.md`` and ``dashboard.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shopsense.services.keys import KeyRing  # noqa: E402
from tests.servers import ServerProcess  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "dashboard"
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "img"
DATASETS = ROOT.parent / "shared" / "datasets" / "online_retail"
FILES = ("online_retail_ii_2009_2010.csv.gz", "online_retail.csv.gz")
CHROMIUM = "/usr/bin/chromium"
TARGET_P95_MS = 1_000.0
CUSTOMER = "14646"
"""A customer of both files with a long history (the Customers page shows one)."""
ITEM = "85123A"
"""The most bought item of Online Retail (WHITE HANGING HEART T-LIGHT HOLDER)."""
PAGES = {
    "overview": "/",
    "customers": f"/customers?user={CUSTOMER}",
    "items": f"/items?item={ITEM}",
    "segments": "/segments",
    "audiences": "/audiences",
    "campaigns": "/campaigns",
    "models": "/models",
    "data": "/data",
}
"""Each page as the benchmark loads it (the Customers and Items pages with one customer or item open)."""


class LoggedServer(ServerProcess):
    """``shopsense serve`` with its log in ``benchmarks/.work/dashboard/server.log`` (never a full pipe)."""

    def launch(self) -> LoggedServer:
        log = (WORK / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shopsense", "serve", "--port", str(self.port), *self.extra],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        return self


def shopsense(data: Path, *args: str) -> float:
    """Run a CLI command on ``data``; its seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "shopsense", "--data-dir", str(data), *args], check=True)
    return round(time.perf_counter() - started, 1)


def prepare() -> tuple[Path, dict[str, Any]]:
    """Import, train and build profiles once; later runs reuse the data directory."""
    data = WORK / "data"
    marker = WORK / "ready.json"
    if marker.exists() and json.loads(marker.read_text()).get("files") == list(FILES):
        return data, json.loads(marker.read_text())
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    sources = [str(DATASETS / name) for name in FILES]
    steps = {
        "import_seconds": shopsense(data, "import", "dataset", "online-retail", *sources),
        "train_seconds": shopsense(data, "train"),
        "profiles_seconds": shopsense(data, "profiles", "build"),
    }
    from shopsense.services.data import DataService
    from shopsense.settings import load_settings

    service = DataService(load_settings(None, data_dir=data))
    summary = service.stats()
    service.close()
    ready = {"files": list(FILES), "events": summary.events, "users": summary.users, "items": summary.items, **steps}
    marker.write_text(json.dumps(ready))
    return data, ready


def measure(url: str, key: str, loads: int) -> dict[str, Any]:
    """Each page's navigation timings over ``loads`` loads (after one warm-up), and a screenshot of each."""
    from playwright.sync_api import sync_playwright

    found: dict[str, Any] = {}
    IMAGES.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(base_url=url, viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(60_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto("/signin")
        page.fill("input[name=key]", key)
        with page.expect_navigation():
            page.click("form[action='/signin'] button[type=submit]")
        for name, path in PAGES.items():
            errors.clear()
            first = page.goto(path)
            if first is None or first.status == 404:
                found[name] = {"path": path, "missing": True}
                continue
            page.wait_for_load_state("networkidle")
            server, total = [], []
            for _ in range(loads):
                page.goto(path)
                page.wait_for_load_state("load")
                timing = page.evaluate(
                    "() => { const t = performance.getEntriesByType('navigation')[0];"
                    " return [t.responseStart - t.requestStart, t.loadEventEnd - t.startTime]; }"
                )
                server.append(float(timing[0]))
                total.append(float(timing[1]))
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(IMAGES / f"dashboard-{name}.png"), full_page=False)
            found[name] = {
                "path": path,
                "status": first.status,
                "loads": loads,
                "server_ms": _stats(server),
                "page_ms": _stats(total),
                "console_errors": sorted(set(errors)),
            }
        browser.close()
    return found


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))], 1)

    return {"p50": round(statistics.median(ordered), 1), "p95": pick(0.95), "max": round(ordered[-1], 1)}


def report(command: str, ready: dict[str, Any], pages: dict[str, Any], loads: int) -> str:
    lines = [
        "# Dashboard: server time per page",
        "",
        f"Command: `{command}`",
        "",
        f"Store: both Online Retail files ({', '.join(FILES)}): {ready['events']:,} events, {ready['users']:,} "
        f"customers, {ready['items']:,} items in the embedded DuckDB store; default pipeline trained, profiles "
        f"built (import {ready['import_seconds']} s, training {ready['train_seconds']} s, profiles "
        f"{ready['profiles_seconds']} s). Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}.",
        "",
        f"Each page loaded {loads} times in Chromium after one warm-up load, signed in with an admin key. Server "
        "time: navigation timing `responseStart - requestStart` (request sent to first byte of the page); page "
        "time: `loadEventEnd - startTime` (everything, plots drawn; plotly.js comes from the browser's cache). "
        f"Target: server time p95 <= {TARGET_P95_MS:.0f} ms.",
        "",
        "| page | path | server p50 ms | server p95 ms | server max ms | page p50 ms | page p95 ms | meets target |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, row in pages.items():
        if row.get("missing"):
            lines.append(f"| {name} | `{row['path']}` | — | — | — | — | — | page missing (404) |")
            continue
        s, p = row["server_ms"], row["page_ms"]
        ok = "yes" if s["p95"] <= TARGET_P95_MS else "**no**"
        lines.append(
            f"| {name} | `{row['path']}` | {s['p50']} | {s['p95']} | {s['max']} | {p['p50']} | {p['p95']} | {ok} |"
        )
    noisy = {n: r["console_errors"] for n, r in pages.items() if r.get("console_errors")}
    lines += ["", f"Console errors: {json.dumps(noisy) if noisy else 'none'}.", ""]
    lines += ["Screenshots: `docs/img/dashboard-<page>.png`.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=int, default=20, help="measured loads per page (after one warm-up)")
    args = parser.parse_args()
    command = ".venv/bin/python benchmarks/dashboard.py" + (f" --loads {args.loads}" if args.loads != 20 else "")
    data, ready = prepare()
    key, _ = KeyRing(data / "keys.json").create("dashboard benchmark", ["admin"])
    server = LoggedServer({**os.environ, "SHOPSENSE_DATA_DIR": str(data)}).start()
    try:
        pages = measure(server.url, key, args.loads)
    finally:
        server.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "store": ready, "loads": args.loads, "target_p95_ms": TARGET_P95_MS, "pages": pages}
    (RESULTS / "dashboard.json").write_text(json.dumps(payload, indent=2) + "\n")
    text = report(command, ready, pages, args.loads)
    (RESULTS / "dashboard.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
