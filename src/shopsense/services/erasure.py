"""What an erasure removes, and its receipt.

A user's erasure (``DELETE /v1/users/{id}``, ``shopsense erase``) reaches:

- the store, in one transaction (:meth:`~shopsense.store.base.ServingStore.erase_user`): events,
  impressions, the user record, campaign assignments, the profile, rows in job outputs (audiences),
  and a tombstone holding the SHA-256 of the id (never the id) that outlives them. The embedded
  store then rewrites its file (at close, or at the next open after a crash), because DuckDB keeps
  deleted rows' bytes in freed blocks; the server's event journal is written into the store and
  deleted before the erasure runs;
- every stored model bundle: the user's precomputed answers are cut from each ``answers.arrow``;
  a bundle loaded later (restart, reload, rollback, pin) is checked against the tombstones, so
  neither its stored answers nor per-user model state (user-kNN rows) serve that user again;
- memory: the live history, cached answers, and the served bundle's answers and per-user state.

Model weights fitted on aggregates (item factors, co-occurrence, the ranking heads) keep what the
user's events taught them until the next training, which no longer sees those events; the receipt
says whether stored bundles may have learnt from the user and when that is forgotten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow.compute as pc

from shopsense.services.bundles import Bundles, Purged
from shopsense.store.base import ReplicaFeed, Store

NEXT_TRAINING = "next training"


@dataclass(frozen=True)
class Erasure:
    """The receipt of one erasure: rows deleted per table, and what happens to the models."""

    user_id: str
    deleted: dict[str, int]
    models: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "deleted": self.deleted, "models": self.models}


@dataclass(frozen=True)
class StoreErasure:
    """What the store's part of an erasure returns: rows deleted per table, the span of the user's events
    (read before they were deleted), and the erasure's transaction id on a store that feeds replicas."""

    deleted: dict[str, int]
    span: tuple[datetime, datetime] | None
    txid: int | None


def erase_user(
    user_id: str,
    bundles: Bundles,
    run: Callable[[Callable[[Store], StoreErasure]], StoreErasure],
    forget: Callable[[StoreErasure], None] | None = None,
) -> Erasure:
    """Erase a user everywhere, in order: the store (span, then rows, one call), memory, then every
    stored bundle's precomputed answers; the receipt.

    Args:
        user_id: the user.
        bundles: the stored bundles, whose answers are purged.
        run: runs the store's part with the store and returns what it returned (a direct call, or the
            server's writer thread, ordered after queued writes).
        forget: forgets the user in memory once the store has erased them (a server's live histories,
            cache and served bundle).
    """

    def erase(store: Store) -> StoreErasure:
        span = events_span(store, user_id)
        deleted = store.erase_user(user_id)
        return StoreErasure(deleted, span, store.last_txid if isinstance(store, ReplicaFeed) else None)

    erased = run(erase)
    if forget is not None:
        forget(erased)
    return Erasure(user_id, erased.deleted, models_receipt(bundles, erased.span, bundles.purge_user(user_id)))


def events_span(store: Store, user_id: str) -> tuple[datetime, datetime] | None:
    """The times of the user's first and last stored event (read before erasing them); None without any."""
    times = store.scan_events(user_ids=[user_id]).column("timestamp")
    if not len(times):
        return None
    span = pc.min_max(times)
    return span["min"].as_py(), span["max"].as_py()


def models_receipt(
    bundles: Bundles, span: tuple[datetime, datetime] | None, purged: Purged, retrained: str | None = None
) -> dict[str, Any]:
    """What the erasure means for the trained models.

    Args:
        bundles: the stored bundles.
        span: the user's events' first and last time, from :func:`events_span`.
        purged: the precomputed answer rows cut from the bundles, and the bundles whose answers could
            not be purged (``answers_not_purged``: they still hold the user's rows on disk, though no
            bundle answers for an erased user once loaded).
        retrained: the version trained right after the erasure, if one was.
    """
    trained = bundles.trained_on(*span) if span is not None else []
    return {
        "trained_on_user": bool(trained) or purged.removed > 0,
        "bundles": trained,
        "answers_removed": purged.removed,
        "answers_not_purged": list(purged.failed),
        "served_as": "unknown user",
        "forgotten_at": f"retrained ({retrained})" if retrained else NEXT_TRAINING,
    }
