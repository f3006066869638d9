from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shopsense.errors import ConfigError
from shopsense.features.interactions import Interactions, build_interactions
from shopsense.pipeline import Pipeline, PipelineConfig, load_pipeline, repeat_share
from shopsense.services.recommendation import pipeline_config
from shopsense.settings import DEFAULT_EVENT_TYPES, load_settings
from tests.conftest import events_table

FAST = {"ranker": {"boost": {"max_trees": 60}}}


@pytest.fixture(scope="module")
def fitted(shop: Interactions) -> Pipeline:
    return Pipeline(PipelineConfig.model_validate(FAST)).fit(shop)


def _category(shop: Interactions, item_id: str) -> str:
    assert shop.catalog is not None
    return shop.catalog.categories[int(shop.catalog.category[shop.items.index([item_id])[0]])]


def test_every_recommendation_has_scores_sources_and_a_reason(fitted: Pipeline, shop: Interactions) -> None:
    recs = fitted.recommend(shop.rows(np.arange(10)), 5)
    assert [len(row) for row in recs] == [5] * 10
    assert any(r.explanation.evidence == "goes_with" for row in recs for r in row), "the related-item branch ran"
    for row in recs:
        assert len({r.item_id for r in row}) == 5
        assert [r.score for r in row] == sorted((r.score for r in row), reverse=True)
        for rec in row:
            assert rec.sources and rec.explanation.reason and rec.explanation.contributions
            assert 0 <= rec.p_attention <= 1 and 0 <= rec.p_purchase <= 1
            if rec.explanation.evidence == "goes_with":
                related = rec.explanation.related_item
                assert related is not None and shop.catalog is not None
                assert shop.catalog.titles[shop.items.index([related])[0]] in rec.explanation.reason


def test_rules_hold_per_request(fitted: Pipeline, shop: Interactions) -> None:
    top = _category(shop, fitted.recommend(shop.rows(np.array([0])), 1)[0][0].item_id).split(" > ")[0]
    recs = fitted.recommend(shop.rows(np.arange(20)), 8, rules={"exclude_categories": [top]})
    assert all(not _category(shop, r.item_id).startswith(top) for row in recs for r in row)
    only = fitted.recommend(shop.rows(np.arange(20)), 8, rules={"include_categories": [top]})
    assert all(_category(shop, r.item_id).startswith(top) for row in only for r in row)
    assert shop.sequences is not None
    # Purchased items are excluded when the rules say so (no repeatable categories).
    seq = shop.sequences
    code = seq.type_code("purchase")
    for user, row in enumerate(fitted.recommend(shop.rows(np.arange(20)), 8, rules={"exclude_purchased": True})):
        mine = seq.items[seq.indptr[user] : seq.indptr[user + 1]][
            seq.types[seq.indptr[user] : seq.indptr[user + 1]] == code
        ]
        assert not {r.item_id for r in row} & set(shop.items.ids(mine.tolist()))


def test_pins_land_at_their_position(fitted: Pipeline, shop: Interactions) -> None:
    pinned = shop.items.values[7]
    recs = fitted.recommend(
        shop.rows(np.arange(5)), 6, rules={"exclude_purchased": False, "pins": [{"item_id": pinned, "position": 3}]}
    )
    for row in recs:
        assert row[2].item_id == pinned and row[2].pinned
        assert sum(r.item_id == pinned for r in row) == 1


def test_diversity_spreads_categories(fitted: Pipeline, shop: Interactions) -> None:
    users = shop.rows(np.arange(40))

    def distinct(recs: list) -> float:  # type: ignore[type-arg]
        return float(np.mean([len({_category(shop, r.item_id) for r in row}) for row in recs]))

    assert distinct(fitted.recommend(users, 10, diversity=0.2)) >= distinct(fitted.recommend(users, 10, diversity=1.0))


