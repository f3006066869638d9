"""ALS: the checkerboard oracle, histories scored from their own rows, reproducible fits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from shopsense.features.interactions import as_history
from shopsense.models.als import ALS, ALSConfig
from shopsense.models.base import NotFitted, RecQuery
from tests.contracts.test_models import checkerboard

SMALL = ALSConfig(factors=8, threads=1)


def test_oracle_recommends_the_users_parity() -> None:
    data = checkerboard()
    items = ALS(SMALL).fit(data).recommend(RecQuery(data, 5, exclude=data.matrix)).items
    right = (items[:, 0] % 2) == (np.arange(40) % 2)
    assert right.all(), "the best unseen item has the user's parity"


def test_any_history_is_scored_from_its_row_not_its_position() -> None:
    data = checkerboard()
    model = ALS(SMALL).fit(data)
    odd_shopper = sp.csr_matrix(([10.0, 1.0], ([0, 0], [3, 7])), shape=(1, 20))  # never seen in training
    # Training user 1 (odd) sits in row 0, where training user 0 (even) was.
    history = sp.vstack([data.matrix[1], odd_shopper]).tocsr()
    items = model.recommend(RecQuery(as_history(history), 2, exclude=history)).items
    assert (items % 2 == 1).all()


def test_unfitted_model_refuses_similar_items() -> None:
    with pytest.raises(NotFitted, match="call fit"):
        ALS(SMALL).similar_items(np.array([0]), 3)


def test_similar_items_share_the_parity() -> None:
    model = ALS(SMALL).fit(checkerboard())
    related = model.similar_items(np.array([0, 5]), 3)
    items, scores = related.items, related.scores
    assert (items[0] % 2 == 0).all() and (items[1] % 2 == 1).all()
    assert np.isfinite(scores).all()


def test_same_seed_same_model_whatever_the_threads() -> None:
    data = checkerboard()
    one = ALS(SMALL).fit(data)
    two = ALS(SMALL.model_copy(update={"threads": 2})).fit(data)
    assert np.array_equal(one.item_factors_, two.item_factors_)
    other = ALS(SMALL.model_copy(update={"seed": 1})).fit(data)
    assert not np.array_equal(one.item_factors_, other.item_factors_)


def test_saved_model_scores_like_the_original(tmp_path: Path) -> None:
    data = checkerboard()
    model = ALS(SMALL).fit(data)
    model.save(tmp_path / "als.bin")
    loaded = ALS.load(tmp_path / "als.bin")
    assert np.array_equal(loaded.recommend(RecQuery(data, 5)).items, model.recommend(RecQuery(data, 5)).items)
