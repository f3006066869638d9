from __future__ import annotations

import numpy as np
import pytest

from shopsense.features.interactions import Interactions
from shopsense.models.base import RecQuery
from shopsense.models.registry import build_model
from shopsense.ranking.candidates import CandidateConfig, CandidateGenerator, Source


def test_union_keeps_every_source_list_with_its_rank(shop: Interactions) -> None:
    config = CandidateConfig(
        sources=(Source(name="pop", model="popular", n=5), Source(name="knn", model="item_knn", n=8))
    )
    generator = CandidateGenerator(config).fit(shop)
    history = shop.rows(np.arange(12))
    got = generator.generate(history)
    assert got.sources == ("pop", "knn")
    for index, (name, n) in enumerate((("popular", 5), ("item_knn", 8))):
        expected = build_model(name).fit(shop).recommend(RecQuery(history, n)).items
        for row in range(12):
            present = got.items[row] >= 0
            items = got.items[row][present]
            assert len(set(items.tolist())) == len(items), "each candidate once per user"
            ranks = got.ranks[row][present][:, index]
            listed = expected[row][expected[row] >= 0]
            for rank, item in enumerate(listed.tolist(), 1):
                assert ranks[items.tolist().index(item)] == rank
            assert np.isnan(ranks[~np.isin(items, listed)]).all(), "absent from a source: NaN, not 0"
    users, items = got.pairs()
    assert len(users) == int((got.items >= 0).sum()) and got.flat(got.scores).shape == (len(users), 2)


def test_exclusions_reach_every_source(shop: Interactions) -> None:
    generator = CandidateGenerator().fit(shop)
    history = shop.rows(np.arange(10))
    got = generator.generate(history, exclude=history.matrix)
    seen = history.matrix.toarray() > 0
    rows, cols = np.nonzero(got.items >= 0)
    assert not seen[rows, got.items[rows, cols]].any()


def test_optional_source_is_skipped_required_one_stops(shop: Interactions) -> None:
    from dataclasses import replace

    bare = replace(shop, catalog=None)
    text = Source(name="text", model="content", n=5, optional=True)
    generator = CandidateGenerator(CandidateConfig(sources=(Source(name="pop", model="popular"), text))).fit(bare)
    assert generator.generate(bare.rows(np.arange(2))).sources == ("pop",)
    assert "text" in generator.skipped_
    required = CandidateConfig(sources=(text.model_copy(update={"optional": False}),))
    with pytest.raises(ValueError, match="candidate source 'text'"):
        CandidateGenerator(required).fit(bare)


def test_source_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        CandidateConfig(sources=(Source(name="a", model="popular"), Source(name="a", model="item_knn")))
