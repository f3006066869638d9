"""Multi-objective fusion: ``score = alpha·P(attention) + (1-alpha)·P(purchase)·value``.

alpha trades what a shopper will look at against what they will buy; the value term weights a
purchase by what it is worth (price, or margin where the catalogue gives one) raised to an
exponent, so 0 ignores value and 1 ranks by expected revenue. Values are divided by the
catalogue's median so the two terms stay on comparable scales; an item with no known value
counts as a median item rather than as worthless.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shopsense.features.interactions import Catalog


class FusionConfig(BaseModel):
    """How attention and purchase probabilities are blended (settable per pipeline, request and campaign)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(0.5, ge=0, le=1, description="1: attention only; 0: purchase (times value) only")
    value: Literal["none", "price", "margin"] = Field("price", description="what a purchase is worth")
    exponent: float = Field(0.5, ge=0, le=2, description="0 ignores value, 1 is expected revenue or profit")


def item_value(catalog: Catalog | None, n_items: int, config: FusionConfig) -> np.ndarray:
    """Per-item value multiplier, median-normalised; 1 where unknown or when value is not used."""
    if config.value == "none" or config.exponent == 0 or catalog is None:
        return np.ones(n_items)
    raw = catalog.prices() if config.value == "price" else catalog.margin
    if raw is None:
        return np.ones(n_items)
    known = np.isfinite(raw) & (raw > 0)
    if not known.any():
        return np.ones(n_items)
    scale = float(np.median(raw[known]))
    return np.where(known, np.power(np.where(known, raw, scale) / scale, config.exponent), 1.0)


def fuse(probabilities: np.ndarray, value: np.ndarray, alpha: float) -> np.ndarray:
    """Blend (pairs, 2) [attention, purchase] probabilities with each pair's value."""
    fused: np.ndarray = alpha * probabilities[:, 0] + (1.0 - alpha) * probabilities[:, 1] * value
    return fused
