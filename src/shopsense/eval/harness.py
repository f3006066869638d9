"""The offline evaluation harness: one split, full-catalogue ranking, every model scored the same way.

``prepare`` cuts the events once (train / warm test / cold test), builds the training
interactions and the ground truth; ``evaluate_model`` fits a model on the training part
only and scores its top-K lists; ``evaluate_lists`` scores lists made elsewhere (peer
libraries run in their own environment), so ours and theirs meet the same truth.

Two tasks per split:

- ``all``: the held-out target events (e.g. purchases) including items the user had
  before — in retail, re-buys are much of next month's basket;
- ``new``: only items the user never interacted with in training; those are excluded
  from the lists, and users with nothing new are left out of this task (counted).

Held-out items that never occur in training stay in the truth (they are misses every model
shares), so recall is not flattered by dropping them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from shopsense.domain import IdIndex
from shopsense.errors import ShopsenseError
from shopsense.eval import metrics
from shopsense.eval.splits import Split, SplitConfig, split
from shopsense.features.interactions import Interactions, Sequences, build_interactions
from shopsense.models.base import Recommender, RecQuery
from shopsense.settings import DEFAULT_EVENT_TYPES


class Task(StrEnum):
    """What counts as a hit."""

    ALL = "all"
    NEW = "new"


class EvalConfig(BaseModel):
    """Split, tasks, cut-offs, how interactions are weighted, and the statistics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split: SplitConfig = Field(default_factory=SplitConfig)
    tasks: tuple[Task, ...] = Field((Task.ALL, Task.NEW), min_length=1)
    ks: tuple[int, ...] = Field((10, 20), min_length=1)
    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_TYPES))
    half_life_days: float | None = Field(None, gt=0, description="time decay of interaction weights")
    bootstrap: int = Field(1000, ge=100, description="bootstrap resamples for confidence intervals")
    max_test_users: int | None = Field(None, ge=1, description="evaluate a seeded sample of test users")
    seed: int = 0
    chunk_users: int = Field(1024, ge=1, description="users scored at once (bounds the users x items matrix)")


@dataclass(frozen=True)
class Prepared:
    """Everything computed once per split and shared by all models."""

    config: EvalConfig
    split: Split
    data: Interactions
    users: np.ndarray
    truth: sp.csr_matrix
    cold: Interactions
    cold_truth: sp.csr_matrix
    unknown_test_items: int
    popularity: np.ndarray
    task_users: dict[Task, np.ndarray]
    task_truth: dict[Task, sp.csr_matrix]


def prepare(events: pa.Table, config: EvalConfig, catalog: pa.Table | None = None) -> Prepared:
    """Split ``events`` and build the training interactions and the truth for every task."""
    cut = split(events, config.split)
    vocabulary = _vocabulary(cut.train, catalog)
    data = build_interactions(
        cut.train, config.weights, half_life_days=config.half_life_days, items=vocabulary, catalog=catalog
    )
    test_ids = np.unique(cut.test.column("user_id").to_numpy(zero_copy_only=False).astype(str))
    users = np.array(data.users.index(test_ids.tolist()), dtype=np.int64)
    if config.max_test_users is not None and len(users) > config.max_test_users:
        users = np.sort(np.random.default_rng(config.seed).choice(users, config.max_test_users, replace=False))
    if not len(users):
        raise ShopsenseError(f"the split leaves no test user with a training history ({cut.description})")
    extra = IdIndex(_unknown_items(cut.test, cut.cold, vocabulary))
    truth = _truth(cut.test, data.users.ids(users.tolist()), vocabulary, extra)
    cold_ids = np.unique(cut.cold.column("user_id").to_numpy(zero_copy_only=False).astype(str)).tolist()
    cold_truth = _truth(cut.cold, cold_ids, vocabulary, extra)
    seen = data.matrix[users] > 0
    seen_padded = sp.hstack([seen, sp.csr_matrix((len(users), len(extra)))]).tocsr()
    new_truth = (truth > 0).astype(float) - (truth > 0).multiply(seen_padded)
    new_truth = sp.csr_matrix(new_truth)
    new_truth.eliminate_zeros()
    has_new = np.diff(new_truth.indptr) > 0
    task_users = {Task.ALL: np.arange(len(users)), Task.NEW: np.flatnonzero(has_new)}
    task_truth = {Task.ALL: truth, Task.NEW: new_truth[has_new]}
    return Prepared(
        config,
        cut,
        data,
        users,
        truth,
        _empty_histories(cold_ids, data),
        cold_truth,
        len(extra),
        np.asarray((data.matrix > 0).sum(axis=0)).ravel(),
        task_users,
        task_truth,
    )


