"""SASRec's PyTorch parts: the network and its two losses, imported only when a SASRec model trains or loads.

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
    """Draws sampled-softmax negatives from fixed item weights and knows their log-probabilities."""

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
