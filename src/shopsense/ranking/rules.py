"""Business rules applied after the ranker has scored the candidates: what may be shown, and where.

The ranker orders items by what a shopper is likely to buy; the retailer still decides what must
never be shown (bought already, out of stock, outside a campaign's categories, brands or price band),
what to push or bury (boosts), what must sit in a given slot (pins), and that one product in five
colours fills one slot, not five (variant collapse). A ``RuleConfig`` comes from the pipeline; a
request may override any of its keys (``RuleConfig.merged``).

Order of application: hard filters, boosts, sort, variant collapse, top k, pins. Pinned items pass
the same hard filters, so a pin never brings back an excluded or unavailable item. Everything but
pins is numpy over the whole (rows, candidates) matrix; pins are few, so only they loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopsense.domain import IdIndex
from shopsense.features.interactions import Catalog

PAD = -1
"""Item index of an empty slot."""

CATEGORY_SEPARATOR = " > "
"""Joins the levels of a category path; a rule naming ``Home`` also covers ``Home > Kitchen``."""


class Boost(BaseModel):
    """Multiply the scores of matching items: above 1 pushes them up, below 1 buries them without hiding them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: Literal["item", "category", "brand"]
    value: str = Field(min_length=1, description="item id, category (path prefix) or brand name")
    factor: float = Field(gt=0, allow_inf_nan=False, description="score multiplier; several boosts multiply")


class Pin(BaseModel):
    """Put an item in a fixed slot (a merchandised product, a sponsored placement)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: str = Field(min_length=1)
    position: int = Field(ge=1, description="1-based slot in the final list")


class RuleConfig(BaseModel):
    """The retailer's rules for one pipeline; category rules match a category and everything below it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exclude_purchased: bool | Literal["auto"] = Field(
        "auto",
        description="hide items the user has bought; auto: hide them unless the training data shows shoppers "
        "re-buying (see min_repeat_share)",
    )
    min_repeat_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="auto: bought items stay recommendable when at least this share of purchases re-buy an item",
    )
    repeatable_categories: tuple[str, ...] = Field((), description="bought items here may be shown again")
    exclude_unavailable: bool = Field(True, description="hide items the catalogue marks unavailable")
    exclude_kinds: tuple[str, ...] = Field(
        ("service",), description="hide items whose attribute `kind` is one of these (postage, fees: `service`)"
    )
    include_categories: tuple[str, ...] = Field((), description="only these categories; empty: all")
    exclude_categories: tuple[str, ...] = ()
    include_brands: tuple[str, ...] = Field((), description="only these brands; empty: all")
    exclude_brands: tuple[str, ...] = ()
    min_price: float | None = Field(None, ge=0, allow_inf_nan=False, description="items without a price are hidden")
    max_price: float | None = Field(None, ge=0, allow_inf_nan=False, description="items without a price are hidden")
    boosts: tuple[Boost, ...] = ()
    pins: tuple[Pin, ...] = ()
    collapse_variants: bool = Field(True, description="at most one item per variant group (the best scored)")

    @model_validator(mode="after")
    def _consistent(self) -> RuleConfig:
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError(f"min_price ({self.min_price}) is above max_price ({self.max_price})")
        for what in ("item_id", "position"):
            values = [str(getattr(pin, what)) for pin in self.pins]
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"pins repeat {what} {', '.join(repeated)}: one pin per item and per position")
        return self

    def resolved(self, repeat_share: float | None) -> RuleConfig:
        """These rules with ``exclude_purchased = "auto"`` decided by the share of purchases that re-buy.

        Whether a shop's customers buy the same things again (groceries, supplies, wholesale) or
        once (a sofa, a phone) is a fact of its data, so "auto" reads it from the training data;
        unknown (no purchases) hides bought items, the safe choice.
        """
        if self.exclude_purchased != "auto":
            return self
        repeats = repeat_share is not None and repeat_share >= self.min_repeat_share
        return self.model_copy(update={"exclude_purchased": not repeats})

    def merged(self, overrides: Mapping[str, Any]) -> RuleConfig:
        """This config with a request's overrides, validated like the config itself.

        Each key replaces the configured value (``boosts`` and ``pins`` are replaced, not extended),
        so a request sees exactly the rules it asked for.
        """
        known = type(self).model_fields
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"unknown rule override(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return type(self).model_validate({**self.model_dump(), **overrides})


