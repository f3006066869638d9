"""Cornac peer worker: fits cornac 3.0.1 models on a benchmark job and writes their top-k lists.

It runs inside the isolated cornac virtualenv made by ``cornac_peer.ensure_env``, so it cannot import shopsense and
the job directory is its whole interface (see README.md beside it). ``python cornac_worker.py JOB`` runs every model
named in ``JOB/meta.json``, each in a child process of its own (``--model NAME``); the job reader and that loop are
``peer_worker``'s, shared with ``recbole_worker.py`` (found beside this script, which Python puts on the path).
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from peer_worker import Events, Job, main, peak_rss_mb, rss_mb, seed_everything, top_k

GENERAL, SEQUENTIAL, BASKET = "general", "sequential", "basket"

# Tuning grids; the first entry of each is the configuration used when meta["tune"] is false. The defaults are
# cornac's own except where cornac's would not finish on a CPU in a benchmark budget (LightGCN's 1000 epochs) or
# barely trains (BPR's learning rate 0.001 for 100 epochs).
GRIDS: dict[str, list[dict[str, Any]]] = {
    "EASE": [{"lamb": 500}, {"lamb": 100}, {"lamb": 2000}],
    "RecVAE": [{"n_epochs": 20}, {"n_epochs": 50}],
    "LightGCN": [{"num_epochs": 100, "emb_size": 64}, {"num_epochs": 300, "emb_size": 64}],
    "SASRec": [{"n_epochs": 10}, {"n_epochs": 20}],
    "GRU4Rec": [{"n_epochs": 10}, {"n_epochs": 5, "layers": [200]}],
    "TIFUKNN": [{}, {"within_decay_rate": 1.0, "group_decay_rate": 1.0}, {"within_decay_rate": 0.6}],
    "BPR": [
        {"k": 64, "learning_rate": 0.01, "max_iter": 100},
        {"k": 64, "learning_rate": 0.05, "max_iter": 100},
        {"k": 128, "learning_rate": 0.01, "max_iter": 200},
    ],
}
SCORE_CHUNK = 512  # users scored at once: bounds the dense (users, items) score block


def log(message: str) -> None:
    """Progress goes to stderr, flushed, so that ``run_cornac`` can stream it while a long fit runs."""
    print(f"[cornac] {message}", file=sys.stderr, flush=True)


def resolve(name: str) -> tuple[type, str]:
    """The cornac class of that name and how it consumes data: next-item and next-basket models need histories."""
    import cornac.models
    from cornac.models.recommender import NextBasketRecommender, NextItemRecommender, Recommender

    cls = getattr(cornac.models, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Recommender)):
        raise ValueError(f"cornac {cornac.__version__} has no recommender model named {name!r}")
    if issubclass(cls, NextItemRecommender):
        return cls, SEQUENTIAL
    if issubclass(cls, NextBasketRecommender):
        return cls, BASKET
    return cls, GENERAL


def build_train_set(kind: str, events: Events, job: Job) -> Any:
    """A cornac dataset whose internal user and item indices are our dense ids.

    The id maps are pre-filled with the identity, so cornac's index i is our item i (no mapping back, and items with
    no training event still get a column). General models get one (user, item, summed weight) row per pair; sequential
    ones every event in time order with one session per user; basket ones every event, a basket per user-day.
    """
    from cornac.data import BasketDataset, Dataset, SequentialDataset

    uid_map = OrderedDict((u, u) for u in range(job.n_users))
    iid_map = OrderedDict((i, i) for i in range(job.n_items))
    users, items, stamps = events.user.tolist(), events.item.tolist(), events.timestamp.tolist()
    if kind == GENERAL:
        pair = events.user * job.n_items + events.item
        keys, inverse = np.unique(pair, return_inverse=True)
        weight = np.bincount(inverse, weights=events.weight)
        rows = zip((keys // job.n_items).tolist(), (keys % job.n_items).tolist(), weight.tolist(), strict=True)
        return Dataset.build(list(rows), fmt="UIR", global_uid_map=uid_map, global_iid_map=iid_map, seed=job.seed)
    if kind == SEQUENTIAL:
        rows = zip(users, users, items, stamps, strict=True)
        return SequentialDataset.build(
            list(rows), fmt="USIT", global_uid_map=uid_map, global_iid_map=iid_map, seed=job.seed
        )
    days = (events.timestamp // job.basket_seconds).tolist()
    rows = zip(users, zip(users, days, strict=True), items, stamps, strict=True)
    return BasketDataset.build(list(rows), fmt="UBIT", global_uid_map=uid_map, global_iid_map=iid_map, seed=job.seed)


def make_model(cls: type, params: dict[str, Any], seed: int) -> Any:
    """Construct with the seed and quiet logging wherever the model's constructor takes them."""
    accepted = inspect.signature(cls).parameters
    extra = {key: value for key, value in (("seed", seed), ("verbose", False)) if key in accepted}
    return cls(**extra, **params)


