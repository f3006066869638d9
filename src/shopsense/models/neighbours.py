"""Nearest neighbours from sparse products, computed a block of rows at a time.

The item x item co-occurrence of a retail catalogue is nearly dense among its popular items: at
50k items the whole product held billions of entries and a 10M-event training ran out of 24 GiB.
Every neighbour model keeps only the top few per row anyway, so the rows are multiplied in blocks
sized by the entries they can produce, and each block is cut to its top ``k`` before the next one
starts. Memory is then the block budget plus the kept neighbours, whatever the catalogue, and the
result is exactly the full product's top ``k`` (each row's sums run in the same order either way).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

BLOCK_ENTRIES = 8_000_000
"""Product entries one block may hold (about 60 bytes each while it is weighed and cut: ~0.5 GB)."""

Weigh = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(row index in the whole product, column index, raw product value) -> the value to rank by."""


def top_k_product(
    left: sp.csr_matrix,
    right: sp.csr_matrix,
    k: int,
    weigh: Weigh | None = None,
    *,
    skip_diagonal: bool = False,
    budget: int = BLOCK_ENTRIES,
    desc: str = "neighbours",
) -> sp.csr_matrix:
    """The ``k`` largest entries of each row of ``weigh(left @ right)``, never holding more than ``budget``
    product entries at once.

    ``skip_diagonal`` drops entry ``(i, i)`` (an item is not its own neighbour). Zeros are dropped
    before and after weighing; ties at the cut go to the lower column index.
    """
    left, right = left.tocsr(), right.tocsr()
    n_rows, n_cols = left.shape[0], right.shape[1]
    bounds = _row_blocks(left, right, budget)
    parts: list[sp.csr_matrix] = []
    blocks = pairwise(bounds.tolist())
    for start, stop in tqdm(blocks, total=len(bounds) - 1, desc=desc, unit="block", leave=False, disable=None):
        block = (left[start:stop] @ right).tocsr()
        rows = np.repeat(np.arange(start, stop), np.diff(block.indptr))
        if skip_diagonal:
            block.data[block.indices == rows] = 0
        block.eliminate_zeros()
        block.sort_indices()
        if weigh is not None:
            rows = np.repeat(np.arange(start, stop), np.diff(block.indptr))
            block = sp.csr_matrix((weigh(rows, block.indices, block.data), block.indices, block.indptr), block.shape)
            block.eliminate_zeros()
        parts.append(keep_top(block, k))
    if not parts:
        return sp.csr_matrix((n_rows, n_cols))
    return sp.vstack(parts, format="csr")


def nearest_users(
    history: sp.csr_matrix,
    own: np.ndarray,
    train: sp.csr_matrix,
    k: int,
    weigh: Weigh | None = None,
    *,
    desc: str = "similar users",
) -> sp.csr_matrix:
    """The ``k`` training users (rows of ``train``) most alike each row of ``history``, by ``weigh`` of the
    overlap, never the row's own training user: ``own[i]`` is history row i's row in ``train`` (-1 for
    someone new). A shopper compared with their own training row would be their own best neighbour.
    """

    def not_own(rows: np.ndarray, cols: np.ndarray, overlap: np.ndarray) -> np.ndarray:
        weighed = overlap if weigh is None else weigh(rows, cols, overlap)
        return np.where(cols == own[rows], 0.0, weighed)

    return top_k_product(history, train.T.tocsr(), k, not_own, desc=desc)


def _row_blocks(left: sp.csr_matrix, right: sp.csr_matrix, budget: int) -> np.ndarray:
    """Row boundaries such that each block's product has at most ``budget`` entries (or is one row).

    A row of the product has at most as many entries as the right-hand rows it touches hold, and
    never more than there are columns: that bound, summed, sizes the blocks without multiplying.
    """
    touched = sp.csr_matrix((np.ones(left.nnz), left.indices, left.indptr), shape=left.shape)
    bound = np.minimum(touched @ np.diff(right.indptr).astype(np.float64), right.shape[1])
    ends = np.cumsum(bound)
    bounds = [0]
    while bounds[-1] < left.shape[0]:
        start = bounds[-1]
        before = ends[start - 1] if start else 0.0
        stop = int(np.searchsorted(ends, before + budget, side="right"))
        bounds.append(min(max(stop, start + 1), left.shape[0]))
    return np.asarray(bounds)


def neighbour_similarity(
    vectors: sp.csr_matrix, neighbours: int, shrinkage: float, asymmetry: float = 0.5, binary: bool = False
) -> sp.csr_matrix:
    """Row x row asymmetric-cosine similarity of sparse vectors, top ``neighbours`` per row, no self.

    Shared by item-kNN (rows are items) and user-kNN (rows are users).
    """
    x = vectors.tocsr().astype(np.float64)
    if binary:
        x.data[:] = 1.0
    sq = np.asarray(x.multiply(x).sum(axis=1)).ravel()
    left_power, right_power = np.power(sq, asymmetry), np.power(sq, 1 - asymmetry)

    def shrunk(rows: np.ndarray, cols: np.ndarray, co: np.ndarray) -> np.ndarray:
        out: np.ndarray = co / (left_power[rows] * right_power[cols] + shrinkage)
        return out

    # Ties at the top-n cut go to the lower index, as on Spark (shopsense.spark.cooccurrence).
    return top_k_product(x, x.T.tocsr(), neighbours, shrunk, skip_diagonal=True, desc="similar items")


def keep_top(sim: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Keep the n largest entries of each row (vectorised over the CSR arrays)."""
    sim = sim.tocsr()
    counts = np.diff(sim.indptr)
    row_of = np.repeat(np.arange(sim.shape[0]), counts)
    order = np.lexsort((-sim.data, row_of))
    rank = np.arange(len(order)) - np.repeat(sim.indptr[:-1], counts)
    keep = order[rank < n]
    return sp.csr_matrix((sim.data[keep], (row_of[keep], sim.indices[keep])), shape=sim.shape)
