"""Peer: RecBole 1.2.1's models, run in a virtualenv of their own through the Cornac job-directory protocol.

RecBole needs ``numpy<2`` (it still uses ``np.float``-era code) and pins ``ray<=2.6.3`` although only its
hyper-parameter search imports ray, so ``ensure_env`` builds a separate venv once with ONE pip command that installs a
fully pinned set with ``--no-deps`` (recbole, its imported dependencies and theirs, ray left out) and ``run_recbole``
drives ``recbole_worker.py`` inside it on a job directory written by ``cornac_runner.write_job``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.peers.peer_venv import PeerEnv

WORKER = Path(__file__).with_name("recbole_worker.py")
# The libraries recbole imports on the path the worker uses (config, dataset, trainer, models): ray, thop, plotly and
# psutil are imported only by its quick-start/hyper-tuning helpers and are left out. torch 2.13.0 resolves to the
# 2.13.0+cpu wheel kept on this machine's disk (the local label sorts first); PyPI's 2.13.0 is a CUDA build of GBs.
# scipy stays below 1.12 because RecBole's LightGCN calls dok_matrix._update, which scipy 1.12 removed; pyarrow
# 19.0.1 is the newest checked here that imports with numpy 1.x (26.0.1, Cornac's, needs numpy 2).
TOP_LEVEL = (
    "recbole==1.2.1",
    "torch==2.13.0",
    "numpy==1.26.4",
    "scipy==1.11.4",
    "pandas==2.2.3",
    "scikit-learn==1.9.1",
    "tensorboard==2.21.0",
    "pyarrow==19.0.1",
    "tqdm==4.70.1",
    "colorlog==4.7.2",
    "colorama==0.4.4",
    "PyYAML==6.0.4",
    "texttable==1.7.3",
)
# What those need in turn (pip's resolution of TOP_LEVEL without recbole, frozen so that --no-deps is complete).
CLOSURE = (
    "absl-py==2.5.1",
    "cloudpickle==3.1.3",
    "filelock==4.3.2",
    "fsspec==2026.9.0",
    "grpcio==1.85.4",
    "Jinja2==3.1.6",
    "joblib==1.6.0",
    "Markdown==3.11.4",
    "MarkupSafe==3.0.4",
    "mpmath==1.3.0",
    "narwhals==2.29.0",
    "networkx==3.6.1",
    "packaging==26.4",
    "pillow==13.0.0",
    "protobuf==7.36.2",
    "python-dateutil==4.0.0",
    "pytz==2026.6",
    "setuptools==84.2.1",
    "sympy==1.14.0",
    "tensorboard-data-server==0.7.2",
    "threadpoolctl==3.8.0",
    "typing_extensions==4.16.0",
    "tzdata==2026.6",
    "Werkzeug==3.1.9",
)
REQUIREMENTS = TOP_LEVEL + CLOSURE
CHECK = (
    "import numpy; numpy.float = float; "
    "import recbole, torch, pyarrow, recbole.config, recbole.data, recbole.trainer, recbole.model.general_recommender; "
    "assert recbole.__version__ == '1.2.1', recbole.__version__; "
    "assert torch.__version__ == '2.13.0+cpu', torch.__version__; "
    "assert numpy.__version__ == '1.26.4', numpy.__version__"
)


ENV = PeerEnv(
    name="recbole",
    requirements=REQUIREMENTS,
    check=CHECK,
    wants="recbole 1.2.1 with torch 2.13.0+cpu and numpy 1.26.4",
    installing=f"{' '.join(TOP_LEVEL)} and {len(CLOSURE)} pinned dependencies, --no-deps",
    pip_options=("--no-deps",),
)


def ensure_env(work: Path) -> Path:
    """Create (once) the RecBole venv at ``work / "recbole-venv"`` and return its python (reused while it imports
    the pinned versions, rebuilt when broken or partial)."""
    return ENV.ensure(work)


def run_recbole(python: Path, job: Path) -> dict[str, Any]:
    """Run the worker on ``job`` with the venv's python, stream its progress to stderr, return stats.json."""
    return ENV.run_worker(python, WORKER, job)
