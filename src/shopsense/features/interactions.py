"""The user x item interaction matrix every candidate model learns from.

Each event adds its type's weight (settings ``event_types.weights``), optionally decayed
by age with a half-life, so a purchase last week outweighs a view last year. Returns
carry negative weight; pairs whose total is not positive are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from shopsense.domain import IdIndex


@dataclass(frozen=True)
class Interactions:
    """A CSR matrix (users x items) of interest weights with the vocabularies of its rows and columns."""

    matrix: sp.csr_matrix
    users: IdIndex
    items: IdIndex


def build_interactions(
    events: pa.Table,
    weights: dict[str, float],
    *,
    half_life_days: float | None = None,
    as_of: datetime | None = None,
    items: IdIndex | None = None,
) -> Interactions:
    """Aggregate ``events`` (user_id, item_id, type, timestamp) into weighted interactions.

    Args:
        weights: weight per event type; types absent from it count 0.
        half_life_days: age at which an event counts half; None means no decay.
        as_of: the time ages are measured from (default: the newest event), never later data.
        items: a fixed item vocabulary (e.g. the catalogue); unknown items are dropped from it.
    """
    user_ids = events.column("user_id").to_numpy(zero_copy_only=False).astype(str)
    item_ids = events.column("item_id").to_numpy(zero_copy_only=False).astype(str)
    types = events.column("type").to_numpy(zero_copy_only=False).astype(str)
    kinds, kind_of_event = np.unique(types, return_inverse=True)
    w = np.array([weights.get(kind, 0.0) for kind in kinds], dtype=float)[kind_of_event]
    if half_life_days is not None and len(types):
        ts = pc.cast(events.column("timestamp"), pa.timestamp("us", tz="UTC")).to_numpy(zero_copy_only=False)
        now = np.datetime64(as_of.replace(tzinfo=None), "us") if as_of else ts.max()
        age_days = (now - ts).astype("timedelta64[s]").astype(float) / 86_400
        w = w * np.power(0.5, np.maximum(age_days, 0) / half_life_days)
    uniq_users, u_idx = np.unique(user_ids, return_inverse=True)
    if items is None:
        uniq_items, i_idx = np.unique(item_ids, return_inverse=True)
        items = IdIndex(list(uniq_items))
    else:
        i_idx = np.array(items.index(list(item_ids)), dtype=np.int64)
        keep = i_idx >= 0
        u_idx, i_idx, w = u_idx[keep], i_idx[keep], w[keep]
    matrix = sp.csr_matrix((w, (u_idx, i_idx)), shape=(len(uniq_users), len(items)))
    matrix.sum_duplicates()
    matrix.data[matrix.data < 0] = 0
    matrix.eliminate_zeros()
    return Interactions(matrix, IdIndex(list(uniq_users)), items)
