"""DIN (Zhou et al. 2018): a ranker head that reads a shopper's recent behaviour in the light of each candidate.

A fixed user vector averages every interest a shopper has; whether this candidate is worth
showing depends on the part of their history that resembles it (a shopper of shoes and
cameras looking at a lens). The "local activation unit" scores each recent event against the
candidate with a small MLP over ``[q, k, q - k, q * k]`` (candidate embedding ``q``, event
embedding ``k`` = item + event type) and sums the events weighted by those scores. As in the
paper the weights are not softmax-normalised, so how much related behaviour there is, not
only its mix, reaches the trunk; padded positions get weight 0, so an empty history pools to
zeros. An MLP over ``[candidate, pooled interest, dense pair features]`` ends in two logits:
P(attention) (the shopper views or clicks) and P(purchase), trained together because a
purchase is rare and shares most of what explains a view.

Dense features may be missing (NaN): they are standardised with training statistics, set to
0 (the training mean) and flagged by a 0/1 column, for each feature missing anywhere in
training, because "unknown" often says something itself (no price, never rated).

Early stopping needs rows the network has not learnt from: a given mask, or a seeded tenth
of the users, so that a user's pairs are never on both sides and the validation log-loss
measures unseen shoppers as at serving time. The state with the best mean log-loss is kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from tqdm import tqdm

from shopsense.extras import require_torch
from shopsense.models.base import NotFitted
from shopsense.models.early_stopping import EarlyStopping

if TYPE_CHECKING:  # torch loads with the network (ranking/_din_net.py): an optional extra, seconds to import
    from torch import Tensor

PREDICT_POSITIONS = 1 << 17
"""History positions (rows x history length) per forward pass when scoring: bounds the activation unit's memory."""
VALIDATION_USERS = 0.1
"""Share of users held out for early stopping when no ``valid`` mask is given."""


