"""The DIN head's PyTorch parts: the network and its chunked scoring, imported only when the head trains or loads.

Kept apart from :mod:`shopsense.ranking.din` so that configuring a ranker, and loading a bundle whose
ranking head is LightGBM, needs no torch, which is an optional extra (``shopsense[neural]``) and takes
seconds to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shopsense.extras import missing_extra
from shopsense.ranking.din import PREDICT_POSITIONS, DINConfig

try:
    import torch
    import torch.nn.functional as F
    from torch import Tensor, nn
except ImportError as error:
    raise missing_extra("The DIN ranking head", instead="set ranker.head = 'lightgbm'") from error

if TYPE_CHECKING:
    from shopsense.ranking.din import _Inputs


class _Network(nn.Module):
    """Embeddings, the local activation unit and the two-logit trunk."""

    def __init__(self, n_items: int, n_types: int, n_dense: int, cfg: DINConfig) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 1, cfg.dim, padding_idx=n_items)
        self.type_embedding = nn.Embedding(n_types + 1, cfg.dim, padding_idx=n_types)
        for table in (self.item_embedding, self.type_embedding):
            # Rows of unit norm keep q * k near 1, not near dim, whatever the width.
            nn.init.normal_(table.weight, std=cfg.dim**-0.5)
            nn.init.zeros_(table.weight[-1])
        self.activation = nn.Sequential(
            nn.Linear(4 * cfg.dim, cfg.attention_hidden), nn.PReLU(), nn.Linear(cfg.attention_hidden, 1)
        )
        layers: list[nn.Module] = []
        width = 2 * cfg.dim + n_dense
        for size in cfg.hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = size
        layers.append(nn.Linear(width, 2))
        self.trunk = nn.Sequential(*layers)

    def forward(self, dense: Tensor, items: Tensor, history: Tensor, types: Tensor) -> Tensor:
        """Logits ``(batch, 2)`` [attention, purchase]; ``history`` and ``types`` are ``(batch, L)``."""
        query = self.item_embedding(items)
        keys = self.item_embedding(history) + self.type_embedding(types)
        expanded = query[:, None, :].expand_as(keys)
        unit_input = torch.cat([expanded, keys, expanded - keys, expanded * keys], dim=-1)
        real = history != self.item_embedding.padding_idx
        weights = self.activation(unit_input).squeeze(-1) * real
        interest = (weights[:, :, None] * keys).sum(dim=1)
        logits: Tensor = self.trunk(torch.cat([query, interest, dense], dim=1))
        return logits


def _logits(net: _Network, inputs: _Inputs, rows: Tensor) -> Tensor:
    """Logits of some pairs, in chunks under no_grad so scoring many pairs needs bounded memory."""
    chunk = max(1, PREDICT_POSITIONS // max(1, inputs.history.shape[1]))
    with torch.no_grad():
        parts = [net(*inputs.take(part)) for part in torch.split(rows, chunk)]
    return torch.cat(parts) if parts else torch.zeros((0, 2))


def _log_loss(net: _Network, inputs: _Inputs, targets: Tensor, rows: Tensor) -> float:
    """Mean binary log-loss of both heads over some pairs."""
    return float(F.binary_cross_entropy_with_logits(_logits(net, inputs, rows), targets[rows]))