@dataclass
class TaskResult:
    """Means of every metric, the CI of the headline one, and per-user NDCG@10 for paired tests."""

    users: int
    metrics: dict[str, float]
    ci95_ndcg10: tuple[float, float]
    per_user_ndcg10: np.ndarray = field(repr=False)
    p_vs_best: float | None = None


@dataclass
class ModelResult:
    """One model on one split: fit cost, per-task results and the cold-start slice."""

    name: str
    peer: bool
    fit_seconds: float
    peak_mb: float
    params: dict[str, Any]
    tasks: dict[Task, TaskResult]
    cold: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    skipped: bool = False
    """True when ``error`` says why the model was not run (e.g. it did not fit the time budget)."""
    scaled_down: list[str] = field(default_factory=list)
    """What the model sized down to fit this machine, and why (e.g. EASE's ``max_items``)."""


def evaluate_model(prepared: Prepared, name: str, model: Recommender, *, peer: bool = False) -> ModelResult:
    """Fit on the training part, rank the whole catalogue for test users, score every task."""
    with peak_rss() as peak:
        started = time.perf_counter()
        model.fit(prepared.data)
        fit_seconds = time.perf_counter() - started
        lists = {task: _rank(model, prepared, task) for task in prepared.config.tasks}
        cold = _rank_cold(model, prepared)
    result = evaluate_lists(prepared, name, lists, peer=peer, fit_seconds=fit_seconds, peak_mb=peak())
    # with what the model chose at fit (EASE's sized max_items), so that two runs' sizes are explained
    result.params = {**model.config.model_dump(mode="json"), **getattr(model, "resolved_params_", {})}
    result.scaled_down = scaled_down(model)
    if cold is not None:
        result.cold = _accuracy(cold, prepared.cold_truth, prepared.config.ks)
    return result


def evaluate_lists(
    prepared: Prepared,
    name: str,
    lists: dict[Task, np.ndarray],
    *,
    peer: bool = False,
    fit_seconds: float = float("nan"),
    peak_mb: float = float("nan"),
    params: dict[str, Any] | None = None,
) -> ModelResult:
    """Score top-K lists (rows = the task's users, item indices, -1 padded) against the truth."""
    config = prepared.config
    tasks = {}
    for task, recommended in lists.items():
        truth = prepared.task_truth[task]
        if recommended.shape[0] != truth.shape[0]:
            raise ValueError(f"{name}: {recommended.shape[0]} lists for {truth.shape[0]} users in task {task}")
        values = _accuracy(recommended, truth, config.ks)
        top = recommended[:, : min(10, recommended.shape[1])]
        values["coverage@10"] = metrics.coverage(top, len(prepared.popularity))
        values["novelty@10"] = metrics.novelty(top, prepared.popularity, prepared.data.matrix.shape[0])
        values["popularity_bias@10"] = metrics.popularity_bias(top, prepared.popularity)
        catalog = prepared.data.catalog
        if catalog is not None and (catalog.category >= 0).any():
            values["diversity@10"] = metrics.intra_list_diversity(top, catalog.category)
        per_user = metrics.ndcg(recommended, truth, 10) if len(recommended) else np.zeros(0)
        ci = metrics.bootstrap_ci(per_user, config.bootstrap, config.seed) if len(per_user) else None
        tasks[task] = TaskResult(
            len(recommended), values, (ci.low, ci.high) if ci else (float("nan"), float("nan")), per_user
        )
    return ModelResult(name, peer, fit_seconds, peak_mb, params or {}, tasks)


def compare(results: list[ModelResult]) -> None:
    """Fill each task's paired-test p-value against that task's best model (by NDCG@10)."""
    for task in {t for r in results for t in r.tasks}:
        scored = [r for r in results if task in r.tasks and r.error is None]
        if not scored:
            continue
        best = max(scored, key=lambda r: r.tasks[task].metrics["ndcg@10"])
        for result in scored:
            a, b = result.tasks[task].per_user_ndcg10, best.tasks[task].per_user_ndcg10
            result.tasks[task].p_vs_best = None if result is best else metrics.paired_test(a, b)


def scaled_down(model: Any) -> list[str]:
    """What a fitted model, or the models inside it (a pipeline's sources, a hybrid's parts), scaled down."""
    notes = list(getattr(model, "scaled_down_", []))
    inner = [*getattr(getattr(model, "generator_", None), "models_", []), *getattr(model, "parts_", [])]
    for part in inner:
        notes += [note for note in scaled_down(part) if note not in notes]
    return notes


