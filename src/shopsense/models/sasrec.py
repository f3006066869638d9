"""SASRec (Kang & McAuley 2018): a causal self-attention transformer over each shopper's recent events.

What a shopper does next depends on what they did last and in which order, which a users x
items matrix forgets; the attention model reads the most recent ``max_len`` events as a
sequence. Each event is the sum of four embeddings: its item (shared with the output layer,
so an item is scored by how well it matches the state; index 0 is padding and item ``i`` is
token ``i + 1``), its slot in the window, its event type (a purchase says something else
than a view) and the bucketised log of the seconds since the shopper's previous event (a
gap of a minute continues a session, one of weeks starts a new errand). A pre-norm
``TransformerEncoder`` with a causal mask reads the window; the state at each event scores
every item as the next one.

Training predicts the next event at every position, only events of ``target_types`` when
given and never a return or another event without positive weight. Histories longer than
``max_len`` are cut from the end into windows, so every event is predicted once per epoch.
The loss is softmax cross-entropy over the whole catalogue by default, the objective that
matches ranking the full catalogue (BCE with one negative does not); ``loss="sampled"``
compares each target with a batch of shared uniform or popularity negatives, logQ-corrected
so the sampled softmax stays an unbiased stand-in for the full one on big catalogues.
``loss="gbce"`` is gSASRec's generalised BCE (Petrov & Macdonald 2023): many uniform negatives
(256 by default, shared by a batch) and the positive's probability raised to a power ``beta``
set by the calibration ``gbce_t``, which removes the overconfidence of BCE with sampled
negatives; its cost per step does not grow with the catalogue. Its item biases start at the
loss's balance point, ``log(beta / k)``, so that training ranks from the first epochs instead
of idling while every score is pushed down.

Early stopping needs data the model has not learnt from: each epoch ranks the whole
catalogue for a share of users whose last target event (and anything after it) is held out of
training for the whole run, and the state with the best NDCG@10 is kept. The model is not
retrained with those events; they still count when the user is scored.

Scoring reads each history's last ``max_len`` events; a history without events gets the
training popularity of target items, the best guess without any sequence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from shopsense.extras import require_torch
from shopsense.features.interactions import Interactions, Sequences
from shopsense.models.base import Recommender
from shopsense.models.early_stopping import EarlyStopping

if TYPE_CHECKING:  # torch loads with the network (models/_sasrec_net.py): an optional extra, seconds to import
    from torch import Tensor

    from shopsense.models._sasrec_net import _Negatives

SCORE_CHUNK = 1024
"""Users scored per forward pass: bounds the float32 (users, items) logits of one pass."""
LOGIT_BUDGET = 1 << 24
"""Logits (64 MB of float32) made at once by the full softmax; larger batches are chunked and recomputed."""
MAX_GAP_SECONDS = 365 * 86_400
"""Time gaps at or above one year share the last bucket."""
NDCG_AT = 10


class SASRecConfig(BaseModel):
    """Network size, loss, training targets, stopping rules and reproducibility."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_len: int = Field(50, ge=1, description="most recent events read per user (window length)")
    dim: int = Field(64, ge=1, description="embedding and hidden size")
    layers: int = Field(2, ge=1, description="transformer blocks")
    heads: int = Field(1, ge=1, description="attention heads; must divide dim")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout on inputs, attention and feed-forward")
    loss: Literal["softmax", "sampled", "gbce"] = Field(
        "softmax",
        description="full softmax over the catalogue; sampled softmax or gSASRec's gBCE for catalogues too big for it",
    )
    negatives: int = Field(256, ge=1, description="sampled and gbce losses: negatives shared by a batch")
    sampler: Literal["uniform", "popularity"] = Field(
        "popularity",
        description="sampled loss: draw negatives uniformly or by training popularity (logQ-corrected); gbce: uniform",
    )
    gbce_t: float = Field(
        0.75, ge=0, le=1, description="gbce loss: calibration, 0 plain BCE, 1 calibrated probabilities (0.75: paper)"
    )
    target_types: tuple[str, ...] | None = Field(
        None, min_length=1, description="event types worth predicting (e.g. purchase); None: every type"
    )
    max_epochs: int = Field(50, ge=1, description="passes over the training windows at most")
    patience: int = Field(10, ge=1, description="stop after this many epochs without a better validation NDCG@10")
    max_minutes: float = Field(30.0, gt=0, description="wall-clock limit of training; the best state so far is kept")
    batch_size: int = Field(128, ge=1, description="windows per optimiser step")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay")
    validation_users: float = Field(
        0.1,
        ge=0,
        description="users whose last target event is held out for early stopping: below 1 a share, else a count",
    )
    seed: int = Field(0, description="seeds initial weights, dropout, shuffling, negatives and the validation users")
    time_buckets: int = Field(16, ge=2, description="log-spaced buckets of the time since the previous event")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> SASRecConfig:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        return self

    @model_validator(mode="after")
    def _gbce_samples_uniformly(self) -> SASRecConfig:
        """gBCE's beta assumes every other item is drawn at the same rate: a popularity sampler asked for is refused."""
        if self.loss == "gbce" and "sampler" in self.model_fields_set and self.sampler != "uniform":
            raise ValueError("loss 'gbce' draws its negatives uniformly: leave sampler out or set it to 'uniform'")
        return self


