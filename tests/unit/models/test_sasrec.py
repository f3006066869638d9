"""SASRec: the item-cycle oracle (full and sampled softmax, gBCE), event types, early stopping and persistence."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from pydantic import ValidationError

from shopsense.domain import IdIndex
from shopsense.features.interactions import Interactions, Sequences, as_history, build_interactions
from shopsense.models.base import RecQuery
from shopsense.models.sasrec import SASRec, SASRecConfig, gap_codes, hold_out, training_windows
from tests.conftest import events_table

START = datetime(2024, 1, 1, tzinfo=UTC)
ITEMS = 12
WEIGHTS = {"view": 1.0, "purchase": 3.0, "return": -3.0}
# Tiny network, large step: the cycle is learnt in a few dozen steps.
SMALL = SASRecConfig(dim=16, layers=1, max_len=10, dropout=0.1, lr=1e-2, batch_size=16, max_epochs=40, patience=5)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def walks(users: int = 60, seed: int = 0, purchase_jumps: bool = False, n_items: int = ITEMS) -> Interactions:
    """Every user walks the item cycle from a random item: after item i comes item i + 1 (mod n_items).

    With ``purchase_jumps`` a purchase of i is followed by i + 2 instead, so only a model that
    reads event types gets both right. Some events are returns (negative weight).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        item = int(rng.integers(n_items))
        when = START + timedelta(days=int(rng.integers(30)))
        for _ in range(int(rng.integers(4, 16))):
            kind = str(rng.choice(["view", "purchase", "return"], p=[0.6, 0.3, 0.1]))
            rows.append((f"u{u:03d}", f"i{item:02d}", kind, when))
            item = (item + (2 if purchase_jumps and kind == "purchase" else 1)) % n_items
            when += timedelta(minutes=int(rng.integers(1, 60)))
    return build_interactions(events_table(rows), WEIGHTS, items=IdIndex([f"i{i:02d}" for i in range(n_items)]))


def next_in_cycle(data: Interactions, n_items: int = ITEMS) -> np.ndarray:
    seq = data.sequences
    assert seq is not None
    last = seq.items[seq.indptr[1:] - 1]
    step = np.where(seq.types[seq.indptr[1:] - 1] == seq.type_code("purchase"), 2, 1)
    expected: np.ndarray = (last + step) % n_items
    return expected


@pytest.fixture(scope="module")
def data() -> Interactions:
    return walks()


@pytest.fixture(scope="module")
def model(data: Interactions) -> SASRec:
    return SASRec(SMALL).fit(data)


def test_oracle_recommends_the_next_item_of_the_cycle(data: Interactions, model: SASRec) -> None:
    ranked = model.recommend(RecQuery(data, 3))
    items, scores = ranked.items, ranked.scores
    last = data.sequences.items[data.sequences.indptr[1:] - 1]  # type: ignore[union-attr]
    assert (items[:, 0] == (last + 1) % ITEMS).mean() >= 0.9
    assert np.isfinite(scores).all()


def test_event_types_change_the_prediction() -> None:
    data = walks(purchase_jumps=True)
    items = SASRec(SMALL).fit(data).recommend(RecQuery(data, 1)).items
    assert (items[:, 0] == next_in_cycle(data)).mean() >= 0.9, "after a purchase the walk jumps two items"


def test_sampled_softmax_learns_the_cycle_and_same_seed_same_model(data: Interactions) -> None:
    config = SMALL.model_copy(update={"loss": "sampled", "negatives": 5})
    one, two = SASRec(config).fit(data), SASRec(config).fit(data)
    ranked = one.recommend(RecQuery(data, 3))
    items, scores = ranked.items, ranked.scores
    last = data.sequences.items[data.sequences.indptr[1:] - 1]  # type: ignore[union-attr]
    assert (items[:, 0] == (last + 1) % ITEMS).mean() >= 0.9
    assert np.array_equal(scores, two.recommend(RecQuery(data, 3)).scores)


