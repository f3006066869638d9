"""Peer: cornac 3.0.1's models, run in a virtualenv of their own through a file protocol.

Cornac and what it pulls in (powerlaw, matplotlib, its own torch models) must stay out of the project's dependency
set, so ``ensure_env`` builds a separate venv once and ``run_cornac`` drives ``cornac_worker.py`` inside it on a job
directory (inputs and outputs are described in README.md beside this file).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("cornac_worker.py")
# torch 2.13.0+cpu is the CPU wheel kept on this machine's disk; the local-version label stops pip from falling back
# to PyPI's torch 2.13.0, a CUDA build of several GB. pyarrow reads the job's parquet files.
REQUIREMENTS = ("cornac==3.0.1", "torch==2.13.0+cpu", "pyarrow==26.0.1")
CHECK = (
    "import cornac, torch, pyarrow; "
    "assert cornac.__version__ == '3.0.1', cornac.__version__; "
    "assert torch.__version__ == '2.13.0+cpu', torch.__version__"
)


def _say(message: str) -> None:
    print(f"[cornac-peer] {message}", file=sys.stderr, flush=True)


def _works(python: Path) -> bool:
    """The venv is reusable when its interpreter imports the pinned cornac and torch."""
    if not python.exists():
        return False
    return subprocess.run([str(python), "-c", CHECK], capture_output=True).returncode == 0


def _run(command: list[str], what: str) -> None:
    """Run an install step; on failure raise with the tail of its output, which is where pip says why."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"cornac peer: {what} failed (exit {done.returncode}):\n{tail}")


def ensure_env(work: Path) -> Path:
    """Create (once) the cornac venv at ``work / "cornac-venv"`` and return its python.

    A venv that already imports the pinned versions is reused as is; a broken or partial one is rebuilt. The venv
    is made from the interpreter running this code (the project's Python 3.11, which cornac's and torch's wheels
    target).
    """
    venv = work / "cornac-venv"
    python = venv / "bin" / "python"
    if _works(python):
        _say(f"reusing {venv}")
        return python
    if venv.exists():
        _say(f"{venv} does not import cornac 3.0.1 with torch 2.13.0+cpu, rebuilding it")
        shutil.rmtree(venv)
    started = time.perf_counter()
    _say(f"creating {venv}")
    work.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", str(venv)], "creating the venv")
    _say(f"installing {' '.join(REQUIREMENTS)} (about a minute)")
    _run([str(python), "-m", "pip", "install", "--progress-bar", "off", *REQUIREMENTS], "pip install")
    if not _works(python):
        raise RuntimeError(f"cornac peer: {venv} was installed but cannot import cornac 3.0.1 and torch 2.13.0+cpu")
    _say(f"ready in {time.perf_counter() - started:.0f}s")
    return python


def run_cornac(python: Path, job: Path) -> dict[str, Any]:
    """Run the worker on ``job`` with the venv's python, stream its progress to stderr, return stats.json.

    Per-model failures are recorded in the stats (their ``error``); only a failure of the worker itself raises.
    """
    proc = subprocess.Popen(
        [str(python), str(WORKER), str(job)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stderr.write(line)
    code = proc.wait()
    if code != 0:
        raise RuntimeError(f"cornac worker failed with exit code {code} on {job}")
    stats: dict[str, Any] = json.loads((job / "stats.json").read_text())
    return stats
