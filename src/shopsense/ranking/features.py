"""Features of each (user, candidate) pair at an explicit ``as_of``: user, item, user x item and source evidence.

:class:`PairFeatures` is fitted on the interactions that end at ``as_of`` (every user's events,
for item popularity and co-occurrence); :meth:`PairFeatures.build` then reads only the given
histories (also ending at ``as_of``), so the same code serves a past training window and a
live request, and nothing after ``as_of`` can enter. One row per candidate pair, float32,
NaN where there is no evidence (LightGBM treats it as missing, the neural head as a flag).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from shopsense.features.interactions import Catalog, Interactions, Sequences
from shopsense.features.stats import DAY, item_stats, user_stats
from shopsense.models.neighbours import top_k_product
from shopsense.ranking.candidates import Candidates

CATEGORICAL = ("item_category",)
"""Columns holding codes, not quantities (LightGBM splits them as categories)."""


@dataclass(frozen=True)
class FeatureFrame:
    """Pair features: ``values[p]`` describes pair ``(users[p], items[p])``; ``related`` is, per pair, the
    user's recent item that co-occurs most with the candidate (-1 none), for explanations."""

    names: tuple[str, ...]
    values: np.ndarray
    users: np.ndarray
    items: np.ndarray
    related: np.ndarray

    @property
    def sources(self) -> tuple[str, ...]:
        """The candidate sources whose ranks are features, in column order."""
        return tuple(name.removeprefix("rank_") for name in self.names if name.startswith("rank_"))

    def source_rank(self, source: str) -> np.ndarray:
        """Each pair's 1-based rank in ``source``'s list (NaN: that source did not propose the item)."""
        rank: np.ndarray = self.values[:, self.names.index(f"rank_{source}")].astype(np.float64)
        return rank