def test_gbce_loss_is_the_hand_computed_value() -> None:
    """Two targets, negatives [0, 2]; the second target is item 0, so that draw is no negative for it."""
    import torch

    from shopsense.models._sasrec_net import _gbce_loss, _Network

    net = _Network(3, 1, SASRecConfig(dim=2, layers=1))
    with torch.no_grad():
        net.items.weight[1:] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        net.bias[:] = torch.tensor([0.0, 0.5, 0.0])
    states = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    loss = _gbce_loss(net, states, torch.tensor([1, 0]), torch.tensor([0, 2]), beta=0.5)

    def log_sigmoid(x: float) -> float:
        return -math.log1p(math.exp(-x))

    # Scores: row 0: positive 0 + 0.5, negatives 1 and 1; row 1: positive 0, negative (item 2) 2.
    first = 0.5 * log_sigmoid(0.5) + 2 * log_sigmoid(-1.0)
    second = 0.5 * log_sigmoid(0.0) + log_sigmoid(-2.0)
    assert loss.item() == pytest.approx(-(first / 3 + second / 3) / 2, rel=1e-6)


def test_gbce_beta_runs_from_plain_bce_to_calibrated() -> None:
    from shopsense.models._sasrec_net import gbce_beta

    alpha = 256 / 3415  # the paper's ML-1M: 3,416 items, 256 negatives
    assert gbce_beta(256, 3416, 0.0) == pytest.approx(1.0), "t = 0: plain BCE"
    assert gbce_beta(256, 3416, 1.0) == pytest.approx(alpha), "t = 1: beta is the sampling rate"
    assert gbce_beta(256, 3416, 0.75) == pytest.approx(1 + 0.75 * (alpha - 1))
    assert gbce_beta(256, 100, 0.75) == 1.0, "negatives covering the catalogue: alpha capped at 1"


def test_gbce_learns_the_cycle_and_beats_popularity_on_the_next_event() -> None:
    n_items = 60  # 16 negatives of 59 other items: beta = 1 + 0.75 * (16 / 59 - 1), about 0.45
    data = walks(users=150, seed=1, n_items=n_items)
    model = SASRec(SMALL.model_copy(update={"loss": "gbce", "negatives": 16})).fit(data)
    truth = next_in_cycle(data, n_items)  # each walk's next step: never seen in training

    def ndcg(top: np.ndarray) -> float:
        hit, rank = (top == truth[:, None]).nonzero()
        return float(np.sum(1 / np.log2(rank + 2)) / len(truth)) if len(hit) else 0.0

    by_popularity = np.tile(np.argsort(-model.popularity_, kind="stable")[:10], (len(truth), 1))
    learnt = ndcg(model.recommend(RecQuery(data, 10)).items)
    assert learnt >= 0.7 and learnt > 3 * ndcg(by_popularity), "every other model here reaches about 0.82"


def test_gbce_starts_every_bias_at_its_equilibrium(data: Interactions) -> None:
    """Started at log(beta / k), one step (of at most about lr) leaves the biases near it."""
    from shopsense.models._sasrec_net import gbce_beta

    config = SMALL.model_copy(update={"loss": "gbce", "negatives": 8, "max_minutes": 1e-9})
    model = SASRec(config).fit(data)
    start = math.log(gbce_beta(8, ITEMS, 0.75) / 8)
    assert np.allclose(model.net_.bias.detach().numpy(), start, atol=2 * config.lr)


def test_gbce_config_is_validated() -> None:
    assert SASRecConfig(loss="gbce").gbce_t == 0.75
    with pytest.raises(ValidationError, match="uniformly"):
        SASRecConfig(loss="gbce", sampler="popularity")
    for t in (-0.1, 1.5):
        with pytest.raises(ValidationError, match="gbce_t"):
            SASRecConfig(loss="gbce", gbce_t=t)
    with pytest.raises(ValidationError, match="loss"):
        SASRecConfig(loss="bce")  # type: ignore[arg-type]


def test_early_stopping_keeps_the_best_epoch(model: SASRec) -> None:
    ndcg = [log.ndcg for log in model.history_]
    assert len(ndcg) < SMALL.max_epochs, "validation stopped improving long before max_epochs"
    assert len(ndcg) == model.best_epoch_ + SMALL.patience
    assert ndcg[model.best_epoch_ - 1] == max(ndcg)


def test_wall_clock_limit_stops_after_one_step(data: Interactions) -> None:
    model = SASRec(SMALL.model_copy(update={"max_minutes": 1e-9})).fit(data)
    assert len(model.history_) == 1 and model.best_epoch_ == 1