def work_around(cls: type, params: dict[str, Any], events: Events) -> dict[str, Any]:
    """Parameters changed only where cornac 3.0.1 would crash on this data.

    GRU4Rec's session-parallel iterator keeps ``batch_size`` hidden-state rows even when fewer sessions (here: users
    with two or more events) exist, and its GRU cell then fails on the size mismatch.
    """
    if cls.__name__ != "GRU4Rec":
        return params
    sequences = int((np.bincount(events.user) >= 2).sum())
    batch = params.get("batch_size", inspect.signature(cls).parameters["batch_size"].default)
    if sequences >= batch:
        return params
    log(f"GRU4Rec: only {sequences} sequences, batch_size {batch} -> {max(sequences, 1)}")
    return {**params, "batch_size": max(sequences, 1)}


def fit(cls: type, kind: str, params: dict[str, Any], events: Events, job: Job) -> tuple[Any, float, float]:
    """Fit one configuration; returns the model, dataset-build seconds and fit seconds."""
    seed_everything(job.seed)
    start = time.perf_counter()
    train_set = build_train_set(kind, events, job)
    built = time.perf_counter()
    model = make_model(cls, work_around(cls, params, events), job.seed).fit(train_set)
    return model, built - start, time.perf_counter() - built


def inference() -> contextlib.AbstractContextManager[Any]:
    """No autograd while scoring: cornac's GRU4Rec.score would otherwise keep a graph over the whole history."""
    try:
        import torch
    except ImportError:
        return contextlib.nullcontext()
    return torch.no_grad()


