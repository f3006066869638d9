"""User-kNN: neighbours' items, never the user as their own neighbour."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from shopsense.domain import IdIndex
from shopsense.features.interactions import Interactions
from shopsense.models.userknn import UserKNN, UserKNNConfig


def test_twin_users_recommend_each_others_items_but_not_from_themselves() -> None:
    matrix = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]], dtype=float))
    data = Interactions(matrix, IdIndex(["a", "b", "c"]), IdIndex(["w", "x", "y", "z"]))
    model = UserKNN(UserKNNConfig(neighbours=1, shrinkage=0)).fit(data)
    items, scores = model.recommend(data, 1, exclude=matrix)
    assert items[0, 0] == 2, "a's twin b bought y"
    assert items[2, 0] in (0, 1, 2) and scores[2, 0] == 0, "c has no neighbour sharing an item"
    live = sp.csr_matrix(np.array([[0, 0, 0, 1.0]]))
    assert np.isneginf(model.recommend(live, 4, exclude=live)[1]).sum() == 1
