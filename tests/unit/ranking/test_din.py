"""DIN head: the item-group oracle (attention over the history is what predicts), inputs, determinism, persistence."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from shopsense.models.base import NotFitted
from shopsense.ranking.din import DINConfig, DINHead

GROUPS = 5
ITEMS = 50  # item i is in group i % GROUPS
TYPES = 2
LENGTH = 8
# Tiny network, large step: the group structure is learnt in a few epochs.
SMALL = DINConfig(dim=8, attention_hidden=16, hidden=(32,), dropout=0.0, lr=1e-2, batch_size=256, max_epochs=20)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@dataclass(frozen=True)
class Pairs:
    """Labelled (user, candidate) pairs with the arguments of ``fit`` and ``predict``."""

    features: np.ndarray
    items: np.ndarray
    users: np.ndarray
    history: np.ndarray
    types: np.ndarray
    labels: np.ndarray

    def inputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.features, self.items, self.users, self.history, self.types


def group_pairs(users: int, seed: int, per_user: int = 10, noise: float = 0.05) -> Pairs:
    """Each user's history holds items of one group; they attend to candidates of that group, buy the even ones.

    Half of each user's candidates come from their group, so every item is a positive about as
    often as a negative: without reading the history, attention is a coin flip (AUC 0.5).
    """
    rng = np.random.default_rng(seed)
    group = rng.integers(GROUPS, size=users)
    lengths = rng.integers(1, LENGTH + 1, size=users)
    own_items = group[:, None] + GROUPS * rng.integers(ITEMS // GROUPS, size=(users, LENGTH))
    history = np.where(np.arange(LENGTH) >= LENGTH - lengths[:, None], own_items, -1)
    types = rng.integers(TYPES, size=(users, LENGTH))
    owner = np.repeat(np.arange(users), per_user)
    same = rng.random(len(owner)) < 0.5
    other = (group[owner] + rng.integers(1, GROUPS, size=len(owner))) % GROUPS
    candidate_group = np.where(same, group[owner], other)
    items = candidate_group + GROUPS * rng.integers(ITEMS // GROUPS, size=len(owner))
    attention = same ^ (rng.random(len(owner)) < noise)
    purchase = attention & (items % 2 == 0)
    labels = np.stack([attention, purchase], axis=1).astype(float)
    features = rng.normal(size=(len(owner), 3))
    return Pairs(features, items, owner, history, types, labels)


@pytest.fixture(scope="module")
def train() -> Pairs:
    return group_pairs(300, seed=0)


@pytest.fixture(scope="module")
def test() -> Pairs:
    """Other users (other seed): scored only through their histories, never seen in training."""
    return group_pairs(100, seed=1)


@pytest.fixture(scope="module")
def head(train: Pairs) -> DINHead:
    return DINHead(SMALL).fit(*train.inputs(), train.labels, n_items=ITEMS, n_types=TYPES)


def test_attention_over_the_history_predicts_unseen_users(head: DINHead, test: Pairs) -> None:
    predicted = head.predict(*test.inputs())
    assert roc_auc_score(test.labels[:, 0], predicted[:, 0]) > 0.8
    assert roc_auc_score(test.labels[:, 1], predicted[:, 1]) > 0.7
    # The same pairs without any history: the candidate alone says nothing about attention.
    blind = head.predict(test.features, test.items, test.users, np.full_like(test.history, -1), test.types)
    assert roc_auc_score(test.labels[:, 0], blind[:, 0]) < 0.65


def test_shapes_missing_features_empty_history_and_unknown_items(train: Pairs) -> None:
    features = train.features.copy()
    features[::7, 1] = np.nan
    features[:, 2] = 5.0  # constant: no spread to divide by
    history = train.history.copy()
    history[0] = -1  # user 0 has done nothing yet
    head = DINHead(SMALL.model_copy(update={"max_epochs": 2})).fit(
        features, train.items, train.users, history, train.types, train.labels, n_items=ITEMS, n_types=TYPES
    )
    assert head.flagged_.tolist() == [1]
    assert head.fit_seconds_ > 0
    assert 1 <= head.best_epoch_ <= 2
    items = train.items[:20].copy()
    items[0] = ITEMS  # a new item the model has never seen
    rows = features[:20].copy()
    rows[3] = np.nan  # missing where training never missed it
    predicted = head.predict(rows, items, train.users[:20], history, train.types)
    assert predicted.shape == (20, 2)
    assert predicted.dtype == np.float64
    assert np.isfinite(predicted).all()
    assert ((predicted >= 0) & (predicted <= 1)).all()
    with pytest.raises(ValueError, match="columns"):
        head.predict(rows[:, :2], items, train.users[:20], history, train.types)


def test_same_seed_same_predictions_and_pickle_round_trip(train: Pairs, test: Pairs, head: DINHead) -> None:
    again = DINHead(SMALL).fit(*train.inputs(), train.labels, n_items=ITEMS, n_types=TYPES)
    expected = head.predict(*test.inputs())
    np.testing.assert_array_equal(again.predict(*test.inputs()), expected)
    loaded = pickle.loads(pickle.dumps(head))
    np.testing.assert_array_equal(loaded.predict(*test.inputs()), expected)


def test_predict_before_fit_is_refused(test: Pairs) -> None:
    with pytest.raises(NotFitted, match="fit"):
        DINHead(SMALL).predict(*test.inputs())


def test_early_stopping_keeps_the_best_epoch(train: Pairs) -> None:
    """Noise labels, a big step: validation loss soon rises, and training stops one epoch after its best."""
    rng = np.random.default_rng(2)
    noise = (rng.random(train.labels.shape) < 0.5).astype(float)
    valid = train.users % 5 == 0
    config = SMALL.model_copy(update={"patience": 1, "max_epochs": 30, "lr": 3e-2})
    head = DINHead(config).fit(*train.inputs(), noise, n_items=ITEMS, n_types=TYPES, valid=valid)
    epochs = len(head.valid_losses_)
    assert head.best_epoch_ <= epochs < config.max_epochs
    assert head.best_epoch_ == 1 + int(np.argmin(head.valid_losses_))
    assert epochs - head.best_epoch_ == config.patience


def test_all_rows_held_out_is_refused(train: Pairs) -> None:
    with pytest.raises(ValueError, match="nothing to train on"):
        DINHead(SMALL).fit(
            *train.inputs(), train.labels, n_items=ITEMS, n_types=TYPES, valid=np.ones(len(train.items), dtype=bool)
        )


def test_wall_clock_limit_stops_after_one_step(train: Pairs) -> None:
    head = DINHead(SMALL.model_copy(update={"max_minutes": 1e-9})).fit(
        *train.inputs(), train.labels, n_items=ITEMS, n_types=TYPES
    )
    assert head.valid_losses_ and len(head.valid_losses_) == 1
    assert head.best_epoch_ == 1
