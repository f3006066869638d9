from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shopsense.features.interactions import Interactions, Sequences, build_interactions
from shopsense.models.base import RecQuery
from shopsense.ranking.ranker import (
    SURE,
    RankerConfig,
    Scored,
    TwoStage,
    better,
    grouped_ndcg,
    last_events,
    paired_se,
    recent_events,
    user_ndcg,
)
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
    first = TwoStage(RankerConfig.model_validate(FAST)).fit(shop).recommend(RecQuery(shop.rows(users), 10))
    second = TwoStage(RankerConfig.model_validate(FAST)).fit(shop).recommend(RecQuery(shop.rows(users), 10))
    assert np.array_equal(first.items, second.items)
    assert np.allclose(first.scores, second.scores)


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
    assert {"lightgbm", "din", "chosen", "objective", "purchase_ndcg_by_alpha", "purchase_ndcg_by_order"} == set(report)
    assert report["chosen"] in ("lightgbm", "din")
    losses = {
        name: np.mean([report[name][h]["logloss"] for h in ("attention", "purchase")]) for name in ("lightgbm", "din")
    }
    assert report["chosen"] == min(losses, key=lambda name: losses[name])
    items = model.recommend(RecQuery(shop.rows(np.arange(3)), 5)).items
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
    ranked = model.recommend(RecQuery(empty, 5))
    items, scores = ranked.items, ranked.scores
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


def test_last_events_cuts_at_each_users_kth_last_target() -> None:
    # user 0: v p v p v -> from the last purchase on; user 1: no purchase -> nothing; user 2: p p, k=1 -> last p
    types = np.array([0, 1, 0, 1, 0, 0, 0, 1, 1])
    seq = Sequences(np.array([0, 5, 7, 9]), np.arange(9), types, np.arange(9), np.ones(9), ("view", "purchase"))
    assert last_events(seq, types == 1, 1).tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 1]
    assert last_events(seq, types == 1, 2).tolist() == [0, 1, 1, 1, 1, 0, 0, 1, 1]


def test_last_mode_learns_from_each_users_last_purchase_without_leakage(shop: Interactions) -> None:
    """Labels are each user's last purchase and what followed; features come only from what came before."""
    model = TwoStage(RankerConfig.model_validate({**FAST, "label_mode": "last"}))
    examples = model.training_examples(shop)
    seq = shop.sequences
    assert seq is not None
    held = last_events(seq, seq.types == seq.type_code("purchase"), 1)
    # Every training user has history before the label, and that history is exactly what preceded it.
    expected = shop.select(~held, int(seq.times.max()) + 1).rows(examples.users)
    assert expected.sequences is not None and examples.history.sequences is not None
    assert (np.diff(examples.history.sequences.indptr) > 0).all()
    assert np.array_equal(expected.sequences.items, examples.history.sequences.items)
    assert examples.labels[:, 1].sum() > 0
    bought = seq.where(held & (seq.types == seq.type_code("purchase")))
    owners, items = bought.owners(), bought.items
    pairs = set(zip(owners.tolist(), items.tolist(), strict=True))
    labelled = {
        (int(examples.users[u]), int(i))
        for u, i, y in zip(examples.frame.users, examples.frame.items, examples.labels[:, 1], strict=True)
        if y
    }
    assert labelled <= pairs


def test_random_mode_holds_out_whole_pairs(shop: Interactions) -> None:
    model = TwoStage(RankerConfig.model_validate({**FAST, "label_mode": "random", "label_fraction": 0.3}))
    seq = shop.sequences
    assert seq is not None and shop.as_of is not None
    held, _ = model._holdout(seq, shop.as_of)
    keys = seq.owners().astype(np.int64) * shop.matrix.shape[1] + seq.items
    assert not np.intersect1d(keys[held], keys[~held]).size, "a pair was split between features and labels"
    assert 0.2 < held.mean() < 0.4


def test_rank_by_source_orders_by_that_source_and_heads_break_ties(shop: Interactions) -> None:
    model = TwoStage(RankerConfig.model_validate(FAST)).fit(shop)
    sources = {source.name for source in model.config.candidates.sources}
    assert set(model.heads_report_["purchase_ndcg_by_order"]) == {"heads", *sources}
    model.rank_by_ = "co_bought"
    scored = model.score_candidates(shop.rows(np.arange(20)))
    rank = scored.frame.source_rank("co_bought")
    fused = scored.fused(0.5)
    plain = Scored(scored.candidates, scored.frame, scored.probabilities, scored.value).fused(0.5)
    for user in range(20):
        mine = scored.frame.users == user
        order = np.argsort(-fused[mine], kind="stable")
        ranks = np.nan_to_num(rank[mine][order], nan=1e9)
        assert (np.diff(ranks) >= 0).all(), "the chosen source's order was not kept"
        unproposed = ranks == 1e9
        assert unproposed.any() and not unproposed.all()
        assert (np.diff(plain[mine][order][unproposed]) <= 0).all(), "the heads did not order the rest"


