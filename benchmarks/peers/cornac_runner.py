"""Peer: Cornac's models on an :class:`EvaluationRun`'s own split, scored by the same harness.

The run's training events (and those of its validation split, for tuning) are written as a
job directory in shopsense's dense user and item indices, ``cornac_worker.py`` fits and
ranks inside the Cornac virtualenv, and the lists come back as rows of the harness's tasks.
Every model sees the events shopsense's models see, with the same tuned event-type weights
and decay (events of non-positive weight, i.e. returns, are left out: Cornac takes no negatives).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.peers.cornac_peer import ensure_env, run_cornac
from shopsense.eval.harness import Prepared, Task
from shopsense.services.evaluation import EvaluationRun

BUDGET_S = 600.0
"""Wall-clock limit per Cornac model (tuning included); a model past it is reported as failed. It equals the
training limit quality.py gives shopsense's own slowest model (SASRec, ``max_minutes=10``), so no peer gets less
time than ours."""
QUICK_BUDGET_S = 60.0


def _events(prepared: Prepared, users: Any, items: Any) -> pa.Table:
    """Positive-weight training events as (user, item, weight, timestamp) in ``users``/``items`` indices."""
    seq = prepared.data.sequences
    assert seq is not None  # build_interactions always keeps the sequences
    owner = np.repeat(np.arange(len(seq.indptr) - 1), np.diff(seq.indptr))
    keep = seq.weights > 0
    user_index = np.array(users.index(prepared.data.users.ids(owner[keep].tolist())), dtype=np.int64)
    item_index = np.array(items.index(prepared.data.items.ids(seq.items[keep].tolist())), dtype=np.int64)
    return pa.table({"user": user_index, "item": item_index, "weight": seq.weights[keep], "timestamp": seq.times[keep]})


def write_job(run: EvaluationRun, job: Path, models: tuple[str, ...], *, tune: bool, budget_s: float) -> None:
    """The job directory of ``run``: training events, test users per task and, to tune, the validation split."""
    prepared = run.prepared
    users, items = prepared.data.users, prepared.data.items
    shutil.rmtree(job, ignore_errors=True)
    job.mkdir(parents=True)
    pq.write_table(_events(prepared, users, items), job / "train.parquet")
    outputs = {}
    for task in prepared.config.tasks:
        np.save(job / f"users_{task.value}.npy", prepared.users[prepared.task_users[task]])
        outputs[task.value] = task is Task.NEW
    if tune:
        valid = run.valid
        pq.write_table(_events(valid, users, items), job / "valid_train.parquet")
        rows = valid.task_users[run.primary]
        np.save(job / "valid_users.npy", np.array(users.index(valid.data.users.ids(valid.users[rows].tolist()))))
        truth = valid.task_truth[run.primary].tocoo()
        known = truth.col < len(valid.data.items)
        # Items first seen in the validation period cannot be recommended; they keep a distinct
        # id past the catalogue so that they still count in the ideal DCG.
        column = np.where(known, 0, len(items) + truth.col)
        column[known] = items.index(valid.data.items.ids(truth.col[known].tolist()))
        valid_user_ids = users.index(valid.data.users.ids(valid.users[rows][truth.row].tolist()))
        pq.write_table(pa.table({"user": np.array(valid_user_ids), "item": column}), job / "valid_truth.parquet")
    meta = {
        "n_users": len(users),
        "n_items": len(items),
        "k": max(prepared.config.ks),
        "outputs": outputs,
        "valid_exclude_seen": run.primary is Task.NEW,
        "models": list(models),
        "seed": prepared.config.seed,
        "time_budget_s": budget_s,
        "tune": tune,
        "threads": 2,
    }
    (job / "meta.json").write_text(json.dumps(meta, indent=2))


def read_results(
    run: EvaluationRun, job: Path, models: tuple[str, ...], stats: dict[str, Any], library: str
) -> Iterator[tuple[str, dict[Task, np.ndarray], dict[str, Any]]]:
    """Yield ``(peer name, top-K lists per task, cost)`` for each model of a worker's ``stats`` that finished, named
    ``<library>-<model>``; a model that failed, ran past its budget or has no entry is added to ``run`` as a failure,
    with the reason. Shared by the Cornac and RecBole runners (same job directory, same stats.json)."""
    for model in models:
        entry = stats.get(model, {})
        name = f"{library}-{model.lower()}"
        if entry.get("error") or not entry:
            error = entry.get("error") or "no result from the worker"
            print(f"[{run.dataset}] {name} failed: {error}", file=sys.stderr)
            run.add_failure(name, error, peer=True, params=entry.get("params"))
            continue
        lists = {task: np.load(job / f"recs_{model}_{task.value}.npy") for task in run.prepared.config.tasks}
        cost = {"fit_seconds": entry["fit_seconds"], "peak_mb": entry["peak_mb"], "params": entry["params"]}
        yield name, lists, cost


def run_cornac_peers(
    run: EvaluationRun, models: tuple[str, ...], work: Path, *, quick: bool = False
) -> Iterator[tuple[str, dict[Task, np.ndarray], dict[str, Any]]]:
    """Yield ``(peer name, top-K lists per task, cost)`` for each Cornac model that finished.

    A model that failed or ran past its budget is added to ``run`` as a failure, with the reason.

    ``work`` holds the virtualenv (``cornac-venv``) and a job directory per dataset (``jobs/``).
    """
    python = ensure_env(work)
    job = work / "jobs" / run.dataset
    write_job(run, job, models, tune=run.tune and not quick, budget_s=QUICK_BUDGET_S if quick else BUDGET_S)
    stats = run_cornac(python, job)
    yield from read_results(run, job, models, stats, "cornac")
