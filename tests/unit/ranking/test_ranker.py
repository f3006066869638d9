from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from shopsense.features.interactions import Interactions, build_interactions
from shopsense.ranking.ranker import RankerConfig, TwoStage, grouped_ndcg, recent_events
from shopsense.settings import DEFAULT_EVENT_TYPES

FAST = {"boost": {"max_trees": 60}}


def test_training_features_never_read_the_label_window(shop_tables: tuple[pa.Table, pa.Table]) -> None:
    """Extra behaviour inside the label window changes the labels and nothing else."""
    events, items = shop_tables
    base = build_interactions(events, dict(DEFAULT_EVENT_TYPES), catalog=items)
    model = TwoStage(RankerConfig.model_validate({"label_days": 20, "max_train_users": 10_000, **FAST}))
    before = model.training_examples(base)
    assert base.sequences is not None and base.as_of is not None
    # Every window user buys, views and carts three more items between the cut and the last event.
    rng = np.random.default_rng(0)
    user_ids = np.repeat(base.users.ids(before.users.tolist()), 3)
    item_ids = rng.choice(base.items.values, len(user_ids))
    seconds = rng.integers(before.cut, base.as_of, len(user_ids))
    extra = pa.table(
        {
            "user_id": user_ids,
            "item_id": item_ids,
            "type": rng.choice(["purchase", "view", "cart"], len(user_ids)),
            "timestamp": pa.array(
                [datetime.fromtimestamp(int(s), UTC) for s in seconds], events.schema.field("timestamp").type
            ),
        }
    )
    more = pa.concat_tables([events.select(["user_id", "item_id", "type", "timestamp"]), extra])
    after_data = build_interactions(more, dict(DEFAULT_EVENT_TYPES), items=base.items, catalog=items)
    after = model.training_examples(after_data)
    assert after.cut == before.cut
    assert np.array_equal(after.frame.users, before.frame.users)
    assert np.array_equal(after.frame.items, before.frame.items)
    assert np.array_equal(after.frame.values, before.frame.values, equal_nan=True)
    assert not np.array_equal(after.labels, before.labels), "the extra events did reach the labels"


def test_same_input_same_ranking(shop: Interactions) -> None:
    users = np.arange(30)
    first = TwoStage(RankerConfig.model_validate(FAST)).fit(shop).recommend(shop.rows(users), 10)
    second = TwoStage(RankerConfig.model_validate(FAST)).fit(shop).recommend(shop.rows(users), 10)
    assert np.array_equal(first[0], second[0])
    assert np.allclose(first[1], second[1])


def test_alpha_extremes_reproduce_the_single_heads(shop: Interactions) -> None:
    model = TwoStage(RankerConfig.model_validate(FAST)).fit(shop)
    scored = model.score_candidates(shop.rows(np.arange(25)))
    for alpha, head in ((1.0, 0), (0.0, 1)):
        fused = scored.fused(alpha)
        for user in range(25):
            mine = scored.frame.users == user
            by_fused = np.argsort(-fused[mine], kind="stable")
            by_head = np.argsort(
                -(scored.probabilities[mine, head] * (scored.value[mine] if head else 1)), kind="stable"
            )
            assert np.array_equal(by_fused, by_head)
    # With value switched off, alpha = 0 is exactly P(purchase)'s order.
    plain = TwoStage(RankerConfig.model_validate({**FAST, "fusion": {"value": "none"}})).fit(shop)
    flat = plain.score_candidates(shop.rows(np.arange(5)))
    assert np.array_equal(flat.fused(0.0), flat.probabilities[:, 1])


def test_heads_beat_chance_on_held_out_users(shop: Interactions) -> None:
    model = TwoStage(RankerConfig.model_validate(FAST)).fit(shop)
    for head in ("attention", "purchase"):
        assert model.heads_report_["lightgbm"][head]["auc"] > 0.65
    assert model.heads_report_["chosen"] == "lightgbm"
    assert model.training_["positive_purchase"] > 0