@dataclass(frozen=True)
class Ranked:
    """Final lists: item indices (``PAD`` in empty slots), scores (-inf there) and where pins put items.

    ``scores`` are the boosted scores the list was sorted by. A pinned item keeps its own boosted
    candidate score when it was a candidate for that row, and NaN when it was not: it is placed by
    the rule, not scored, and NaN says so rather than inventing a number.
    """

    items: np.ndarray
    scores: np.ndarray
    pinned: np.ndarray


def apply_rules(
    items: np.ndarray,
    scores: np.ndarray,
    k: int,
    *,
    config: RuleConfig,
    catalog: Catalog,
    item_ids: IdIndex,
    purchased: sp.csr_matrix | None = None,
) -> Ranked:
    """Filter, boost, sort, collapse variants, cut to ``k`` and place pins, for every row at once.

    Args:
        items: (rows, n) candidate item indices per user, any order; ``PAD`` slots are ignored.
        scores: (rows, n) their scores (e.g. fused probabilities), finite for real candidates.
        k: length of each final list.
        config: the rules, already merged with any request overrides.
        catalog: item metadata aligned with ``item_ids``.
        item_ids: the item vocabulary, to resolve item boosts and pins.
        purchased: (rows, n_items), > 0 where the row's user has bought the item.

    Returns:
        (rows, k) lists; ties in score go to the lower item index, so equal input gives equal output.

    Raises:
        ValueError: on bad shapes, ``k < 1``, item indices outside the vocabulary or unknown pinned ids.
    """
    items = np.asarray(items)
    scores = np.asarray(scores, dtype=np.float64)
    _check(items, scores, k, catalog, item_ids, purchased)
    config = config.resolved(None)  # an "auto" no fitted pipeline decided hides bought items
    items = items.astype(np.int64)
    valid = items != PAD
    safe = np.where(valid, items, 0)  # a real index to gather with; `valid` masks it out again
    ok = valid & _passes(safe, config, catalog) & ~_bought(safe, config, catalog, purchased)
    boosted = np.where(ok, scores, 0.0) * _boost_factors(safe, config, catalog, item_ids)
    order = np.lexsort((items, -boosted, ~ok), axis=1)  # eligible first, score desc, then item index
    ranked, ranked_scores, keep = (np.take_along_axis(a, order, 1) for a in (items, boosted, ok))
    keep &= _first_of_key(np.where(keep, ranked, PAD))  # an item listed twice counts once
    if config.collapse_variants and catalog.group is not None:
        keep &= _first_of_key(np.where(keep, catalog.group[np.maximum(ranked, 0)], PAD))
    # Each pin removes at most itself or one variant, so k + pins items always refill the list.
    top, top_scores = _compact(keep, ranked, ranked_scores, k + len(config.pins))
    result = Ranked(top, top_scores, np.zeros(top.shape, dtype=bool))
    if config.pins:
        result = _place_pins(result, items, np.where(ok, boosted, -np.inf), config, catalog, item_ids, purchased)
    return Ranked(result.items[:, :k], result.scores[:, :k], result.pinned[:, :k])


def _check(
    items: np.ndarray,
    scores: np.ndarray,
    k: int,
    catalog: Catalog,
    item_ids: IdIndex,
    purchased: sp.csr_matrix | None,
) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if items.ndim != 2 or scores.shape != items.shape:
        raise ValueError(f"items and scores must be (rows, n) of one shape, got {items.shape} and {scores.shape}")
    if items.size and not np.issubdtype(items.dtype, np.integer):
        raise ValueError(f"items must be integer item indices, got dtype {items.dtype}")
    n_items = len(item_ids)
    if len(catalog.category) != n_items:
        raise ValueError(f"catalog has {len(catalog.category)} items but the vocabulary {n_items}")
    if items.size and (items.min() < PAD or items.max() >= n_items):
        raise ValueError(f"item indices must lie in [0, {n_items}) or be {PAD} for padding")
    if not np.isfinite(scores[items != PAD]).all():
        raise ValueError("scores of real candidates must be finite")
    if purchased is not None and purchased.shape != (items.shape[0], n_items):
        raise ValueError(f"purchased must be (rows, n_items) = {(items.shape[0], n_items)}, got {purchased.shape}")


