"""Peer: the ``implicit`` library's ALS and BPR used directly, with their documented defaults.

This is what a team gets by calling implicit themselves: no tuning, default
hyper-parameters (ALS: 100 factors, regularization 0.01, 15 iterations; BPR: 100 factors,
learning rate 0.01, regularization 0.01, 100 iterations). They see the same training
matrix as shopsense's models and their lists are scored by the same harness.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from implicit.als import AlternatingLeastSquares
from implicit.bpr import BayesianPersonalizedRanking

from shopsense.eval.harness import Prepared, Task, peak_rss


def run_implicit(prepared: Prepared) -> Iterator[tuple[str, dict[Task, np.ndarray], dict[str, Any]]]:
    """Yield ``(peer name, top-K lists per task, cost)`` for implicit's ALS and BPR."""
    matrix = prepared.data.matrix.tocsr().astype(np.float32)
    k = max(prepared.config.ks)
    peers = {
        "implicit-als": lambda: AlternatingLeastSquares(random_state=0, num_threads=1),
        "implicit-bpr": lambda: BayesianPersonalizedRanking(random_state=0, num_threads=1),
    }
    for name, make in peers.items():
        with peak_rss() as peak:
            model = make()
            started = time.perf_counter()
            model.fit(matrix, show_progress=False)
            seconds = time.perf_counter() - started
            lists = {}
            for task in prepared.config.tasks:
                rows = prepared.users[prepared.task_users[task]]
                ids, _ = model.recommend(rows, matrix[rows], N=k, filter_already_liked_items=task is Task.NEW)
                lists[task] = np.asarray(ids, dtype=np.int64)
        yield name, lists, {"fit_seconds": seconds, "peak_mb": peak(), "params": {"defaults": "implicit 0.7.3"}}
