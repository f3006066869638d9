"""User-kNN: neighbours' items, never the user as their own neighbour."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from shopsense.domain import IdIndex
from shopsense.features.interactions import Interactions, as_history
from shopsense.models.base import RecQuery
from shopsense.models.userknn import UserIds, UserKNN, UserKNNConfig


def test_twin_users_recommend_each_others_items_but_not_from_themselves() -> None:
    matrix = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]], dtype=float))
    data = Interactions(matrix, IdIndex(["a", "b", "c"]), IdIndex(["w", "x", "y", "z"]))
    model = UserKNN(UserKNNConfig(neighbours=1, shrinkage=0)).fit(data)
    ranked = model.recommend(RecQuery(data, 1, exclude=matrix))
    items, scores = ranked.items, ranked.scores
    assert items[0, 0] == 2, "a's twin b bought y"
    assert items[2, 0] in (0, 1, 2) and scores[2, 0] == 0, "c has no neighbour sharing an item"
    live = sp.csr_matrix(np.array([[0, 0, 0, 1.0]]))
    assert np.isneginf(model.recommend(RecQuery(as_history(live), 4, exclude=live)).scores).sum() == 1


def test_an_erased_training_user_is_nobodys_neighbour_any_more() -> None:
    matrix = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]], dtype=float))
    data = Interactions(matrix, IdIndex(["a", "b", "c"]), IdIndex(["w", "x", "y", "z"]))
    model = UserKNN(UserKNNConfig(neighbours=2, shrinkage=0)).fit(data)
    shopper = sp.csr_matrix(np.array([[1.0, 1.0, 0, 0]]))  # a new history like a's and b's

    def suggests_y() -> bool:
        ranked = model.recommend(RecQuery(as_history(shopper), 2, exclude=shopper))
        items, scores = ranked.items, ranked.scores
        return any(i == 2 and s > 0 for i, s in zip(items[0], scores[0], strict=True))

    assert suggests_y(), "only b bought y"
    assert model.forget_users(lambda user: user == "nobody") == 0
    assert model.forget_users(lambda user: user == "b") == 1
    assert not suggests_y(), "b's history is gone from the model"


def test_users_named_by_id_are_found_through_the_index_and_only_their_rows_emptied() -> None:
    rng = np.random.default_rng(3)
    matrix = sp.random(500, 40, density=0.2, format="csr", random_state=rng)
    users = [f"u{i}" for i in range(500)]
    data = Interactions(matrix, IdIndex(users), IdIndex([f"i{j}" for j in range(40)]))
    model = UserKNN().fit(data)
    before = model.train_

    assert model.forget_users(UserIds({"nobody"})) == 0
    assert model.forget_users(UserIds({"u7", "u300", "nobody"})) == 2
    assert model.train_ is not before, "a new matrix replaces the one requests may be reading"
    assert before[7].nnz > 0, "the old matrix is left as it was"
    assert model.train_[7].nnz == 0 and model.train_[300].nnz == 0
    assert model.norms_[7] == 0 and model.norms_[300] == 0
    kept = np.setdiff1d(np.arange(500), [7, 300])
    assert (model.train_[kept] != before[kept]).nnz == 0, "everyone else's rows are untouched"
    assert model.forget_users(lambda user: user == "u8") == 1, "any predicate still works"
    assert model.train_[8].nnz == 0
