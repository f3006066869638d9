"""Peer: cornac 3.0.1's models, run in a virtualenv of their own through a file protocol.

Cornac and what it pulls in (powerlaw, matplotlib, its own torch models) must stay out of the project's dependency
set, so ``ensure_env`` builds a separate venv once and ``run_cornac`` drives ``cornac_worker.py`` inside it on a job
directory (inputs and outputs are described in README.md beside this file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.peers.peer_venv import PeerEnv

WORKER = Path(__file__).with_name("cornac_worker.py")
# torch 2.13.0+cpu is the CPU wheel kept on this machine's disk; the local-version label stops pip from falling back
# to PyPI's torch 2.13.0, a CUDA build of several GB. pyarrow reads the job's parquet files.
REQUIREMENTS = ("cornac==3.0.1", "torch==2.13.0+cpu", "pyarrow==26.0.1")
CHECK = (
    "import cornac, torch, pyarrow; "
    "assert cornac.__version__ == '3.0.1', cornac.__version__; "
    "assert torch.__version__ == '2.13.0+cpu', torch.__version__"
)


ENV = PeerEnv(
    name="cornac",
    requirements=REQUIREMENTS,
    check=CHECK,
    wants="cornac 3.0.1 with torch 2.13.0+cpu",
    installing=" ".join(REQUIREMENTS),
)


def ensure_env(work: Path) -> Path:
    """Create (once) the cornac venv at ``work / "cornac-venv"`` and return its python (reused while it imports the
    pinned versions, rebuilt when broken or partial)."""
    return ENV.ensure(work)


def run_cornac(python: Path, job: Path) -> dict[str, Any]:
    """Run the worker on ``job`` with the venv's python, stream its progress to stderr, return stats.json."""
    return ENV.run_worker(python, WORKER, job)