def _matches(names: tuple[str, ...], wanted: tuple[str, ...], *, path: bool) -> np.ndarray:
    """Which names match, indexed by code, plus a trailing False that code -1 (unknown) reads.

    With ``path``, a wanted name also matches every category below it (``Home`` covers
    ``Home > Kitchen``, not ``Homeware``).
    """
    hits = [any(n == w or (path and n.startswith(w + CATEGORY_SEPARATOR)) for w in wanted) for n in names]
    return np.array([*hits, False], dtype=bool)


def _passes(idx: np.ndarray, config: RuleConfig, catalog: Catalog) -> np.ndarray:
    """The hard filters that depend on the item alone, for an array of item indices of any shape."""
    ok = np.ones(idx.shape, dtype=bool)
    if config.exclude_unavailable and catalog.available is not None:
        ok &= catalog.available[idx].astype(bool)
    kind = getattr(catalog, "kind", None)  # bundles saved before kinds existed lack it
    if config.exclude_kinds and kind is not None:
        ok &= ~_matches(catalog.kinds, config.exclude_kinds, path=False)[kind[idx]]
    category = catalog.category[idx]
    if config.include_categories:
        ok &= _matches(catalog.categories, config.include_categories, path=True)[category]
    if config.exclude_categories:
        ok &= ~_matches(catalog.categories, config.exclude_categories, path=True)[category]
    brand = catalog.brand[idx] if catalog.brand is not None else np.full(idx.shape, PAD)
    if config.include_brands:
        ok &= _matches(catalog.brands, config.include_brands, path=False)[brand]
    if config.exclude_brands:
        ok &= ~_matches(catalog.brands, config.exclude_brands, path=False)[brand]
    if config.min_price is not None or config.max_price is not None:
        price = catalog.prices()[idx]
        ok &= ~np.isnan(price)
        if config.min_price is not None:
            ok &= price >= config.min_price
        if config.max_price is not None:
            ok &= price <= config.max_price
    return ok


def _bought(idx: np.ndarray, config: RuleConfig, catalog: Catalog, purchased: sp.csr_matrix | None) -> np.ndarray:
    """(rows, n) True where row r bought item idx[r, j] and its category is not repeatable."""
    if not config.exclude_purchased or purchased is None or idx.size == 0:
        return np.zeros(idx.shape, dtype=bool)
    rows = np.broadcast_to(np.arange(idx.shape[0])[:, None], idx.shape)
    bought = np.asarray(sp.csr_matrix(purchased)[rows.ravel(), idx.ravel()]).reshape(idx.shape) > 0
    if config.repeatable_categories:
        bought &= ~_matches(catalog.categories, config.repeatable_categories, path=True)[catalog.category[idx]]
    return bought


def _boost_factors(idx: np.ndarray, config: RuleConfig, catalog: Catalog, item_ids: IdIndex) -> np.ndarray:
    """Product of the factors of every boost each item matches (a boost naming nothing known matches nothing)."""
    factor = np.ones(idx.shape)
    for boost in config.boosts:
        if boost.field == "item":
            match = idx == item_ids.index([boost.value])[0]
        elif boost.field == "category":
            match = _matches(catalog.categories, (boost.value,), path=True)[catalog.category[idx]]
        elif catalog.brand is not None:
            match = _matches(catalog.brands, (boost.value,), path=False)[catalog.brand[idx]]
        else:
            continue
        factor[match] *= boost.factor
    return factor


def _first_of_key(keys: np.ndarray) -> np.ndarray:
    """True where a key appears for the first time in its row (always for ``PAD`` keys)."""
    order = np.argsort(keys, axis=1, kind="stable")
    grouped = np.take_along_axis(keys, order, 1)
    first_in_order = np.ones(keys.shape, dtype=bool)
    first_in_order[:, 1:] = grouped[:, 1:] != grouped[:, :-1]
    first = np.empty_like(first_in_order)
    np.put_along_axis(first, order, first_in_order, 1)
    first |= keys == PAD
    return first