def user_scores(
    model: Any, kind: str, events: Events, users: np.ndarray, job: Job
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(users, scores over all items) in chunks of SCORE_CHUNK users.

    General models score from the user index alone; next-item models are given the user's training items in time
    order, next-basket models the user's baskets in time order.
    """
    for lo in range(0, len(users), SCORE_CHUNK):
        chunk = users[lo : lo + SCORE_CHUNK]
        block = np.empty((len(chunk), job.n_items), dtype=np.float64)
        for row, user in enumerate(chunk.tolist()):
            rows = events.span(user)
            if kind == GENERAL:
                scores = model.score(user)
            elif kind == SEQUENTIAL:
                scores = model.score(user, history_items=events.item[rows].tolist())
            else:
                days = events.timestamp[rows] // job.basket_seconds
                baskets = np.split(events.item[rows], np.flatnonzero(np.diff(days)) + 1)
                scores = model.score(user, history_baskets=[basket.tolist() for basket in baskets if len(basket)])
            block[row] = np.asarray(scores, dtype=np.float64).ravel()[: job.n_items]
        yield chunk, block


def recommend(model: Any, kind: str, events: Events, users: np.ndarray, job: Job, exclude_seen: bool) -> np.ndarray:
    """Top-k for each user over the full catalogue: items unseen in training are never ranked (-inf), and the user's
    own training items are excluded iff ``exclude_seen``."""
    seen = events.seen(job.n_users, job.n_items)
    unknown = np.asarray(seen.sum(axis=0)).ravel() == 0
    out = []
    with inference():
        for chunk, block in user_scores(model, kind, events, users, job):
            blocked = np.broadcast_to(unknown, block.shape)
            if exclude_seen:
                blocked = blocked | (seen[chunk].toarray() > 0)
            out.append(top_k(block, blocked, job.k))
    return np.concatenate(out) if out else np.empty((0, job.k), dtype=np.int32)


def ndcg_at(recs: np.ndarray, users: np.ndarray, truth_users: np.ndarray, truth_items: np.ndarray, k: int) -> float:
    """Mean binary NDCG@k over the given users that have at least one held-out item (shopsense's definition)."""
    row_of = {user: row for row, user in enumerate(users.tolist())}
    relevant: list[set[int]] = [set() for _ in users]
    for user, item in zip(truth_users.tolist(), truth_items.tolist(), strict=True):
        if user in row_of:
            relevant[row_of[user]].add(item)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    gains = [
        sum(discounts[rank] for rank, item in enumerate(row[:k].tolist()) if item in wanted)
        / discounts[: min(len(wanted), k)].sum()
        for row, wanted in zip(recs, relevant, strict=True)
        if wanted
    ]
    return float(np.mean(gains)) if gains else 0.0


def run_model(job: Job, name: str) -> dict[str, Any]:
    """Tune (if asked) on the validation split by NDCG@10, refit the best on train, write recs_<name>.npy."""
    cls, kind = resolve(name)
    grid = GRIDS.get(name, [{}]) if job.tune else GRIDS.get(name, [{}])[:1]
    seed_everything(job.seed)  # imports torch now, so that the baseline below includes it
    baseline = rss_mb()
    started = time.perf_counter()
    tried: list[dict[str, Any]] = []
    if job.tune:
        valid = Events.read(job.path / "valid_train.parquet")
        valid_users = np.load(job.path / "valid_users.npy").astype(np.int64)
        truth = pq.read_table(job.path / "valid_truth.parquet", columns=["user", "item"])
        truth_users, truth_items = truth["user"].to_numpy(), truth["item"].to_numpy()
        for index, params in enumerate(grid):
            elapsed = time.perf_counter() - started
            # Another configuration may take a few times the slowest so far (more epochs), and the refit on the
            # full training period must still fit in the budget.
            slowest = max((entry["fit_seconds"] for entry in tried), default=0.0)
            if tried and job.time_budget_s is not None and elapsed + 3 * slowest > job.time_budget_s:
                log(f"{name}: {elapsed:.0f}s of a {job.time_budget_s:.0f}s budget spent tuning, skipping the rest")
                break
            model, _, fit_seconds = fit(cls, kind, params, valid, job)
            recs = recommend(model, kind, valid, valid_users, job, job.valid_exclude_seen)
            ndcg = ndcg_at(recs, valid_users, truth_users, truth_items, 10)
            tried.append({"params": params, "valid_ndcg@10": ndcg, "fit_seconds": fit_seconds})
            log(f"{name}: config {index + 1}/{len(grid)} {params} valid ndcg@10={ndcg:.4f} fit {fit_seconds:.1f}s")
            del model
    best = max(tried, key=lambda entry: entry["valid_ndcg@10"]) if tried else {"params": grid[0]}
    tune_seconds = time.perf_counter() - started
    train = Events.read(job.path / "train.parquet")
    model, prep_seconds, fit_seconds = fit(cls, kind, best["params"], train, job)
    log(f"{name}: fitted {best['params']} on train in {fit_seconds:.1f}s")
    scoring = time.perf_counter()
    for output, exclude_seen in job.outputs.items():
        users = np.load(job.path / f"users_{output}.npy").astype(np.int64)
        np.save(job.path / f"recs_{name}_{output}.npy", recommend(model, kind, train, users, job, exclude_seen))
    return {
        "fit_seconds": fit_seconds,
        "peak_mb": peak_rss_mb() - baseline,
        "peak_rss_mb": peak_rss_mb(),
        "params": best["params"],
        "valid_ndcg@10": best.get("valid_ndcg@10"),
        "error": None,
        "kind": kind,
        "prep_seconds": prep_seconds,
        "tune_seconds": tune_seconds if job.tune else 0.0,
        "score_seconds": time.perf_counter() - scoring,
        "tried": tried,
    }


if __name__ == "__main__":
    main(__doc__.splitlines()[0], Path(__file__), run_model, log)