class DINConfig(BaseModel):
    """Network size, optimiser, stopping rules and reproducibility of :class:`DINHead`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dim: int = Field(32, ge=1, description="item and event-type embedding size")
    attention_hidden: int = Field(64, ge=1, description="hidden units of the local activation unit")
    hidden: tuple[PositiveInt, ...] = Field((128, 64), description="hidden layer widths of the trunk MLP")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout after each trunk hidden layer")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0, description="Adam L2 penalty")
    batch_size: int = Field(1024, ge=1, description="pairs per optimiser step")
    max_epochs: int = Field(20, ge=1, description="passes over the training pairs at most")
    patience: int = Field(3, ge=1, description="epochs without a better validation log-loss before stopping")
    max_minutes: float = Field(5.0, gt=0, description="wall-clock limit of training; the best state so far is kept")
    seed: int = Field(0, description="seeds initial weights, dropout, shuffling and the validation users")


class DINHead:
    """P(attention) and P(purchase) of (user, candidate) pairs from the user's recent events and pair features."""

    config: DINConfig

    def __init__(self, config: DINConfig | None = None) -> None:
        self.config = config or DINConfig()

    def fit(
        self,
        features: np.ndarray,
        items: np.ndarray,
        users: np.ndarray,
        history: np.ndarray,
        history_types: np.ndarray,
        labels: np.ndarray,
        *,
        n_items: int,
        n_types: int,
        valid: np.ndarray | None = None,
    ) -> Self:
        """Learn both heads from labelled pairs; returns self.

        Args:
            features: ``(n, f)`` dense pair features; NaN means missing.
            items: ``(n,)`` candidate item index in ``[0, n_items)``.
            users: ``(n,)`` row of ``history`` for each pair; a user's pairs share one row.
            history: ``(U, L)`` item indices of each user's latest events, most recent last,
                padded with -1 at the front (a row may be all padding).
            history_types: ``(U, L)`` event-type codes in ``[0, n_types)``; ignored at padding.
            labels: ``(n, 2)`` 0/1 targets, columns ``[attention, purchase]``.
            n_items: catalogue size (item embedding rows, plus one for padding and unknown items).
            n_types: number of event types.
            valid: ``(n,)`` rows held out for early stopping; None holds out a seeded tenth of the users.
        """
        require_torch("The DIN ranking head", instead="set ranker.head = 'lightgbm'")
        import torch

        from shopsense.ranking._din_net import _Network

        began = time.perf_counter()
        cfg = self.config
        _check_inputs(features, items, users, history, history_types)
        labels = np.asarray(labels, dtype=np.float32)
        if labels.shape != (len(items), 2):
            raise ValueError(f"labels must be (n, 2) [attention, purchase], got {labels.shape} for {len(items)} pairs")
        if n_items < 1 or n_types < 1:
            raise ValueError(f"n_items ({n_items}) and n_types ({n_types}) must be at least 1")
        if len(items) and (items.min() < 0 or items.max() >= n_items):
            raise ValueError(f"training items must lie in [0, {n_items})")
        held = _validation_rows(users, cfg.seed) if valid is None else np.asarray(valid, dtype=bool)
        if held.shape != (len(items),):
            raise ValueError(f"valid must be a boolean mask of the {len(items)} pairs, got shape {held.shape}")
        if held.all():
            raise ValueError("every pair is held out for validation: nothing to train on")
        train = ~held
        self.n_items_, self.n_types_ = n_items, n_types
        self._learn_scaling(np.asarray(features, dtype=np.float64)[train])
        inputs = self._inputs(features, items, users, history, history_types)
        targets = torch.from_numpy(labels)
        # fork_rng: seeding for reproducibility must not reset the caller's global torch generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.net_ = _Network(n_items, n_types, inputs.dense.shape[1], cfg)
            rows = torch.from_numpy(np.flatnonzero(train)), torch.from_numpy(np.flatnonzero(held))
            self._train(inputs, targets, *rows)
        self.net_.eval()
        self.fit_seconds_ = time.perf_counter() - began
        return self

    def predict(
        self,
        features: np.ndarray,
        items: np.ndarray,
        users: np.ndarray,
        history: np.ndarray,
        history_types: np.ndarray,
    ) -> np.ndarray:
        """``(n, 2)`` float64 probabilities ``[P(attention), P(purchase)]`` per pair.

        Arguments are as in :meth:`fit`; an item outside ``[0, n_items)`` (new to the model), in
        the candidates or the history, reads as padding: no embedding, no weight in the history.
        """
        if not hasattr(self, "net_"):
            raise NotFitted(f"{type(self).__name__} is not fitted: call fit() before predict()")
        import torch

        from shopsense.ranking._din_net import _logits

        _check_inputs(features, items, users, history, history_types)
        if np.shape(features)[1] != len(self.mean_):
            raise ValueError(f"features have {np.shape(features)[1]} columns, the model knows {len(self.mean_)}")
        inputs = self._inputs(features, items, users, history, history_types)
        self.net_.eval()
        logits = _logits(self.net_, inputs, torch.arange(len(items)))
        return torch.sigmoid(logits).numpy().astype(np.float64)

    def _train(self, inputs: _Inputs, targets: Tensor, train: Tensor, held: Tensor) -> None:
        """Epochs until patience, max_epochs or max_minutes runs out; leaves the best state in ``net_``."""
        import torch
        import torch.nn.functional as F

        from shopsense.ranking._din_net import _log_loss

        cfg = self.config
        net = self.net_
        optimiser = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        generator = torch.Generator().manual_seed(cfg.seed)
        stopping = EarlyStopping(net, patience=cfg.patience, max_minutes=cfg.max_minutes, higher_is_better=False)
        self.valid_losses_: list[float] = []
        with tqdm(range(1, cfg.max_epochs + 1), desc="DIN", unit="epoch", disable=None) as epochs:
            for epoch in epochs:
                net.train()
                for batch in torch.split(train[torch.randperm(len(train), generator=generator)], cfg.batch_size):
                    logits = net(*inputs.take(batch))
                    # Mean over pairs per head, summed over the two heads.
                    loss = F.binary_cross_entropy_with_logits(logits, targets[batch], reduction="none").mean(0).sum()
                    optimiser.zero_grad()
                    torch.autograd.backward(loss)
                    optimiser.step()
                    if stopping.out_of_time():
                        break
                net.eval()
                valid_loss = _log_loss(net, inputs, targets, held) if len(held) else math.nan
                self.valid_losses_.append(valid_loss)
                epochs.set_postfix(valid_logloss=f"{valid_loss:.4f}")
                if stopping.update(net, valid_loss, epoch):
                    break
        stopping.restore(net)
        self.best_epoch_ = stopping.best_epoch

    def _learn_scaling(self, features: np.ndarray) -> None:
        """Mean and spread of each feature over the present training values, and which ones get a missing flag."""
        missing = np.isnan(features)
        present = (~missing).sum(axis=0)
        filled = np.where(missing, 0.0, features)
        mean = filled.sum(axis=0) / np.maximum(present, 1)
        spread = np.sqrt((np.where(missing, 0.0, features - mean) ** 2).sum(axis=0) / np.maximum(present, 1))
        self.mean_ = mean
        self.scale_ = np.where(spread > 0, spread, 1.0)
        # Fixed here, so predict adds the same indicator columns whatever its rows are missing.
        self.flagged_ = np.flatnonzero(missing.any(axis=0))

    def _inputs(
        self,
        features: np.ndarray,
        items: np.ndarray,
        users: np.ndarray,
        history: np.ndarray,
        history_types: np.ndarray,
    ) -> _Inputs:
        """Network inputs: scaled dense features with missing flags, and indices with padding as the last row."""
        import torch

        raw = np.asarray(features, dtype=np.float64)
        scaled = (raw - self.mean_) / self.scale_
        flags = np.isnan(raw[:, self.flagged_])
        dense = np.hstack([np.where(np.isnan(scaled), 0.0, scaled), flags]).astype(np.float32)
        history = np.asarray(history, dtype=np.int64)
        real = (history >= 0) & (history < self.n_items_)
        types = np.asarray(history_types, dtype=np.int64)
        types = np.where(real & (types >= 0) & (types < self.n_types_), types, self.n_types_)
        return _Inputs(
            dense=torch.from_numpy(dense),
            items=torch.from_numpy(_or_padding(np.asarray(items, dtype=np.int64), self.n_items_)),
            users=torch.from_numpy(np.asarray(users, dtype=np.int64)),
            history=torch.from_numpy(np.where(real, history, self.n_items_)),
            types=torch.from_numpy(types),
        )