@dataclass(frozen=True)
class EpochLog:
    """One training epoch: mean batch loss, validation NDCG@10 (nan without validation), seconds taken."""

    epoch: int
    loss: float
    ndcg: float
    seconds: float


class SASRec(Recommender):
    """Next-item transformer over each user's recent events, with event types and time gaps."""

    config: SASRecConfig
    needs_sequences = True
    evidence = "browsing"
    similar_items_rank = 5
    fit_per_million = 300.0
    requires = ("torch",)

    def __init__(self, config: SASRecConfig | None = None) -> None:
        self.config = config or SASRecConfig()

    @classmethod
    def adjust_estimate(cls, seconds: float, n_items: int, params: Mapping[str, Any]) -> float:
        """At most ``max_minutes`` (and a little to score): the fit stops there, keeping its best state."""
        return min(seconds, 60.0 * float(params.get("max_minutes", 30.0)) + 10.0)

    def _fit(self, data: Interactions) -> None:
        require_torch("SASRec")
        import torch

        from shopsense.models._sasrec_net import _Network, gbce_beta, start_gbce_at_equilibrium

        seq = data.sequences
        assert seq is not None  # guaranteed by needs_sequences
        cfg = self.config
        self.type_names_ = seq.type_names
        events = self._events(seq)
        targetable = events.targets > 0
        if not targetable.any():
            wanted = ", ".join(cfg.target_types) if cfg.target_types else "any type with positive weight"
            raise ValueError(f"no event to learn to predict: none of {wanted}")
        self.popularity_ = np.bincount(events.targets[targetable] - 1, minlength=self.n_items_).astype(np.float64)
        rng = np.random.default_rng(cfg.seed)
        held_users, held_at = hold_out(events, cfg.validation_users, rng)
        ends = seq.indptr[1:].copy()
        ends[held_users] = held_at
        starts, lengths = training_windows(events, ends, cfg.max_len)
        if not len(starts):
            raise ValueError("no user has an event to predict after an earlier one: nothing to learn from")
        held_from = np.maximum(seq.indptr[held_users], held_at - cfg.max_len)
        # fork_rng: seeding for reproducibility must not reset the caller's global torch generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.net_ = _Network(self.n_items_, len(self.type_names_), cfg)
            if cfg.loss == "gbce":
                start_gbce_at_equilibrium(self.net_, cfg.negatives, gbce_beta(cfg.negatives, self.n_items_, cfg.gbce_t))
            self._train(events, (starts, lengths), (held_from, held_at), rng)
        self.net_.eval()

    def _train(
        self,
        events: _Events,
        windows: tuple[np.ndarray, np.ndarray],
        held: tuple[np.ndarray, np.ndarray],
        rng: np.random.Generator,
    ) -> None:
        """Epochs until patience, max_epochs or max_minutes runs out; leaves the best state in ``net_``.

        ``windows`` are the training inputs (starts, lengths); ``held`` the validation inputs
        (starts, positions of the held-out events), empty without validation.
        """
        import torch

        from shopsense.models._sasrec_net import _Negatives

        cfg = self.config
        net = self.net_
        starts, lengths = windows
        optimiser = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        negatives = None
        if cfg.loss == "sampled" and cfg.sampler == "popularity":
            negatives = _Negatives(self.popularity_ + 1.0)
        elif cfg.loss != "softmax":
            negatives = _Negatives(np.ones(self.n_items_))
        stopping = EarlyStopping(net, patience=cfg.patience, max_minutes=cfg.max_minutes, higher_is_better=True)
        self.history_: list[EpochLog] = []
        n_batches = -(-len(starts) // cfg.batch_size)
        for epoch in range(1, cfg.max_epochs + 1):
            began = time.monotonic()
            order = rng.permutation(len(starts))
            losses: list[float] = []
            with tqdm(total=n_batches, desc=f"SASRec epoch {epoch}", unit="batch", disable=None) as bar:
                net.train()
                for batch in np.array_split(order, n_batches):
                    loss = self._loss(events, starts[batch], lengths[batch], negatives, rng)
                    optimiser.zero_grad()
                    torch.autograd.backward(loss)
                    optimiser.step()
                    losses.append(loss.item())
                    bar.update()
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")
                    if stopping.out_of_time():
                        break
                ndcg = self._validate(events, *held) if len(held[1]) else math.nan
                bar.set_postfix(loss=f"{np.mean(losses):.4f}", ndcg10=f"{ndcg:.4f}")
            self.history_.append(EpochLog(epoch, float(np.mean(losses)), ndcg, time.monotonic() - began))
            if stopping.update(net, ndcg, epoch):
                break
        stopping.restore(net)
        self.best_epoch_ = stopping.best_epoch

    def _loss(
        self,
        events: _Events,
        starts: np.ndarray,
        lengths: np.ndarray,
        negatives: _Negatives | None,
        rng: np.random.Generator,
    ) -> Tensor:
        """Mean loss of predicting every target event of some windows from the events before it."""
        import torch

        from shopsense.models._sasrec_net import _full_softmax_loss, _gbce_loss, _sampled_softmax_loss, gbce_beta

        slots, real = window_slots(starts, lengths)
        hidden = self.net_(*events.inputs(slots, real))
        labels = torch.from_numpy(np.where(real, events.targets[np.where(real, slots + 1, 0)], 0))
        chosen = labels > 0
        states, targets = hidden[chosen], labels[chosen] - 1
        if negatives is None:
            return _full_softmax_loss(self.net_, states, targets)
        drawn = negatives.draw(self.config.negatives, rng)
        if self.config.loss == "gbce":
            beta = gbce_beta(self.config.negatives, self.n_items_, self.config.gbce_t)
            return _gbce_loss(self.net_, states, targets, drawn, beta)
        return _sampled_softmax_loss(self.net_, states, targets, negatives, drawn)

    def _validate(self, events: _Events, starts: np.ndarray, held_at: np.ndarray) -> float:
        """Mean NDCG@10 of the held-out events (inputs from ``starts``), each ranked against the whole catalogue."""
        import torch

        gains = []
        self.net_.eval()
        with torch.inference_mode():
            for chunk in range(0, len(held_at), SCORE_CHUNK):
                part = slice(chunk, chunk + SCORE_CHUNK)
                logits = self._next_logits(events, starts[part], held_at[part] - starts[part])
                truth = torch.from_numpy(events.items[held_at[part]] - 1)
                rank = (logits > logits.gather(1, truth[:, None])).sum(dim=1)
                gains.append(torch.where(rank < NDCG_AT, 1.0 / torch.log2(rank + 2.0), 0.0))
        return float(torch.cat(gains).mean())

    def _score(self, history: Interactions) -> np.ndarray:
        import torch

        seq = history.sequences
        assert seq is not None  # guaranteed by needs_sequences
        events = self._events(seq)
        ends = seq.indptr[1:]
        starts = np.maximum(seq.indptr[:-1], ends - self.config.max_len)
        scores = np.empty((len(ends), self.n_items_))
        scores[starts == ends] = self.popularity_
        rows = np.flatnonzero(starts < ends)
        with torch.inference_mode():
            for chunk in range(0, len(rows), SCORE_CHUNK):
                part = rows[chunk : chunk + SCORE_CHUNK]
                scores[part] = self._next_logits(events, starts[part], ends[part] - starts[part]).numpy()
        return scores

    def _next_logits(self, events: _Events, starts: np.ndarray, lengths: np.ndarray) -> Tensor:
        """Scores of every item as the event after each window (item index order, no padding column)."""
        import torch

        slots, real = window_slots(starts, lengths)
        hidden = self.net_(*events.inputs(slots, real))
        last = hidden[torch.arange(len(lengths)), torch.from_numpy(lengths - 1)]
        return self.net_.logits(last)

    def _events(self, seq: Sequences) -> _Events:
        """Model inputs per event of any sequences, with event types mapped to the training vocabulary."""
        codes = {name: code for code, name in enumerate(self.type_names_, start=1)}
        # Types unseen in training map to 0, the padding type, whose embedding stays zero.
        type_code = np.array([codes.get(name, 0) for name in seq.type_names] + [0], dtype=np.int64)
        types = type_code[seq.types]
        wanted = self.config.target_types
        target_type = np.array(
            [wanted is None or name in wanted for name in seq.type_names] + [False],
            dtype=bool,
        )
        items = seq.items.astype(np.int64) + 1
        targets = np.where(target_type[seq.types] & (seq.weights > 0), items, 0)
        return _Events(seq.indptr, items, types, gap_codes(seq, self.config.time_buckets), targets)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the network as its CPU weights (numpy), not as a torch module."""
        state = self.__dict__.copy()
        if "net_" in state:
            state["net_"] = {name: value.detach().cpu().numpy() for name, value in self.net_.state_dict().items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        weights = state.pop("net_", None)
        super().__setstate__(state)
        if weights is not None:
            require_torch("SASRec")
            import torch

            from shopsense.models._sasrec_net import _Network

            self.net_ = _Network(self.n_items_, len(self.type_names_), self.config)
            self.net_.load_state_dict({name: torch.from_numpy(value) for name, value in weights.items()})
            self.net_.eval()


@dataclass(frozen=True)
class _Events:
    """Per-event model inputs aligned with a :class:`Sequences`' arrays (0 means padding or none)."""

    indptr: np.ndarray
    items: np.ndarray
    """Item index + 1."""
    types: np.ndarray
    """Training type code + 1; 0 for a type the model never saw."""
    gaps: np.ndarray
    """1 for a user's first event, else 2 + bucket of the seconds since the previous event."""
    targets: np.ndarray
    """Item index + 1 where the event is worth predicting, else 0."""

    def inputs(self, slots: np.ndarray, real: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """Item, type and gap tokens of padded windows given by :func:`window_slots`."""
        import torch

        tokens = (torch.from_numpy(np.where(real, column[slots], 0)) for column in (self.items, self.types, self.gaps))
        items, types, gaps = tokens
        return items, types, gaps


def window_slots(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Event index per slot of right-padded windows ``[start, start + length)`` and which slots are real.

    Windows are as long as the longest one of the batch, not ``max_len``; padded slots index event 0.
    """
    offsets = np.arange(lengths.max(initial=1))
    real = offsets < lengths[:, None]
    return np.where(real, starts[:, None] + offsets, 0), real


def training_windows(events: _Events, ends: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Input windows ``(starts, lengths)`` in which every target event before ``ends`` is predicted once.

    Each user's events up to ``ends[u]`` are cut from the end: a window's inputs are up to
    ``max_len`` events and its predictions the events one later. Windows without a target go.
    """
    begins = events.indptr[:-1]
    predictions = np.maximum(ends - begins - 1, 0)
    per_user = -(-predictions // max_len)
    owner = np.repeat(np.arange(len(begins)), per_user)
    nth = np.arange(len(owner)) - np.repeat(np.cumsum(per_user) - per_user, per_user)
    last = ends[owner] - 1 - nth * max_len  # the last predicted event (exclusive end of the inputs)
    starts = np.maximum(begins[owner], last - max_len)
    seen = np.concatenate([[0], np.cumsum(events.targets > 0)])
    has_target = seen[last + 1] > seen[starts + 1]
    return starts[has_target], (last - starts)[has_target]


def hold_out(events: _Events, amount: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Validation users and the position of each one's last target event that follows an earlier event.

    ``amount`` below 1 is the share of such users, from 1 on their number; drawn at random.
    """
    indptr = events.indptr
    owner = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    candidates = np.flatnonzero((events.targets > 0) & (np.arange(len(owner)) > indptr[owner]))
    users = owner[candidates]
    last = np.append(users[1:] != users[:-1], True) if len(users) else np.zeros(0, dtype=bool)
    users, positions = users[last], candidates[last]
    count = round(amount * len(users)) if amount < 1 else min(int(amount), len(users))
    picked = np.sort(rng.choice(len(users), size=count, replace=False))
    return users[picked], positions[picked]


def gap_codes(seq: Sequences, buckets: int) -> np.ndarray:
    """Per event: 1 for a user's first event, else 2 + log-spaced bucket of the seconds since the previous one."""
    gaps = np.diff(seq.times, prepend=seq.times[:1])
    edges = np.geomspace(1, MAX_GAP_SECONDS, buckets - 1)
    codes = 2 + np.searchsorted(edges, gaps, side="right")
    firsts = seq.indptr[:-1][np.diff(seq.indptr) > 0]
    codes[firsts] = 1
    return codes.astype(np.int64)