def test_auto_head_compares_lightgbm_with_din(shop: Interactions) -> None:
    config = {**FAST, "head": "auto", "max_train_users": 150, "din": {"max_epochs": 2, "dim": 8, "hidden": [16]}}
    model = TwoStage(RankerConfig.model_validate(config)).fit(shop)
    report = model.heads_report_
    assert {"lightgbm", "din", "chosen", "purchase_ndcg_by_alpha"} == set(report)
    assert report["chosen"] in ("lightgbm", "din")
    losses = {
        name: np.mean([report[name][h]["logloss"] for h in ("attention", "purchase")]) for name in ("lightgbm", "din")
    }
    assert report["chosen"] == min(losses, key=lambda name: losses[name])
    items, _ = model.recommend(shop.rows(np.arange(3)), 5)
    assert (items[:, 0] >= 0).all()


def test_cold_user_gets_trending_candidates(shop: Interactions) -> None:
    model = TwoStage(RankerConfig.model_validate(FAST)).fit(shop)
    empty = build_interactions(
        pa.table(
            {
                "user_id": pa.array([], pa.string()),
                "item_id": pa.array([], pa.string()),
                "type": pa.array([], pa.string()),
                "timestamp": pa.array([], pa.timestamp("us", "UTC")),
            }
        ),
        dict(DEFAULT_EVENT_TYPES),
        items=shop.items,
        catalog=shop.catalog,
        users=shop.users.__class__(["never-seen"]),
    )
    items, scores = model.recommend(empty, 5)
    assert (items[0] >= 0).all() and np.isfinite(scores[0]).all()


def test_too_short_history_is_refused(shop: Interactions) -> None:
    with pytest.raises(ValueError, match="label window"):
        TwoStage(RankerConfig(label_days=10_000)).fit(shop)


def test_recent_events_front_pads_and_recodes_types() -> None:
    data = build_interactions(
        pa.table(
            {
                "user_id": ["a", "a", "a", "b"],
                "item_id": ["x", "y", "z", "x"],
                "type": ["view", "purchase", "view", "view"],
                "timestamp": pa.array(
                    [datetime(2024, 1, d, tzinfo=UTC) for d in (1, 2, 3, 4)], pa.timestamp("us", "UTC")
                ),
            }
        ),
        {"view": 1.0, "purchase": 5.0},
    )
    items, types = recent_events(data.sequences, 2, ("cart", "purchase", "view"))
    assert items.tolist() == [[1, 2], [-1, 0]]  # a: y then z (most recent last); b: padded, then x
    assert types.tolist() == [[1, 2], [0, 2]]


def test_grouped_ndcg_known_answer() -> None:
    users = np.array([0, 0, 0, 1, 1, 2])
    scores = np.array([0.9, 0.5, 0.7, 0.2, 0.8, 0.3])
    relevant = np.array([0, 1, 0, 1, 0, 0])
    # user 0: the relevant pair ranks 3rd -> 1/log2(4) = 0.5; user 1: 2nd -> 1/log2(3); user 2 has none.
    assert grouped_ndcg(users, scores, relevant) == pytest.approx((0.5 + 1 / np.log2(3)) / 2)
    assert grouped_ndcg(users, scores, relevant, k=2) == pytest.approx((0 + 1 / np.log2(3)) / 2)


def test_tune_alpha_ranks_with_the_validation_best(shop: Interactions) -> None:
    model = TwoStage(RankerConfig.model_validate({**FAST, "tune_alpha": True})).fit(shop)
    curve = model.heads_report_["purchase_ndcg_by_alpha"]
    assert len(curve) == 11 and model.alpha_ in {float(a) for a in curve}
    assert curve[f"{model.alpha_:.1f}"] == max(curve.values())
    fixed = TwoStage(RankerConfig.model_validate({**FAST, "fusion": {"alpha": 0.3}})).fit(shop)
    assert fixed.alpha_ == 0.3, "without tune_alpha the configured alpha ranks"
