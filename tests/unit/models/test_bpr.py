"""BPR: the checkerboard oracle, histories folded in from their own rows, reproducible fits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from shopsense.features.interactions import as_history
from shopsense.models.base import RecQuery
from shopsense.models.bpr import BPR, BPRConfig
from tests.contracts.test_models import checkerboard

# The checkerboard has few positives per epoch: a larger step trains it in a few milliseconds.
SMALL = BPRConfig(factors=8, learning_rate=0.05, iterations=200)


def test_oracle_recommends_the_users_parity() -> None:
    data = checkerboard()
    items = BPR(SMALL).fit(data).recommend(RecQuery(data, 5, exclude=data.matrix)).items
    right = (items[:, 0] % 2) == (np.arange(40) % 2)
    assert right.all(), "the best unseen item has the user's parity"


def test_any_history_is_folded_in_from_its_row_not_its_position() -> None:
    data = checkerboard()
    model = BPR(SMALL).fit(data)
    odd_shopper = sp.csr_matrix(([10.0, 1.0], ([0, 0], [3, 7])), shape=(1, 20))  # never seen in training
    # Training user 1 (odd) sits in row 0, where training user 0 (even) was.
    history = sp.vstack([data.matrix[1], odd_shopper]).tocsr()
    items = model.recommend(RecQuery(as_history(history), 2, exclude=history)).items
    assert (items % 2 == 1).all()


def test_empty_history_still_gets_a_full_list() -> None:
    model = BPR(SMALL).fit(checkerboard())
    ranked = model.recommend(RecQuery(as_history(sp.csr_matrix((1, 20))), 20))
    items, scores = ranked.items, ranked.scores
    assert sorted(items[0]) == list(range(20)) and np.isfinite(scores).all()


def test_similar_items_share_the_parity() -> None:
    model = BPR(SMALL).fit(checkerboard())
    related = model.similar_items(np.array([0, 5]), 3)
    items, scores = related.items, related.scores
    assert (items[0] % 2 == 0).all() and (items[1] % 2 == 1).all()
    assert np.isfinite(scores).all()


def test_same_seed_same_model() -> None:
    data = checkerboard()
    one, two = BPR(SMALL).fit(data), BPR(SMALL).fit(data)
    assert np.array_equal(one.item_factors_, two.item_factors_)
    query = RecQuery(data, 20)
    assert np.array_equal(one.recommend(query).scores, two.recommend(query).scores), "bias included"
    other = BPR(SMALL.model_copy(update={"seed": 1})).fit(data)
    assert not np.array_equal(one.item_factors_, other.item_factors_)


def test_saved_model_scores_like_the_original(tmp_path: Path) -> None:
    data = checkerboard()
    model = BPR(SMALL).fit(data)
    model.save(tmp_path / "bpr.bin")
    loaded = BPR.load(tmp_path / "bpr.bin")
    assert np.array_equal(loaded.recommend(RecQuery(data, 5)).items, model.recommend(RecQuery(data, 5)).items)