def test_better_keeps_the_default_unless_another_is_strictly_better() -> None:
    nan = float("nan")
    assert better({"binary": 0.4, "lambdarank": 0.5}, default="binary", lower=False) == "lambdarank"
    assert better({"binary": 0.5, "lambdarank": 0.5}, default="binary", lower=False) == "binary", "a tie"
    assert better({"binary": 0.5, "lambdarank": 0.4}, default="binary", lower=False) == "binary"
    assert better({"binary": 0.4, "lambdarank": nan}, default="binary", lower=False) == "binary"
    assert better({"binary": nan, "lambdarank": 0.5}, default="binary", lower=False) == "binary", "nothing measured"
    assert better({"lambdarank": 0.5}, default="binary", lower=False) == "binary", "the default was not measured"
    assert better({}, default="binary", lower=False) == "binary"
    assert better({"lightgbm": 0.30, "din": 0.29}, default="lightgbm", lower=True) == "din", "a loss: lower wins"
    assert better({"lightgbm": 0.30, "din": 0.31}, default="lightgbm", lower=True) == "lightgbm"
    assert better({"lightgbm": 0.30, "din": nan}, default="lightgbm", lower=True) == "lightgbm"
    assert better({"a": 0.1, "b": 0.3, "c": 0.2}, default="a", lower=False) == "b", "the best of several"


def test_auto_objective_fits_both_and_keeps_what_validation_prefers(shop: Interactions) -> None:
    model = TwoStage(RankerConfig.model_validate({**FAST, "boost": {"max_trees": 60, "objective": "auto"}})).fit(shop)
    report = model.heads_report_["objective"]
    assert set(report) == {"binary", "lambdarank", "chosen"}
    scores = {"attention_ndcg@10", "purchase_ndcg@10", "ranked_ndcg@10", "alpha"}
    assert set(report["binary"]) == scores and set(report["lambdarank"]) == scores | {"gain_se"}
    for name in ("binary", "lambdarank"):
        assert 0 < report[name]["ranked_ndcg@10"] <= 1 and report[name]["alpha"] == model.config.fusion.alpha
    gain = report["lambdarank"]["ranked_ndcg@10"] - report["binary"]["ranked_ndcg@10"]
    assert 0 < report["lambdarank"]["gain_se"] < 0.1
    expected = "lambdarank" if gain > SURE * report["lambdarank"]["gain_se"] else "binary"
    assert report["chosen"] == expected == model.boosted_.objective_ == model.training_["objective"]
    assert model.heads_report_["lightgbm"] == model.boosted_.validation_
    json.dumps(model.heads_report_)  # the train report and the bundle manifest serialise it
    # the same objective fitted alone gives the same heads: auto only adds the comparison
    alone = TwoStage(RankerConfig.model_validate({**FAST, "boost": {"max_trees": 60, "objective": expected}})).fit(shop)
    assert set(alone.heads_report_["objective"]) == {expected, "chosen"}
    users = shop.rows(np.arange(20))
    assert np.allclose(alone.score_candidates(users).probabilities, model.score_candidates(users).probabilities)


def test_a_challenger_must_beat_the_default_by_its_margin() -> None:
    scores = {"binary": 0.450, "lambdarank": 0.451}
    assert better(scores, default="binary", lower=False) == "lambdarank"
    assert better(scores, default="binary", lower=False, margins={"lambdarank": 0.02}) == "binary", "within noise"
    assert better({"binary": 0.40, "lambdarank": 0.45}, "binary", False, {"lambdarank": 0.02}) == "lambdarank"
    assert better({"lightgbm": 0.30, "din": 0.29}, "lightgbm", True, {"din": 0.02}) == "lightgbm"
    # the paired standard error: per-user differences, not the two scores' spreads
    rng = np.random.default_rng(0)
    base = rng.random(400)
    assert paired_se(base + 0.01, base) == pytest.approx(0.0, abs=1e-12)
    noisy = base + rng.normal(0, 0.1, 400)
    assert paired_se(noisy, base) == pytest.approx(0.1 / np.sqrt(400), rel=0.15)
    assert paired_se(base[:1], base[:1]) == float("inf")


def test_user_ndcg_is_per_user_grouped_ndcg() -> None:
    rng = np.random.default_rng(1)
    users, scores, relevant = rng.integers(0, 50, 2_000), rng.random(2_000), rng.random(2_000) < 0.05
    per_user = user_ndcg(users, scores, relevant)
    assert len(per_user) == len(np.unique(users[relevant]))
    assert per_user.mean() == pytest.approx(grouped_ndcg(users, scores, relevant))
    assert len(user_ndcg(users, rng.random(2_000), relevant)) == len(per_user), "the same users for any scores"


def test_lambdarank_ranker_trains_saves_loads_and_recommends(shop: Interactions, tmp_path: Path) -> None:
    model = TwoStage(RankerConfig.model_validate({**FAST, "boost": {"max_trees": 60, "objective": "lambdarank"}}))
    model.fit(shop)
    assert model.boosted_.objective_ == "lambdarank" == model.heads_report_["objective"]["chosen"]
    for head in ("attention", "purchase"):
        assert model.heads_report_["lightgbm"][head]["auc"] > 0.65, "the ranker's probabilities order pairs"
    users = shop.rows(np.arange(30))
    probabilities = model.score_candidates(users).probabilities
    assert ((probabilities > 0) & (probabilities < 1)).all()
    model.save(tmp_path / "ranker.bin")
    loaded = TwoStage.load(tmp_path / "ranker.bin")
    ranked = model.recommend(RecQuery(users, 10))
    items, scores = ranked.items, ranked.scores
    ranked = loaded.recommend(RecQuery(users, 10))
    again, again_scores = ranked.items, ranked.scores
    assert (items[:, 0] >= 0).all() and np.array_equal(items, again) and np.allclose(scores, again_scores)