def test_bad_overrides_are_refused(fitted: Pipeline, shop: Interactions) -> None:
    with pytest.raises(ValueError, match="alpha"):
        fitted.recommend(shop.rows(np.array([0])), 5, alpha=1.5)
    with pytest.raises(ValueError, match="no_such_rule"):
        fitted.recommend(shop.rows(np.array([0])), 5, rules={"no_such_rule": True})


def test_pipeline_files_are_validated(tmp_path: Path) -> None:
    good = tmp_path / "home.toml"
    good.write_text("k = 4\n[ranker.fusion]\nalpha = 0.2\n[diversity]\nlam = 0.7\n")
    config = load_pipeline("home", [tmp_path])
    assert (config.name, config.k, config.ranker.fusion.alpha, config.diversity.lam) == ("home", 4, 0.2, 0.7)
    (tmp_path / "bad.toml").write_text("[ranker.fusion]\nalpha = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml.*alpha"):
        load_pipeline("bad", [tmp_path])
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline("missing", [tmp_path])
    assert load_pipeline("default", [tmp_path]) == PipelineConfig()


def test_repository_pipelines_load() -> None:
    folder = Path(__file__).resolve().parents[2] / "src" / "shopsense" / "data" / "pipelines"
    names = {path.stem: load_pipeline(str(path), []) for path in folder.glob("*.toml")}
    assert {"default", "homepage", "checkout"} <= set(names)
    assert names["default"] == PipelineConfig(), "the bundled default.toml documents the built-in defaults"


def test_bundled_pipelines_load_from_any_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # not the repository: an installed shopsense run from a shop's own folder
    settings = load_settings(None, data_dir=tmp_path / "data")
    assert pipeline_config(settings, "homepage").ranker.fusion.alpha == 0.7
    assert pipeline_config(settings, "checkout").name == "checkout"
    (tmp_path / "data" / "pipelines").mkdir(parents=True)
    (tmp_path / "data" / "pipelines" / "homepage.toml").write_text('name = "homepage"\nk = 4\n')
    assert pipeline_config(settings, "homepage").k == 4, "the data directory's own pipeline comes first"


def test_repeat_share_counts_rebuys_at_a_later_time_only() -> None:
    day = datetime(2024, 1, 1, tzinfo=UTC)
    later = datetime(2024, 1, 5, tzinfo=UTC)
    rows = [
        ("u1", "a", "purchase", day),
        ("u1", "a", "purchase", day),  # two lines of one basket: not a repeat
        ("u1", "a", "purchase", later),  # a repeat
        ("u1", "b", "purchase", later),
        ("u2", "a", "purchase", later),  # another shopper's first
        ("u2", "a", "view", day),
    ]
    data = build_interactions(events_table(rows), dict(DEFAULT_EVENT_TYPES))
    assert data.sequences is not None
    assert repeat_share(data.sequences, ("purchase",)) == pytest.approx(1 / 5)
    assert repeat_share(data.sequences, ("cart",)) is None


def test_auto_repeat_rule_follows_the_data(fitted: Pipeline, shop: Interactions) -> None:
    assert fitted.repeat_share_ is not None and 0 < fitted.repeat_share_ < 1
    assert fitted.config.rules.exclude_purchased == "auto"
    below = fitted.config.rules.model_copy(update={"min_repeat_share": fitted.repeat_share_ + 0.01})
    above = fitted.config.rules.model_copy(update={"min_repeat_share": fitted.repeat_share_ - 0.01})
    assert below.resolved(fitted.repeat_share_).exclude_purchased is True
    assert above.resolved(fitted.repeat_share_).exclude_purchased is False
    assert fitted.config.rules.resolved(None).exclude_purchased is True  # no purchases: the safe choice
    # Shown again under "auto" when shoppers re-buy; hidden when they do not.
    assert shop.sequences is not None
    seq, code, users = shop.sequences, shop.sequences.type_code("purchase"), np.arange(60)

    def rebought(threshold: float) -> int:
        recs = fitted.recommend(shop.rows(users), 10, rules={"min_repeat_share": threshold})
        count = 0
        for user, row in enumerate(recs):
            span = slice(seq.indptr[user], seq.indptr[user + 1])
            mine = set(shop.items.ids(seq.items[span][seq.types[span] == code].tolist()))
            count += len({r.item_id for r in row} & mine)
        return count

    assert rebought(0.0) > 0
    assert rebought(1.0) == 0