@contextmanager
def peak_rss(interval: float = 0.02) -> Iterator[Any]:
    """Sample this process's resident memory in a thread; yields a callable giving the peak growth in MiB.

    Native libraries (BLAS, torch, implicit) allocate outside Python's tracer, so RSS is the
    honest measure of what a model costs.
    """
    start = _rss_mb()
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            peak[0] = max(peak[0], _rss_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lambda: max(peak[0], _rss_mb()) - start
    finally:
        stop.set()
        thread.join()


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * 4096 / 2**20


def _accuracy(recommended: np.ndarray, truth: sp.csr_matrix, ks: tuple[int, ...]) -> dict[str, float]:
    if not len(recommended):
        return {}
    return {f"{name}@{k}": float(f(recommended, truth, k).mean()) for k in ks for name, f in metrics.ACCURACY.items()}


def _rank(model: Recommender, prepared: Prepared, task: Task) -> np.ndarray:
    """Top-K item indices for the task's users, in chunks so users x items never gets large."""
    config = prepared.config
    rows = prepared.users[prepared.task_users[task]]
    k = max(config.ks)
    out = np.full((len(rows), k), -1, dtype=np.int64)
    chunks = range(0, len(rows), config.chunk_users)
    for start in tqdm(chunks, desc=f"rank {task}", unit="chunk", leave=False, disable=None):
        part = rows[start : start + config.chunk_users]
        history = prepared.data.rows(part)
        exclude = history.matrix if task is Task.NEW else None
        out[start : start + len(part)] = model.recommend(RecQuery(history, k, exclude=exclude)).items
    return out


def _rank_cold(model: Recommender, prepared: Prepared) -> np.ndarray | None:
    if prepared.cold.matrix.shape[0] == 0:
        return None
    return model.recommend(RecQuery(prepared.cold, max(prepared.config.ks))).items


def _vocabulary(train: pa.Table, catalog: pa.Table | None) -> IdIndex:
    """Items the models may rank: the catalogue plus anything interacted with in training."""
    ids = train.column("item_id").to_numpy(zero_copy_only=False).astype(str)
    if catalog is not None:
        ids = np.concatenate([catalog.column("item_id").to_numpy(zero_copy_only=False).astype(str), ids])
    return IdIndex(np.unique(ids).tolist())


def _unknown_items(test: pa.Table, cold: pa.Table, vocabulary: IdIndex) -> list[str]:
    ids = np.unique(
        np.concatenate([t.column("item_id").to_numpy(zero_copy_only=False).astype(str) for t in (test, cold)])
    )
    known = np.array(vocabulary.index(ids.tolist())) >= 0
    return [str(item) for item in ids[~known]]


def _truth(held: pa.Table, user_ids: list[str], vocabulary: IdIndex, extra: IdIndex) -> sp.csr_matrix:
    """Users (in the order given) x (vocabulary + items unknown to training): 1 where held out."""
    rows_of = IdIndex(user_ids)
    users = np.array(rows_of.index(held.column("user_id").to_numpy(zero_copy_only=False).astype(str).tolist()))
    item_ids = held.column("item_id").to_numpy(zero_copy_only=False).astype(str).tolist()
    items = np.array(vocabulary.index(item_ids), dtype=np.int64)
    unknown = items < 0
    if unknown.any():
        items[unknown] = len(vocabulary) + np.array(extra.index([item_ids[i] for i in np.flatnonzero(unknown)]))
    keep = users >= 0
    truth = sp.csr_matrix(
        (np.ones(int(keep.sum())), (users[keep], items[keep])), shape=(len(user_ids), len(vocabulary) + len(extra))
    )
    truth.sum_duplicates()
    truth.data[:] = 1.0  # an item bought twice in the test period is one relevant item
    return truth


def _empty_histories(user_ids: list[str], data: Interactions) -> Interactions:
    """Histories for users with no training events: the cold-start slice."""
    n = len(user_ids)
    empty = np.zeros(0)
    sequences = Sequences(
        np.zeros(n + 1, dtype=np.int64),
        empty.astype(np.int32),
        empty.astype(np.int16),
        empty.astype(np.int64),
        empty,
        data.sequences.type_names if data.sequences else (),
    )
    return Interactions(
        sp.csr_matrix((n, len(data.items))), IdIndex(user_ids), data.items, sequences, data.catalog, data.as_of
    )