class PairFeatures:
    """Item statistics and co-occurrence learned at ``as_of``; per-pair features built from histories."""

    def __init__(
        self, purchase_types: tuple[str, ...], recent: int = 5, max_user_items: int = 200, neighbours: int = 500
    ) -> None:
        self.purchase_types = purchase_types
        self.recent = recent
        self.max_user_items = max_user_items
        self.neighbours = neighbours

    def fit(self, data: Interactions) -> PairFeatures:
        """Item popularity, conversion and age, and item-item co-occurrence, from every user's events."""
        if data.sequences is None or data.as_of is None:
            raise ValueError("pair features need event sequences with times: build interactions from events")
        n_items = data.matrix.shape[1]
        self.as_of_ = data.as_of
        self.type_names_ = data.sequences.type_names
        self.catalog_ = data.catalog
        self.items_ = item_stats(data.sequences, n_items, data.as_of, self.purchase_types, data.catalog)
        self.cooc_ = _cosine_cooccurrence(data.matrix, self.max_user_items, self.neighbours)
        self.cooc_.sum_duplicates()  # canonical (sorted, unique) rows: sparse_values searches them
        return self

    def build(self, history: Interactions, candidates: Candidates) -> FeatureFrame:
        """One feature row per candidate pair of ``history``'s users (row-major, as ``candidates.pairs``)."""
        seq = history.sequences
        if seq is None:
            raise ValueError("pair features need the users' event sequences")
        as_of = history.as_of if history.as_of is not None else self.as_of_
        users, items = candidates.pairs()
        columns: dict[str, np.ndarray] = {}
        for name, values in user_stats(seq, as_of, self.purchase_types, self.catalog_).items():
            columns[name] = values[users]
        for name, values in self.items_.items():
            columns[name] = values[items]
        category = self.catalog_.category if self.catalog_ is not None else np.full(len(self.items_["item_events"]), -1)
        columns["item_category"] = np.where(category[items] >= 0, category[items], np.nan)
        scores, ranks = candidates.flat(candidates.scores), candidates.flat(candidates.ranks)
        for index, source in enumerate(candidates.sources):
            columns[f"score_{source}"] = scores[:, index]
            columns[f"rank_{source}"] = ranks[:, index]
        columns["n_sources"] = (~np.isnan(ranks)).sum(axis=1).astype(float)
        columns.update(self._user_item(seq, history.matrix.shape, users, items, as_of))
        columns.update(_affinity(seq, users, items, self.catalog_))
        columns["price_vs_user"] = columns["item_price"] / columns["user_mean_price"]
        cooc, related = self._recent_cooccurrence(seq, users, items)
        columns["cooc_recent"] = cooc
        names = tuple(columns)
        values = np.column_stack([columns[name] for name in names]).astype(np.float32)
        return FeatureFrame(names, values, users, items, related)

    def _user_item(
        self, seq: Sequences, shape: tuple[int, int], users: np.ndarray, items: np.ndarray, as_of: int
    ) -> dict[str, np.ndarray]:
        """How often the user did each event type with this very item, and how long ago the last time was.

        Looked up by (user, item) key in the events' sorted keys, not through a sparse matrix per event
        type: building and indexing those was a quarter of a live recommendation's time."""
        keys = seq.owners().astype(np.int64) * shape[1] + seq.items
        wanted = users.astype(np.int64) * shape[1] + items
        out = {}
        for name in self.type_names_:
            out[f"user_item_{name}s"] = key_counts(keys[seq.types == seq.type_code(name)], wanted)
        # Sequences are time-ordered per user, so the last occurrence of a (user, item) key is its latest event.
        unique, last = np.unique(keys[::-1], return_index=True)
        last = len(keys) - 1 - last
        at = np.minimum(np.searchsorted(unique, wanted), max(len(unique) - 1, 0))
        found = (unique[at] == wanted) if len(unique) else np.zeros(len(wanted), dtype=bool)
        shifted = (as_of - seq.times[last[at]]) / DAY + 1.0 if len(unique) else np.zeros(len(wanted))
        # Only an event after as_of gives an age of -1 day or less: treated as never, as before.
        out["user_item_days_since"] = np.where(found & (shifted > 0), shifted - 1.0, np.nan)
        return out

    def _recent_cooccurrence(
        self, seq: Sequences, users: np.ndarray, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sum of co-occurrence between the candidate and the user's last few items, and the strongest of them."""
        total = np.zeros(len(users))
        best = np.zeros(len(users))
        related = np.full(len(users), -1, dtype=np.int64)
        ends = seq.indptr[1:][users]
        starts = seq.indptr[:-1][users]
        for back in range(1, self.recent + 1):
            position = ends - back
            present = position >= starts
            recent_item = np.where(present, seq.items[np.maximum(position, 0)] if len(seq.items) else 0, 0)
            value = np.where(present, sparse_values(self.cooc_, recent_item, items), 0.0)
            value = np.where(recent_item == items, 0.0, value)
            total += value
            stronger = value > best
            best = np.where(stronger, value, best)
            related = np.where(stronger, recent_item, related)
        return total, related


def key_counts(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """How many times each of ``wanted`` occurs in ``keys``, as floats, by binary search in the sorted keys:
    the counts a sparse matrix of ones would hold, without building one."""
    ordered = np.sort(keys)
    counts: np.ndarray = np.searchsorted(ordered, wanted, "right") - np.searchsorted(ordered, wanted, "left")
    return counts.astype(np.float64)


def sparse_values(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``matrix[rows, cols]`` of a canonical CSR matrix, by a binary search within each row, all lookups at once.

    scipy's fancy indexing scans the whole row for each lookup when there are few lookups for the
    matrix's size, and the co-occurrence rows of popular items hold thousands of entries.
    """
    indptr, indices = matrix.indptr, matrix.indices
    lo, hi = indptr[rows].astype(np.int64), indptr[rows + 1].astype(np.int64)
    end = hi.copy()
    last = max(len(indices) - 1, 0)
    while (active := lo < hi).any():
        mid = (lo + hi) // 2
        right = active & (indices[np.minimum(mid, last)] < cols)
        lo = np.where(right, mid + 1, lo)
        hi = np.where(active & ~right, mid, hi)
    at = np.minimum(lo, last)
    found = (lo < end) & (indices[at] == cols) if len(indices) else np.zeros(len(rows), dtype=bool)
    values: np.ndarray = np.where(found, matrix.data[at] if len(indices) else 0.0, 0.0)
    return values


def _affinity(seq: Sequences, users: np.ndarray, items: np.ndarray, catalog: Catalog | None) -> dict[str, np.ndarray]:
    """Share of the user's events in the candidate's category and brand (NaN where the item has none)."""
    out = {}
    owners = seq.owners()
    totals = np.maximum(np.diff(seq.indptr), 1)[users]
    for field, codes in (
        ("category", catalog.category if catalog else None),
        ("brand", catalog.brand if catalog else None),
    ):
        if codes is None or not (codes >= 0).any():
            out[f"user_{field}_share"] = np.full(len(users), np.nan)
            continue
        width = int(codes.max()) + 1
        event_codes = codes[seq.items]
        known = event_codes >= 0
        item_codes = codes[items]
        found = key_counts(
            owners[known].astype(np.int64) * width + event_codes[known],
            users.astype(np.int64) * width + np.maximum(item_codes, 0),
        )
        out[f"user_{field}_share"] = np.where(item_codes >= 0, found / totals, np.nan)
    return out


def _cosine_cooccurrence(matrix: sp.csr_matrix, max_user_items: int, neighbours: int) -> sp.csr_matrix:
    """Item x item co-occurrence (users who had both), cosine-normalised, the ``neighbours`` strongest per item.

    Users with more than ``max_user_items`` distinct items (wholesalers, bots) are left out:
    their pairs are nearly all of the cost and say little about what goes together. Only the
    strongest pairs are kept (built a block of items at a time): the whole product of a large
    catalogue does not fit in memory, and a weak pair is as good as none as a feature.
    """
    binary = (matrix > 0).astype(np.float32).tocsr()
    sizes = np.diff(binary.indptr)
    binary = binary[np.flatnonzero(sizes <= max_user_items)]
    counts = np.asarray(binary.sum(axis=0)).ravel()
    norm = 1.0 / np.sqrt(np.maximum(counts, 1))

    def cosine(rows: np.ndarray, cols: np.ndarray, co: np.ndarray) -> np.ndarray:
        out: np.ndarray = co * norm[rows] * norm[cols]
        return out

    by_item = binary.T.tocsr()
    return top_k_product(by_item, binary, neighbours, cosine, skip_diagonal=True, desc="co-occurrence")