def test_a_bundle_saved_before_a_setting_existed_loads_with_its_default(fitted: Pipeline, shop: Interactions) -> None:
    old = pickle.loads(pickle.dumps(fitted))
    for name in ("exclude_kinds", "min_repeat_share"):  # settings this release added
        del old.config.rules.__dict__[name]
    del old.config.ranker.__dict__["tune_alpha"]
    restored = pickle.loads(pickle.dumps(old))
    assert restored.config.rules.exclude_kinds == ("service",) and restored.config.rules.min_repeat_share == 0.2
    assert restored.ranker.config is restored.config.ranker and restored.ranker.config.tune_alpha is False
    assert restored.recommend(shop.rows(np.arange(3)), 5) == fitted.recommend(shop.rows(np.arange(3)), 5)


def _with_service(fitted: Pipeline, item_ids: list[str]) -> Pipeline:
    """A copy of the fitted pipeline whose catalogue tags these items ``kind = service``."""
    copy = pickle.loads(pickle.dumps(fitted))
    kind = np.full(len(copy.items_), -1, dtype=np.int32)
    kind[copy.items_.index(item_ids)] = 0
    copy.catalog_ = dataclasses.replace(copy.catalog_, kind=kind, kinds=("service",))
    return copy


def test_similar_items_follow_the_item_rules(fitted: Pipeline, shop: Interactions) -> None:
    item = shop.items.values[0]
    before = [i for i, _ in fitted.similar(item, 5)]
    assert len(before) == 5
    off_shelf = pickle.loads(pickle.dumps(fitted))
    off_shelf.catalog_.available[off_shelf.items_.index([before[0]])] = False
    after = [i for i, _ in off_shelf.similar(item, 5)]
    assert before[0] not in after and len(after) == 5 and after[:4] == before[1:]
    assert before[1] not in [i for i, _ in _with_service(fitted, [before[1]]).similar(item, 5)]


def test_a_reason_never_names_an_item_of_an_excluded_kind(fitted: Pipeline, shop: Interactions) -> None:
    users = shop.rows(np.arange(40))
    named = [r.explanation.related_item for row in fitted.recommend(users, 10) for r in row]
    related = sorted({i for i in named if i is not None})
    assert related, "some reasons name a related item"
    hidden = _with_service(fitted, related)
    recs = [r for row in hidden.recommend(users, 10) for r in row]
    assert not {r.explanation.related_item for r in recs} & set(related)
    assert not {r.item_id for r in recs} & set(related), "items of an excluded kind are not recommended either"


def test_refresh_availability_reads_flags_and_stock_and_ignores_the_rest(fitted: Pipeline) -> None:
    copy = pickle.loads(pickle.dumps(fitted))
    a, b, c = copy.items_.values[:3]
    update = pa.table(
        {
            "item_id": [a, b, c, "not-in-the-model"],
            "available": pa.array([False, None, None, False], pa.bool_()),
            "stock": pa.array([None, 0, None, 0], pa.int64()),
        }
    )
    assert copy.refresh_availability(update)
    assert copy.catalog_.available[copy.items_.index([a, b, c])].tolist() == [False, False, True]
    back = pa.table({"item_id": [a, b], "available": [True, None], "stock": pa.array([None, 5], pa.int64())})
    assert copy.refresh_availability(back)
    assert copy.catalog_.available[copy.items_.index([a, b])].tolist() == [True, True]
    nothing = pa.table(
        {"item_id": [a], "available": pa.array([None], pa.bool_()), "stock": pa.array([None], pa.int64())}
    )
    assert not copy.refresh_availability(nothing), "a row stating neither field changes nothing"
    assert not copy.refresh_availability(pa.table({"item_id": [a]})), "no availability columns, nothing to apply"
