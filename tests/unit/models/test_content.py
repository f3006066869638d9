"""Content model: text decides, new items are reachable, textless items are harmless."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from shopsense.domain import IdIndex
from shopsense.features.interactions import Catalog, Interactions, as_history
from shopsense.models.base import NotFitted, RecQuery
from shopsense.models.content import Content, ContentConfig
from tests.contracts.test_models import checkerboard

SHOP = (
    "red running shoe",
    "red leather shoe",
    "red canvas shoe",
    "blue electric kettle",
    "blue steel kettle",
    "blue glass kettle",
    "red suede shoe",  # new: nobody has touched it yet
    "",  # no metadata
)
NEW, TEXTLESS = 6, 7


def shop(texts: tuple[str, ...] = SHOP) -> Interactions:
    """Shopper a bought two shoes, shopper b two kettles; nobody touched the new shoe or the textless item."""
    matrix = sp.csr_matrix(([10.0, 10.0, 10.0, 1.0], ([0, 0, 1, 1], [0, 1, 3, 4])), shape=(2, len(texts)))
    catalog = Catalog(texts, np.full(len(texts), -1, dtype=np.int32), ())
    return Interactions(matrix, IdIndex(["a", "b"]), IdIndex([f"i{i}" for i in range(len(texts))]), catalog=catalog)


def test_shoe_buyer_gets_shoes_kettle_buyer_kettles() -> None:
    data = shop()
    items = Content().fit(data).recommend(RecQuery(data, 2, exclude=data.matrix)).items
    assert set(items[0]) == {2, NEW}
    assert items[1, 0] == 5


def test_profile_weighs_interest() -> None:
    bought_shoe_viewed_kettle = sp.csr_matrix(([10.0, 1.0], ([0, 0], [0, 3])), shape=(1, len(SHOP)))
    query = RecQuery(as_history(bought_shoe_viewed_kettle), 2, exclude=bought_shoe_viewed_kettle)
    items = Content().fit(shop()).recommend(query).items
    assert set(items[0]) <= {1, 2, NEW}


def test_item_without_interactions_is_similar_and_recommendable_by_text() -> None:
    model = Content().fit(shop())
    similar = model.similar_items(np.array([1]), 3).items
    assert NEW in similar[0]
    assert set(similar[0]) <= {0, 2, NEW}, "no kettle is like a shoe"
    new_shopper = sp.csr_matrix(([1.0], ([0], [NEW])), shape=(1, len(SHOP)))
    items = model.recommend(RecQuery(as_history(new_shopper), 3, exclude=new_shopper)).items
    assert set(items[0]) == {0, 1, 2}


def test_textless_item_scores_zero_and_has_no_neighbours() -> None:
    data = shop()
    model = Content().fit(data)
    scores = model.recommend(RecQuery(data, len(SHOP), candidates=np.array([TEXTLESS]))).scores
    assert (scores[:, 0] == 0).all()
    related = model.similar_items(np.array([TEXTLESS]), 3)
    similar, sims = related.items, related.scores
    assert (similar == -1).all() and np.isneginf(sims).all()


def test_oracle_checkerboard_titles_give_the_users_parity() -> None:
    data = checkerboard()  # titles "even thing 4", "odd thing 7"
    items = Content().fit(data).recommend(RecQuery(data, 20, exclude=data.matrix)).items
    right = ((items % 2) == (np.arange(40)[:, None] % 2)) & (items >= 0)
    assert right[:, 0].all()
    assert (np.diff(right.astype(int), axis=1) <= 0).all(), "every unseen item of the user's parity comes first"


def test_unfitted_model_refuses_similar_items() -> None:
    with pytest.raises(NotFitted, match="call fit"):
        Content().similar_items(np.array([0]), 3)


def test_missing_or_empty_text_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="needs a catalogue with item text"):
        Content().fit(replace(shop(), catalog=None))
    with pytest.raises(ValueError, match="every item's text is empty"):
        Content().fit(shop(("", " ") * 4))
    short = shop()
    assert short.catalog is not None
    with pytest.raises(ValueError, match="catalogue has text for 7 items"):
        Content().fit(replace(short, catalog=replace(short.catalog, text=SHOP[:7])))


def test_saved_model_scores_like_the_original(tmp_path: Path) -> None:
    data = shop()
    model = Content(ContentConfig(char_ngrams=False)).fit(data)
    model.save(tmp_path / "content.bin")
    loaded = Content.load(tmp_path / "content.bin")
    assert np.array_equal(loaded.recommend(RecQuery(data, 4)).items, model.recommend(RecQuery(data, 4)).items)


@pytest.fixture(scope="module")
def minilm() -> Content:
    """One MiniLM fit for the module: loading the network takes seconds."""
    texts = ("sofa", "couch", "bicycle", "garden hose", "", "", "", "")
    return Content(ContentConfig(encoder="minilm")).fit(shop(texts))


def test_minilm_knows_a_couch_is_a_sofa(minilm: Content) -> None:
    similar = minilm.similar_items(np.array([0, 4]), 3).items
    assert similar[0, 0] == 1, "words with no letters in common, one meaning"
    assert (similar[1] == -1).all(), "an item without text has no neighbours"


def test_minilm_model_is_saved_without_the_network(minilm: Content, tmp_path: Path) -> None:
    minilm.save(tmp_path / "minilm.bin")
    assert (tmp_path / "minilm.bin").stat().st_size < 64_000, "only the 8 x 384 item vectors"
    loaded = Content.load(tmp_path / "minilm.bin")
    assert np.array_equal(loaded.similar_items(np.array([0]), 3).items, minilm.similar_items(np.array([0]), 3).items)
