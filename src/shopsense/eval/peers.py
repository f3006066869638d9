"""Peer libraries scored by the same harness: what a team gets by calling them directly.

``implicit`` ALS and BPR run in-process with their documented defaults (ALS: 100 factors,
regularization 0.01, 15 iterations; BPR: 100 factors, learning rate 0.01, regularization 0.01,
100 iterations), on the same training matrix shopsense's models see. ``benchmarks/quality.py``
adds Cornac's models, run in a virtualenv of their own (``benchmarks/peers/``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from importlib.util import find_spec
from typing import Any

import numpy as np

from shopsense.eval.harness import Prepared, Task, peak_rss

PEERS: dict[str, tuple[str, str]] = {
    "implicit": ("implicit", "pip install implicit==0.7.3"),
    "cornac": ("cornac", "pip install cornac==3.0.1 (benchmarks/quality.py runs it in a virtualenv of its own)"),
}
"""Peer name -> (the module it imports, how to install it)."""
IN_PROCESS = ("implicit",)
"""Peers ``shopsense evaluate`` runs itself; the others only through ``benchmarks/quality.py``."""

PeerLists = tuple[str, dict[Task, np.ndarray], dict[str, Any]]
"""(peer model name, top-K lists per task, cost: fit_seconds, peak_mb, params)."""


def check_peers(names: list[str]) -> None:
    """Refuse an unknown peer, or one whose library is not importable, naming what to install."""
    for name in names:
        if name not in PEERS:
            raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
        module, install = PEERS[name]
        if find_spec(module) is None:
            raise ValueError(f"peer {name!r} needs the {module!r} package, which is not installed: {install}")
        if name not in IN_PROCESS:
            raise ValueError(
                f"peer {name!r} runs only in benchmarks/quality.py (its own virtualenv); "
                f"evaluate runs: {', '.join(IN_PROCESS)}"
            )


def run_peer(name: str, prepared: Prepared) -> Iterator[PeerLists]:
    """The lists of every model of peer ``name`` (checked by :func:`check_peers`)."""
    if name == "implicit":
        yield from run_implicit(prepared)
    else:
        raise ValueError(f"peer {name!r} does not run in-process")


def run_implicit(prepared: Prepared) -> Iterator[PeerLists]:
    """Yield ``(peer name, top-K lists per task, cost)`` for implicit's ALS and BPR."""
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking

    matrix = prepared.data.matrix.tocsr().astype(np.float32)
    k = max(prepared.config.ks)
    peers = {
        "implicit-als": lambda: AlternatingLeastSquares(random_state=0, num_threads=1),
        "implicit-bpr": lambda: BayesianPersonalizedRanking(random_state=0, num_threads=1),
    }
    for name, make in peers.items():
        with peak_rss() as peak:
            model = make()  # type: ignore[no-untyped-call]
            started = time.perf_counter()
            model.fit(matrix, show_progress=False)
            seconds = time.perf_counter() - started
            lists = {}
            for task in prepared.config.tasks:
                rows = prepared.users[prepared.task_users[task]]
                ids, _ = model.recommend(rows, matrix[rows], N=k, filter_already_liked_items=task is Task.NEW)
                lists[task] = np.asarray(ids, dtype=np.int64)
        yield name, lists, {"fit_seconds": seconds, "peak_mb": peak(), "params": {"defaults": "implicit 0.7.3"}}