@dataclass(frozen=True)
class _Inputs:
    """All pairs as tensors; histories stay one row per user and are gathered per batch."""

    dense: Tensor
    items: Tensor
    users: Tensor
    history: Tensor
    types: Tensor

    def take(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Dense features, candidates, histories and history types of some pairs."""
        users = self.users[rows]
        return self.dense[rows], self.items[rows], self.history[users], self.types[users]


def _validation_rows(users: np.ndarray, seed: int) -> np.ndarray:
    """Pairs of a seeded tenth of the users (at least one when there are two); none with a single user."""
    present = np.unique(users)
    count = max(1, round(VALIDATION_USERS * len(present))) if len(present) > 1 else 0
    chosen = np.random.default_rng(seed).choice(present, size=count, replace=False)
    return np.isin(users, chosen)


def _check_inputs(
    features: np.ndarray, items: np.ndarray, users: np.ndarray, history: np.ndarray, history_types: np.ndarray
) -> None:
    """Shapes agree and every pair's user has a history row; a mismatch would otherwise fail deep inside torch."""
    n = len(items)
    if np.ndim(features) != 2 or np.shape(features)[0] != n or np.shape(users) != (n,) or np.ndim(items) != 1:
        raise ValueError(
            f"features must be (n, f) and items, users (n,): got {np.shape(features)}, {np.shape(items)}, "
            f"{np.shape(users)}"
        )
    if np.ndim(history) != 2 or np.shape(history) != np.shape(history_types):
        raise ValueError(f"history and history_types must be the same (U, L) shape: {np.shape(history)}")
    if n and (users.min() < 0 or users.max() >= len(history)):
        raise ValueError(f"users must index the {len(history)} history rows")


def _or_padding(items: np.ndarray, n_items: int) -> np.ndarray:
    """Item indices with anything outside the catalogue mapped to the padding row ``n_items``."""
    return np.where((items >= 0) & (items < n_items), items, n_items)


def __getattr__(name: str) -> Any:
    """``_Network`` for DIN heads pickled when the network was defined here (imports torch)."""
    if name == "_Network":
        from shopsense.ranking._din_net import _Network

        return _Network
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
