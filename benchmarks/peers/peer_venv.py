"""A peer library's pinned virtualenv, built once and reused, and its worker run on a job directory.

Each peer (``cornac_peer``, ``recbole_peer``) names its venv, its pins, its pip options and the import check that
proves a venv usable; ``ensure_env`` here builds, checks and reuses it, and ``run_worker`` drives the peer's worker
script inside it, streaming the worker's progress to stderr.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PeerEnv:
    """What one peer's venv is: ``work / f"{name}-venv"`` with ``requirements`` installed by one pip command."""

    name: str
    """Short name: the venv folder's prefix and the tag of every message (``[<name>-peer]``)."""
    requirements: Sequence[str]
    check: str
    """Python source that the venv's interpreter must run without error (imports and asserts the pinned versions)."""
    wants: str
    """The pins in words, for messages: e.g. ``cornac 3.0.1 with torch 2.13.0+cpu``."""
    installing: str
    """What the install step says it installs, e.g. the requirements joined."""
    pip_options: Sequence[str] = ()

    def say(self, message: str) -> None:
        print(f"[{self.name}-peer] {message}", file=sys.stderr, flush=True)

    def works(self, python: Path) -> bool:
        """The venv is reusable when its interpreter runs the check (imports the pinned versions)."""
        if not python.exists():
            return False
        return subprocess.run([str(python), "-c", self.check], capture_output=True).returncode == 0

    def run(self, command: list[str], what: str) -> None:
        """Run an install step; on failure raise with the tail of its output, which is where pip says why."""
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-3000:]
            raise RuntimeError(f"{self.name} peer: {what} failed (exit {done.returncode}):\n{tail}")

    def ensure(self, work: Path) -> Path:
        """Create (once) the venv at ``work / f"{name}-venv"`` and return its python.

        A venv that already passes the check is reused as is; a broken or partial one is rebuilt. The venv is made
        from the interpreter running this code (the project's Python 3.11, which the peers' wheels target).
        """
        venv = work / f"{self.name}-venv"
        python = venv / "bin" / "python"
        if self.works(python):
            self.say(f"reusing {venv}")
            return python
        if venv.exists():
            self.say(f"{venv} does not import {self.wants}, rebuilding it")
            shutil.rmtree(venv)
        started = time.perf_counter()
        self.say(f"creating {venv}")
        work.mkdir(parents=True, exist_ok=True)
        self.run([sys.executable, "-m", "venv", str(venv)], "creating the venv")
        self.say(f"installing {self.installing} (about a minute)")
        command = [str(python), "-m", "pip", "install", "--progress-bar", "off", *self.pip_options, *self.requirements]
        self.run(command, "pip install")
        if not self.works(python):
            raise RuntimeError(f"{self.name} peer: {venv} was installed but cannot import {self.wants}")
        self.say(f"ready in {time.perf_counter() - started:.0f}s")
        return python

    def run_worker(self, python: Path, worker: Path, job: Path) -> dict[str, Any]:
        """Run ``worker`` on ``job`` with the venv's python, stream its progress to stderr, return stats.json.

        Per-model failures are recorded in the stats (their ``error``); only a failure of the worker itself raises.
        """
        proc = subprocess.Popen(
            [str(python), str(worker), str(job)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
        code = proc.wait()
        if code != 0:
            raise RuntimeError(f"{self.name} worker failed with exit code {code} on {job}")
        stats: dict[str, Any] = json.loads((job / "stats.json").read_text())
        return stats
