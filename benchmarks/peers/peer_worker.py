"""What both peer workers (``cornac_worker.py``, ``recbole_worker.py``) share: the job directory's reader, the
top-k writer and the loop that runs each model in a child process of its own and merges the results into stats.json.

It runs inside each peer's own virtualenv, where it is found beside the worker script (Python puts a script's folder
on its path), so it needs only the standard library, numpy and pyarrow (and scipy, imported where used). A child
process per model because a crash, a memory blow-up or a time-budget overrun must end that model only, and because a
fresh process is the only way to read one model's RSS peak without the previous model's high-water mark hiding it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

BASKET_SECONDS = 86_400  # a basket for next-basket models is one user's events on one UTC day, unless meta says


@dataclass(frozen=True)
class Events:
    """Interaction rows sorted by (user, timestamp), ties in file order: the order sequential models train on."""

    user: np.ndarray
    item: np.ndarray
    weight: np.ndarray
    timestamp: np.ndarray

    @classmethod
    def read(cls, path: Path) -> Events:
        table = pq.read_table(path, columns=["user", "item", "weight", "timestamp"])
        user = table["user"].to_numpy().astype(np.int64)
        timestamp = table["timestamp"].to_numpy().astype(np.int64)
        order = np.lexsort((timestamp, user))
        return cls(
            user=user[order],
            item=table["item"].to_numpy().astype(np.int64)[order],
            weight=table["weight"].to_numpy().astype(np.float64)[order],
            timestamp=timestamp[order],
        )

    def span(self, user: int) -> slice:
        """The rows of one user (the rows are sorted by user)."""
        lo, hi = np.searchsorted(self.user, [user, user + 1])
        return slice(int(lo), int(hi))

    def seen(self, n_users: int, n_items: int) -> Any:
        """Users x items (a scipy CSR matrix), nonzero where the user interacted: what exclude_seen blocks."""
        import scipy.sparse as sp

        ones = np.ones(len(self.user), dtype=np.float32)
        return sp.csr_matrix((ones, (self.user, self.item)), shape=(n_users, n_items))


@dataclass(frozen=True)
class Job:
    """The job directory and its meta.json, read once."""

    path: Path
    n_users: int
    n_items: int
    k: int
    outputs: dict[str, bool]
    """Lists to write: name -> exclude the user's training items? (users_<name>.npy -> recs_<model>_<name>.npy)."""
    valid_exclude_seen: bool
    models: list[str]
    seed: int
    time_budget_s: float | None
    tune: bool
    basket_seconds: int
    threads: int | None

    @classmethod
    def read(cls, path: Path) -> Job:
        meta = json.loads((path / "meta.json").read_text())
        budget = meta.get("time_budget_s")
        return cls(
            path=path,
            n_users=int(meta["n_users"]),
            n_items=int(meta["n_items"]),
            k=int(meta["k"]),
            outputs={name: bool(exclude) for name, exclude in meta["outputs"].items()},
            valid_exclude_seen=bool(meta.get("valid_exclude_seen", False)),
            models=list(meta["models"]),
            seed=int(meta.get("seed", 0)),
            time_budget_s=None if budget is None else float(budget),
            tune=bool(meta.get("tune", False)),
            basket_seconds=int(meta.get("basket_seconds", BASKET_SECONDS)),
            threads=None if meta.get("threads") is None else int(meta["threads"]),
        )


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and (when installed) torch's RNGs: the libraries seed some models themselves, not all."""
    random.seed(seed)
    np.random.seed(seed)
    with contextlib.suppress(ImportError):
        import torch

        torch.manual_seed(seed)


def top_k(scores: np.ndarray, blocked: np.ndarray, k: int) -> np.ndarray:
    """Best-first item indices per row; blocked and non-finite scores never appear, -1 pads short lists."""
    scores = np.where(blocked | np.isnan(scores), -np.inf, scores)
    kk = min(k, scores.shape[1])
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    best[np.take_along_axis(scores, best, axis=1) == -np.inf] = -1
    out = np.full((scores.shape[0], k), -1, dtype=np.int32)
    out[:, :kk] = best
    return out


