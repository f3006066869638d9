"""The model contract, run for every registered model, plus a known-answer oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from shopsense.domain import IdIndex
from shopsense.errors import ShopsenseError
from shopsense.features.interactions import Interactions
from shopsense.models import EASE, MODELS, EASEConfig, Recommender
from shopsense.models.base import NotFitted


def checkerboard(users: int = 40, items: int = 20, seed: int = 0) -> Interactions:
    """Even users like even items, odd users odd items: the right answer is known."""
    rng = np.random.default_rng(seed)
    liked = (np.arange(users)[:, None] % 2) == (np.arange(items)[None, :] % 2)
    taken = liked & (rng.random((users, items)) < 0.5)
    matrix = sp.csr_matrix(taken.astype(float))
    return Interactions(matrix, IdIndex([f"u{u}" for u in range(users)]), IdIndex([f"i{i}" for i in range(items)]))


@pytest.fixture(params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> Recommender:
    return MODELS[request.param]()


def test_unfitted_model_refuses(model: Recommender) -> None:
    with pytest.raises(NotFitted, match="call fit"):
        model.recommend(sp.csr_matrix((1, 20)), 5)


def test_single_and_batch_agree_and_runs_repeat(model: Recommender) -> None:
    data = checkerboard()
    model.fit(data)
    batch_items, batch_scores = model.recommend(data.matrix, 5)
    for u in (0, 7, 39):
        items, scores = model.recommend(data.matrix[u], 5)
        assert (items[0] == batch_items[u]).all()
        assert scores[0] == pytest.approx(batch_scores[u])
    again = type(model)(model.config).fit(data).recommend(data.matrix, 5)[0]
    assert (again == batch_items).all()


def test_exclusions_and_candidates_are_obeyed(model: Recommender) -> None:
    data = checkerboard()
    model.fit(data)
    items, _ = model.recommend(data.matrix, 8, exclude=data.matrix)
    seen = data.matrix.toarray() > 0
    assert not seen[np.arange(40)[:, None], np.where(items >= 0, items, 0)][items >= 0].any()
    allowed = np.array([1, 3, 4])
    only, scores = model.recommend(data.matrix, 5, candidates=allowed)
    assert set(only[only >= 0].ravel()) <= set(allowed)
    assert (only[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()


def test_save_and_load_round_trip(model: Recommender, tmp_path: Path) -> None:
    data = checkerboard()
    model.fit(data)
    model.save(tmp_path / "m.bin")
    loaded = type(model).load(tmp_path / "m.bin")
    assert (loaded.recommend(data.matrix, 5)[0] == model.recommend(data.matrix, 5)[0]).all()
    (tmp_path / "junk.bin").write_bytes(b"nope")
    with pytest.raises(ShopsenseError, match="not a shopsense model"):
        type(model).load(tmp_path / "junk.bin")


@pytest.mark.parametrize("name", ["item_knn", "ease"])
def test_oracle_personal_models_recommend_the_users_parity(name: str) -> None:
    data = checkerboard()
    model = MODELS[name]().fit(data)
    items, scores = model.recommend(data.matrix, 5, exclude=data.matrix)
    right = (items % 2) == (np.arange(40)[:, None] % 2)
    assert right[:, 0].all(), "the best unseen item has the user's parity"
    assert right[scores > 0].all(), "no positive score for the other parity"


def test_oracle_popular_ranks_by_count() -> None:
    matrix = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0]], dtype=float))
    data = Interactions(matrix, IdIndex(["a", "b", "c"]), IdIndex(["x", "y", "z"]))
    items, _ = MODELS["popular"]().fit(data).recommend(matrix[:1], 3)
    assert items[0].tolist() == [0, 1, 2]  # x (3 users), then y and z tied at 1: lower index first


def test_ease_guards_its_memory() -> None:
    data = checkerboard()
    with pytest.raises(ShopsenseError, match="raise max_items"):
        EASE(EASEConfig(max_items=10, over_limit="refuse")).fit(data)
    capped = EASE(EASEConfig(max_items=10)).fit(data)
    items, _ = capped.recommend(data.matrix, 20)
    assert len(set(items[items >= 0].ravel())) <= 10
