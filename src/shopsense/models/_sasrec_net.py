"""SASRec's PyTorch parts: the network and its three losses, imported only when a SASRec model trains or loads.

Kept apart from :mod:`shopsense.models.sasrec` so that naming, configuring and validating the model
needs no torch, which is an optional extra (``shopsense[neural]``) and takes seconds to import.
"""

from __future__ import annotations

import math

import numpy as np

from shopsense.extras import missing_extra
from shopsense.models.sasrec import LOGIT_BUDGET, SASRecConfig

try:
    import torch
    import torch.nn.functional as F
    from torch import Tensor, nn
    from torch.utils.checkpoint import checkpoint
except ImportError as error:
    raise missing_extra("SASRec") from error


class _Network(nn.Module):
    """Embeddings, a causal pre-norm transformer encoder and the tied output layer."""

    def __init__(self, n_items: int, n_types: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
        self.types = nn.Embedding(n_types + 1, cfg.dim, padding_idx=0)
        self.gaps = nn.Embedding(cfg.time_buckets + 2, cfg.dim, padding_idx=0)
        self.positions = nn.Embedding(cfg.max_len, cfg.dim)
        self.bias = nn.Parameter(torch.zeros(n_items))
        for table in (self.items, self.types, self.gaps, self.positions):
            # Rows of unit norm keep the first logits (state . item) near 1, not near dim.
            nn.init.normal_(table.weight, std=cfg.dim**-0.5)
        for table in (self.items, self.types, self.gaps):
            nn.init.zeros_(table.weight[0])
        self.dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            cfg.dim,
            cfg.heads,
            dim_feedforward=4 * cfg.dim,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, norm=nn.LayerNorm(cfg.dim), enable_nested_tensor=False)

    def forward(self, items: Tensor, types: Tensor, gaps: Tensor) -> Tensor:
        """Hidden state after each event of right-padded windows ``(batch, length, dim)``.

        Padding follows every real event, so the causal mask alone keeps it out of every real
        event's attention; a key-padding mask would add nothing and would leave the padded
        queries with no key at all (NaN).
        """
        length = items.shape[1]
        x = self.items(items) + self.positions(torch.arange(length)) + self.types(types) + self.gaps(gaps)
        causal = nn.Transformer.generate_square_subsequent_mask(length)
        hidden: Tensor = self.encoder(self.dropout(x), mask=causal, is_causal=True)
        return hidden

    def logits(self, hidden: Tensor) -> Tensor:
        """Score of every item (without the padding token) for each hidden state."""
        return hidden @ self.items.weight[1:].T + self.bias


class _Negatives:
    """Draws negatives (with replacement) from fixed item weights and knows their log-probabilities."""

    def __init__(self, weights: np.ndarray) -> None:
        probability = weights / weights.sum()
        self.cdf = np.cumsum(probability)
        self.log_q = torch.from_numpy(np.log(probability).astype(np.float32))

    def draw(self, n: int, rng: np.random.Generator) -> Tensor:
        picked = np.searchsorted(self.cdf, rng.random(n) * self.cdf[-1], side="right")
        return torch.from_numpy(np.minimum(picked, len(self.cdf) - 1))