def rss_mb() -> float:
    """Current resident set size from /proc (no psutil in the venv)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """High-water RSS of this process; Linux reports ru_maxrss in KiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def failure(error: str) -> dict[str, Any]:
    """The stats entry of a model that produced no recommendations."""
    return {"fit_seconds": None, "peak_mb": None, "params": {}, "valid_ndcg@10": None, "error": error}


def recs_paths(job: Job, name: str) -> list[Path]:
    return [job.path / f"recs_{name}_{output}.npy" for output in job.outputs]


def part_path(job: Job, name: str) -> Path:
    return job.path / f"part_{name}.json"


def child(job: Job, name: str, run_model: Callable[[Job, str], dict[str, Any]]) -> None:
    """Run one model and leave its stats entry in part_<name>.json for the parent; errors are recorded, not raised."""
    try:
        stats = run_model(job, name)
    except Exception as exc:
        traceback.print_exc()
        stats = failure(f"{type(exc).__name__}: {exc}")
    part_path(job, name).write_text(json.dumps(stats, default=str))


def parent(
    job: Job,
    script: Path,
    log: Callable[[str], None],
    *,
    env: Mapping[str, str] | None = None,
    workdir: Callable[[Job, str], Path] | None = None,
) -> None:
    """Run each model as ``script JOB --model NAME`` in its own process under the job's time budget and merge the
    results into stats.json, rewritten after every model so that an interrupted run keeps what finished.

    ``env`` is added to the children's environment; ``workdir(job, name)``, if given, is a model's working directory
    (made here).
    """
    stats: dict[str, Any] = {}
    # TQDM_DISABLE: cornac's TIFUKNN shows a bar regardless; RecBole's trainer too unless show_progress is off.
    child_env = dict(os.environ, TQDM_DISABLE="1", PYTHONUNBUFFERED="1", **(env or {}))
    if job.threads is not None:  # torch and BLAS read these when they start, in the child
        child_env.update(OMP_NUM_THREADS=str(job.threads), OPENBLAS_NUM_THREADS=str(job.threads))
    for name in job.models:
        for stale in (*recs_paths(job, name), part_path(job, name)):
            stale.unlink(missing_ok=True)
        log(f"{name}: starting (budget {job.time_budget_s}s, tune={job.tune})")
        started = time.perf_counter()
        cwd = None
        if workdir is not None:
            cwd = workdir(job, name)
            cwd.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(script.resolve()), str(job.path.resolve()), "--model", name]
        proc = subprocess.Popen(command, env=child_env, cwd=cwd)
        try:
            code = proc.wait(timeout=job.time_budget_s)
            error = None if code == 0 else f"worker process exited with code {code}"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            error = f"exceeded its time budget of {job.time_budget_s:.0f}s"
        part = part_path(job, name)
        if error is None and part.exists():
            stats[name] = json.loads(part.read_text())
        else:
            stats[name] = failure(error or "worker process left no result")
            for stale in recs_paths(job, name):
                stale.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
        outcome = stats[name]["error"] or f"fit {stats[name]['fit_seconds']:.1f}s"
        log(f"{name}: done in {time.perf_counter() - started:.1f}s ({outcome})")
        (job.path / "stats.json").write_text(json.dumps(stats, indent=2))


def main(
    description: str,
    script: Path,
    run_model: Callable[[Job, str], dict[str, Any]],
    log: Callable[[str], None],
    **parent_options: Any,
) -> None:
    """``script JOB`` runs every model of the job through :func:`parent`; ``script JOB --model NAME`` is one child."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("job", type=Path, help="job directory (meta.json, train.parquet, users_<task>.npy, ...)")
    parser.add_argument("--model", help="run only this model, in this process (used by the parent)")
    args = parser.parse_args()
    job = Job.read(args.job.resolve())
    if args.model:
        child(job, args.model, run_model)
    else:
        parent(job, script, log, **parent_options)