def test_validation_events_and_what_follows_are_never_trained_on(data: Interactions, model: SASRec) -> None:
    seq = data.sequences
    assert seq is not None
    events = model._events(seq)
    targets = np.flatnonzero(events.targets > 0)
    owner_of = np.searchsorted(seq.indptr, np.arange(len(seq.items)), side="right") - 1
    eligible = np.unique(owner_of[targets[~np.isin(targets, seq.indptr[:-1])]])
    users, held = hold_out(events, 0.5, np.random.default_rng(0))
    assert len(users) == round(len(eligible) / 2) and np.isin(users, eligible).all()
    assert (events.targets[held] > 0).all() and (owner_of[held] == users).all()
    ends = seq.indptr[1:].copy()
    ends[users] = held
    starts, lengths = training_windows(events, ends, 4)
    assert lengths.max() <= 4
    predicted = np.concatenate([np.arange(s + 1, s + n + 1) for s, n in zip(starts, lengths, strict=True)])
    assert (predicted < ends[owner_of[predicted]]).all(), "no window reaches a held-out event or later"
    wanted = targets[(targets < ends[owner_of[targets]]) & ~np.isin(targets, seq.indptr[:-1])]
    assert np.array_equal(np.sort(predicted[events.targets[predicted] > 0]), wanted), "every other target once"


def test_returns_and_other_types_are_not_targets(data: Interactions) -> None:
    seq = data.sequences
    assert seq is not None
    model = SASRec(SMALL.model_copy(update={"target_types": ("purchase",), "max_minutes": 1e-9})).fit(data)
    targets = model._events(seq).targets > 0
    assert np.array_equal(targets, seq.types == seq.type_code("purchase"))
    all_types = SASRec(SMALL.model_copy(update={"max_minutes": 1e-9})).fit(data)
    assert np.array_equal(all_types._events(seq).targets > 0, seq.weights > 0), "returns never"


def test_time_gaps_are_log_bucketed() -> None:
    times = np.array([0, 0, 1, 100, 10**9, 5], dtype=np.int64)
    seq = Sequences(np.array([0, 5, 6]), np.zeros(6, np.int32), np.zeros(6, np.int16), times, np.ones(6), ("view",))
    codes = gap_codes(seq, 4)  # edges at 1 s, ~1.6 h and a year
    assert codes.tolist() == [1, 2, 3, 3, 5, 1]


def test_empty_history_gets_popularity_and_unknown_types_are_read(data: Interactions, model: SASRec) -> None:
    sequences = Sequences(
        np.array([0, 0, 2]),
        np.array([3, 4], np.int32),
        np.array([0, 0], np.int16),
        np.array([0, 60]),
        np.ones(2),
        ("wishlist",),
    )
    matrix = sp.csr_matrix(([1.0, 1.0], ([1, 1], [3, 4])), shape=(2, ITEMS))
    history = Interactions(matrix, IdIndex(["new", "other"]), data.items, sequences)
    ranked = model.recommend(RecQuery(history, ITEMS))
    items, scores = ranked.items, ranked.scores
    assert np.isfinite(scores).all() and sorted(items[0]) == list(range(ITEMS))
    assert items[0, 0] == np.argmax(model.popularity_)
    assert items[1, 0] == 5


def test_similar_items_follow_the_cycle(model: SASRec) -> None:
    items = model.similar_items(np.array([0, 7]), 2).items
    assert items[:, 0].tolist() == [1, 8]


def test_save_and_load_give_identical_scores(data: Interactions, model: SASRec, tmp_path: Path) -> None:
    model.save(tmp_path / "sasrec.bin")
    assert (tmp_path / "sasrec.bin").stat().st_size < 100_000
    loaded = SASRec.load(tmp_path / "sasrec.bin")
    assert np.array_equal(loaded.recommend(RecQuery(data, 5)).scores, model.recommend(RecQuery(data, 5)).scores)


def test_a_bare_matrix_is_refused(model: SASRec) -> None:
    with pytest.raises(ValueError, match="needs event sequences"):
        model.recommend(RecQuery(as_history(sp.csr_matrix((1, ITEMS))), 5))


def test_heads_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match="multiple of heads"):
        SASRecConfig(dim=10, heads=3)