def _full_softmax_loss(net: _Network, states: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy over the whole catalogue; big batches go in chunks whose logits are recomputed in backward."""

    def summed(part: Tensor, truth: Tensor) -> Tensor:
        return F.cross_entropy(net.logits(part), truth, reduction="sum")

    chunk = max(1, LOGIT_BUDGET // net.bias.shape[0])
    if len(states) <= chunk:
        return summed(states, targets) / len(states)
    parts = [
        checkpoint(summed, states[i : i + chunk], targets[i : i + chunk], use_reentrant=False)
        for i in range(0, len(states), chunk)
    ]
    return torch.stack(parts).sum() / len(states)


def _sampled_softmax_loss(
    net: _Network, states: Tensor, targets: Tensor, negatives: _Negatives, drawn: Tensor
) -> Tensor:
    """Cross-entropy of each target against shared negatives, every logit minus log q (the sampling bias)."""
    table = net.items.weight[1:]
    log_q = negatives.log_q
    positive = (states * table[targets]).sum(dim=1) + net.bias[targets] - log_q[targets]
    negative = states @ table[drawn].T + net.bias[drawn] - log_q[drawn]
    negative = negative.masked_fill(drawn[None, :] == targets[:, None], -math.inf)  # a drawn target is no negative
    logits = torch.cat([positive[:, None], negative], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long))


def gbce_beta(negatives: int, n_items: int, t: float) -> float:
    """Power of the positive's probability in gBCE: ``beta = alpha * (t * (1 - 1/alpha) + 1/alpha)``.

    ``alpha`` is the sampling rate, the share of the other ``n_items - 1`` items that one step
    draws as negatives. Petrov & Macdonald (2023, gSASRec) show that BCE with sampled negatives is
    overconfident (each item meets only a share ``alpha`` of the negatives it would meet over the
    full catalogue, so the sigmoid of its score overestimates its probability) and that raising the
    positive's sigmoid to ``beta`` removes a share ``t`` of that: ``t = 0`` gives ``beta = 1``
    (plain BCE), ``t = 1`` gives ``beta = alpha`` (calibrated probabilities). The formula simplifies to
    ``1 + t * (alpha - 1)``. A draw of at least ``n_items - 1`` negatives covers the catalogue, so
    ``alpha`` is capped at 1 (and then ``beta`` is 1 whatever ``t``).

    Args:
        negatives: negatives drawn per step (``k``).
        n_items: catalogue size.
        t: calibration, from 0 to 1.

    Returns:
        ``beta``, between ``alpha`` and 1.
    """
    alpha = 1.0 if negatives >= n_items - 1 else negatives / (n_items - 1)
    return alpha * (t * (1 - 1 / alpha) + 1 / alpha)


def _gbce_loss(net: _Network, states: Tensor, targets: Tensor, drawn: Tensor, beta: float) -> Tensor:
    """Generalised binary cross-entropy of each target against shared uniform negatives (gSASRec).

    Per target, ``-(beta * log sigma(s+) + sum log(1 - sigma(s-))) / (k + 1)``: BCE with the
    positive's probability raised to ``beta`` (see :func:`gbce_beta`), averaged over the ``k + 1``
    scores as in the paper, then over targets. Written with ``logsigmoid`` (``log(1 - sigma(s))`` is
    ``logsigmoid(-s)``), which is exact where the authors' clipped transform of the positive logit
    is not, and stays finite for any logit. A drawn negative equal to the target is not counted.
    """
    table = net.items.weight[1:]
    positive = (states * table[targets]).sum(dim=1) + net.bias[targets]
    negative = states @ table[drawn].T + net.bias[drawn]
    is_negative = (drawn[None, :] != targets[:, None]).to(negative.dtype)
    log_likelihood = beta * F.logsigmoid(positive) + (F.logsigmoid(-negative) * is_negative).sum(dim=1)
    return -(log_likelihood / (len(drawn) + 1)).mean()


def start_gbce_at_equilibrium(net: _Network, negatives: int, beta: float) -> None:
    """Start every item's bias at ``log(beta / k)``, the score at which gBCE balances before anything is learnt.

    With every score equal to ``c`` the loss ``-beta log sigma(c) - k log(1 - sigma(c))`` is least at
    ``sigma(c) = beta / (beta + k)``. Started at 0 instead, the first steps of BCE mostly push every
    score down, and the quickest way there is a direction shared by all hidden states against all
    items: the states collapse and training idles long before it ranks (the "kick-off" delay the
    gSASRec authors report). On the item-cycle test data this start cuts the epochs to learn the
    cycle about fourfold; the softmax losses ignore a shared offset, so it is gBCE's alone.
    """
    with torch.no_grad():
        net.bias.fill_(math.log(beta / negatives))
