"""Peer: RecBole's models on an :class:`EvaluationRun`'s own split, scored by the same harness.

The job directory is Cornac's (``cornac_runner.write_job``: the training events in shopsense's dense indices, with
the run's tuned event-type weights and decay, and the users of each task); ``recbole_worker.py`` fits and ranks inside
the RecBole virtualenv and the lists come back as rows of the harness's tasks. No tuning grid: RecBole's documented
defaults per model, epochs early-stopped on a leave-one-out carve-out and bounded by the budget.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.peers.cornac_runner import BUDGET_S, read_results, write_job
from benchmarks.peers.recbole_peer import ensure_env, run_recbole
from shopsense.eval.harness import Task
from shopsense.services.evaluation import EvaluationRun

MODELS = ("EASE", "LightGCN", "SASRec", "BERT4Rec")
QUICK_MODELS = ("EASE",)
THREADS = 1
"""torch's intra-op threads: on this 2-core machine under other load, 2 threads made a LightGCN epoch ten times slower
(73 s against 7 s on MovieLens 100k), so the worker uses one instead of the job's Cornac setting."""
QUICK_BUDGET_S = 120.0
"""EASE on MovieLens 100k takes seconds; the rest is the worker's imports and RecBole's dataset build."""


def run_recbole_peers(
    run: EvaluationRun, models: tuple[str, ...], work: Path, *, quick: bool = False
) -> Iterator[tuple[str, dict[Task, np.ndarray], dict[str, Any]]]:
    """Yield ``(peer name, top-K lists per task, cost)`` for each RecBole model that finished.

    A model that failed or ran past its budget (``BUDGET_S``, Cornac's) is added to ``run`` as a failure, with the
    reason, so it is never counted as beaten. ``work`` holds the virtualenv (``recbole-venv``) and a job directory
    per dataset (``jobs-recbole/``).
    """
    python = ensure_env(work)
    job = work / "jobs-recbole" / run.dataset
    write_job(run, job, models, tune=False, budget_s=QUICK_BUDGET_S if quick else BUDGET_S)
    meta = job / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "threads": THREADS}, indent=2))
    stats = run_recbole(python, job)
    yield from read_results(run, job, models, stats, "recbole")
