"""Start-up benchmark of the command line: how long a person waits before any work begins.

Each case runs in a fresh child process (wall clock, from spawn to exit), ``--runs`` times after
one unrecorded warm-up run (which fills the OS file cache and writes bytecode caches), and is
reported as the best and the median run:

- ``python -c pass``: the interpreter alone, the floor every other case stands on;
- ``python -c "import shopsense.cli"``: importing the command line module;
- ``shopsense --help``: the console script printing the command list;
- ``shopsense stats``: a real command on a small store, made fresh in a temporary folder by
  importing tests/data/online_retail_sample.csv with the CLI before the timing starts.

``--baseline REV`` also times the source of a git revision (``git archive REV src`` unpacked into a
temporary folder and put first on PYTHONPATH, same interpreter and packages), alternating a run of
each so both see the same machine load; the tables then show both.

Writes benchmarks/results/startup.md and startup.json (``make bench-startup``); ``--name`` writes another pair.

    .venv/bin/python benchmarks/startup.py                       # about 20 seconds
    .venv/bin/python benchmarks/startup.py --baseline b073b04    # this tree against an older commit
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SAMPLE = ROOT / "tests" / "data" / "online_retail_sample.csv"
SHOPSENSE = Path(sys.executable).with_name("shopsense")
CURRENT = "this tree"


def _env(src: Path | None) -> dict[str, str]:
    """The children's environment: as `make` sets it, with ``src`` first on the import path when given."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _check(command: list[str], env: dict[str, str]) -> str:
    """Run a set-up command and return its stdout; stop with its output when it fails."""
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _once(command: list[str], env: dict[str, str]) -> float:
    """Wall-clock seconds of one run of ``command``."""
    began = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    took = time.perf_counter() - began
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr.decode()}")
    return took


def _shown(command: list[str], store: Path) -> str:
    """The command as a person would type it (venv paths and the temporary folder shortened)."""
    words = [
        "python" if w == sys.executable else "shopsense" if w == str(SHOPSENSE) else "<tmp>" if w == str(store) else w
        for w in command
    ]
    return " ".join(f"'{w}'" if " " in w else w for w in words)


def _cases(store: Path) -> dict[str, list[str]]:
    return {
        "python -c pass (interpreter floor)": [sys.executable, "-c", "pass"],
        "import shopsense.cli": [sys.executable, "-c", "import shopsense.cli"],
        "shopsense --help": [str(SHOPSENSE), "--help"],
        "shopsense stats (small fresh store)": [str(SHOPSENSE), "--data-dir", str(store), "stats"],
    }


def _unpack(revision: str, into: Path) -> Path:
    """``src/`` of a git revision, unpacked under ``into`` (git is only read)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per case (after one warm-up run)")
    parser.add_argument("--name", default="startup", help="results file stem under benchmarks/results")
    parser.add_argument("--baseline", metavar="REV", help="also time the source of this git revision, alternately")
    ns = parser.parse_args()
    if not SHOPSENSE.exists():
        sys.exit(f"no console script at {SHOPSENSE}: install shopsense into this interpreter's environment first")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shopsense-startup-") as tmp:
        trees: dict[str, Path | None] = {CURRENT: None}
        if ns.baseline:
            trees[ns.baseline] = _unpack(ns.baseline, Path(tmp) / "baseline")
        envs = {label: _env(src) for label, src in trees.items()}
        sources = {
            label: _check([sys.executable, "-c", "import shopsense; print(shopsense.__file__)"], env).strip()
            for label, env in envs.items()
        }
        stores = {label: Path(tmp) / f"store-{n}" for n, label in enumerate(trees)}
        for label, env in envs.items():  # each tree makes its own store, in its own format
            _check([str(SHOPSENSE), "--data-dir", str(stores[label]), "init"], env)
            _check(
                [str(SHOPSENSE), "--data-dir", str(stores[label]), "import", "dataset", "online-retail", str(SAMPLE)],
                env,
            )
        for case in _cases(stores[CURRENT]):
            seconds: dict[str, list[float]] = {label: [] for label in trees}
            for attempt in range(ns.runs + 1):
                for label, env in envs.items():  # alternating, so a burst of load hits both trees alike
                    took = _once(_cases(stores[label])[case], env)
                    if attempt:  # the first run only warms caches
                        seconds[label].append(took)
            for label, values in seconds.items():
                row = {
                    "case": case,
                    "tree": label,
                    "command": _shown(_cases(stores[label])[case], stores[label]),
                    "runs": len(values),
                    "best_s": round(min(values), 3),
                    "median_s": round(statistics.median(values), 3),
                    "seconds": [round(s, 3) for s in values],
                }
                rows.append(row)
                print(row, flush=True)
    meta = {
        "command": " ".join(["python benchmarks/startup.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores",
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "runs": ns.runs,
        "shopsense_imported_from": sources,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{ns.name}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    both = len(trees) > 1
    lines = [
        "# Start-up benchmark",
        "",
        f"Command: `{meta['command']}` — {meta['machine']}; load average {meta['load_average_after']} at the end "
        f"(1, 5, 15 min). Each case runs in a fresh process, {ns.runs} timed runs after one warm-up run; wall clock "
        "from spawn to exit; seconds.",
        "",
    ]
    if both:
        lines += [
            f"`{ns.baseline}`: that commit's `src/` first on PYTHONPATH (same interpreter and packages), its runs "
            "alternating with this tree's.",
            "",
            f"| case | command | best, {ns.baseline} | median, {ns.baseline} | best, {CURRENT} | median, {CURRENT} |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for case in _cases(Path("<tmp>")):
            old, new = (next(r for r in rows if r["case"] == case and r["tree"] == t) for t in (ns.baseline, CURRENT))
            lines.append(
                f"| {case} | `{new['command']}` | {old['best_s']:.3f} | {old['median_s']:.3f} | "
                f"{new['best_s']:.3f} | {new['median_s']:.3f} |"
            )
    else:
        lines += ["| case | command | best | median |", "|---|---|---:|---:|"]
        lines += [f"| {r['case']} | `{r['command']}` | {r['best_s']:.3f} | {r['median_s']:.3f} |" for r in rows]
    (RESULTS / f"{ns.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