def _compact(keep: np.ndarray, items: np.ndarray, scores: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Kept entries moved to the front of each row in their order, padded or cut to ``width`` columns."""
    take = np.argsort(~keep, axis=1, kind="stable")[:, :width]
    kept = np.take_along_axis(keep, take, 1)
    out_items = np.where(kept, np.take_along_axis(items, take, 1), PAD)
    out_scores = np.where(kept, np.take_along_axis(scores, take, 1), -np.inf)
    short = ((0, 0), (0, width - take.shape[1]))
    return np.pad(out_items, short, constant_values=PAD), np.pad(out_scores, short, constant_values=-np.inf)


def _place_pins(
    ranked: Ranked,
    candidates: np.ndarray,
    candidate_scores: np.ndarray,
    config: RuleConfig,
    catalog: Catalog,
    item_ids: IdIndex,
    purchased: sp.csr_matrix | None,
) -> Ranked:
    """Move each eligible pinned item to its slot; the rest of the list shifts down.

    A pin is eligible in a row when its item passes that row's hard filters and, with variant
    collapse, no pin at an earlier position holds its variant group. Pinned items and their
    variants leave the list first, then pins go in by ascending position, so a later pin never
    shifts an earlier one; a slot past the end of a short list becomes the end.
    """
    pins = sorted(config.pins, key=lambda p: p.position)
    index = np.array(item_ids.index([p.item_id for p in pins]), dtype=np.int64)
    unknown = [p.item_id for p, i in zip(pins, index, strict=True) if i == PAD]
    if unknown:
        raise ValueError(f"pinned item id(s) not in the item vocabulary: {', '.join(map(repr, unknown))}")
    rows = ranked.items.shape[0]
    grid = np.broadcast_to(index, (rows, len(pins)))
    eligible = _passes(grid, config, catalog) & ~_bought(grid, config, catalog, purchased)
    groups = catalog.group if config.collapse_variants else None
    group = groups[index] if groups is not None else np.full(len(pins), PAD)
    for j in range(len(pins)):
        for i in range(j):
            if group[i] != PAD and group[i] == group[j]:
                eligible[:, j] &= ~eligible[:, i]

    items, scores = ranked.items, ranked.scores
    present = items != PAD
    item_group = groups[np.maximum(items, 0)] if groups is not None else None
    drop = np.zeros(items.shape, dtype=bool)
    for j, item in enumerate(index):
        hit = items == item
        if item_group is not None and group[j] != PAD:
            hit |= present & (item_group == group[j])
        drop |= hit & eligible[:, j, None]
    items, scores = _compact(present & ~drop, items, scores, items.shape[1])
    pinned = np.zeros(items.shape, dtype=bool)

    for j, (pin, item) in enumerate(zip(pins, index, strict=True)):
        own = np.max(candidate_scores, axis=1, where=candidates == item, initial=-np.inf)
        own[own == -np.inf] = np.nan  # not a candidate in that row: placed, never scored
        at = np.minimum(pin.position - 1, (items != PAD).sum(axis=1))
        items, scores, pinned = _insert(
            eligible[:, j], at, (items, PAD, item), (scores, -np.inf, own), (pinned, False, True)
        )
    return Ranked(items, scores, pinned)


def _insert(rows: np.ndarray, at: np.ndarray, *columns: tuple[np.ndarray, Any, Any]) -> tuple[np.ndarray, ...]:
    """Each (array, fill, value) grown by one column: in ``rows``, ``value`` at ``at`` and the rest shifted right."""
    n_rows, width = columns[0][0].shape
    col = np.arange(width + 1)
    source = np.where(rows[:, None] & (col >= at[:, None]), np.maximum(col - 1, 0), col)
    out = []
    for array, fill, value in columns:
        grown = np.concatenate([array, np.full((n_rows, 1), fill, dtype=array.dtype)], axis=1)
        grown = np.take_along_axis(grown, source, 1)
        grown[rows, at[rows]] = np.broadcast_to(value, (n_rows,))[rows]
        out.append(grown)
    return tuple(out)
