"""Explanations: a readable reason from each recommendation's strongest evidence, and the numbers behind it.

The gradient-boosted heads give every feature's path contribution (log-odds, see
:mod:`shopsense.ranking.heads`) to a pair's score. Features are grouped by the evidence they
stand for (the user bought it before, it goes with something they just viewed, it is trending,
shoppers like them bought it…); the groups'
contributions to the fused score (each head's weighted by its share of alpha) are the
machine-readable explanation, and the strongest positive group the user can actually be
told about becomes the sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shopsense.features.interactions import Catalog
from shopsense.models.base import Recommender
from shopsense.models.registry import MODELS
from shopsense.ranking.features import FeatureFrame

FEATURE_EVIDENCE = {
    "user_item_purchases": "bought_before",
    "user_item_views": "looked_at",
    "user_item_clicks": "looked_at",
    "user_item_carts": "looked_at",
    "user_item_favourites": "looked_at",
    "user_item_days_since": "looked_at",
    "cooc_recent": "goes_with",
    "item_events_7d": "trending",
    "item_purchases_7d": "trending",
    "item_events_30d": "trending",
    "item_purchases_30d": "trending",
    "item_events": "popular",
    "item_purchases": "popular",
    "item_users": "popular",
    "item_conversion": "popular",
    "user_category_share": "category",
    "user_brand_share": "brand",
    "price_vs_user": "price",
}
"""Evidence of the features other than candidate sources' scores and ranks; anything not listed is the user's or
item's profile."""


@dataclass(frozen=True)
class Explanation:
    """Why one item was recommended: a sentence, its evidence group, a related item, contributions by group."""

    reason: str
    evidence: str
    related_item: str | None
    contributions: dict[str, float]


def evidence_groups(names: tuple[str, ...], source_models: dict[str, str]) -> list[str]:
    """The evidence group of every feature column; a candidate source's score and rank stand for what its model
    does (the model class's ``evidence``; a name not registered counts as taste)."""
    groups: list[str] = []
    for name in names:
        kind, _, source = name.partition("_")
        if kind in ("score", "rank") and source in source_models:
            groups.append(MODELS.get(source_models[source], Recommender).evidence)
        else:
            groups.append(FEATURE_EVIDENCE.get(name, "profile"))
    return groups


def explain(
    frame: FeatureFrame,
    rows: np.ndarray,
    contributions: np.ndarray,
    groups: list[str],
    catalog: Catalog | None,
    item_ids: Sequence[str],
    titles: Sequence[str] | None = None,
    related_bought: np.ndarray | None = None,
    nameable: np.ndarray | None = None,
) -> list[Explanation]:
    """Explanations for the frame rows ``rows`` (one per recommended pair).

    ``contributions`` is (len(rows), features) log-odds, already blended over the heads;
    ``related_bought`` says per row whether the user bought (not just viewed) the related item;
    ``nameable`` per item whether a sentence may name it ("Often bought with POSTAGE" may not).
    """
    names = sorted(set(groups))
    member = np.array([[group == name for group in groups] for name in names], dtype=float)
    by_group = contributions @ member.T
    out = []
    for position, row in enumerate(rows.tolist()):
        values = dict(zip(names, by_group[position].round(4).tolist(), strict=True))
        order = sorted(names, key=lambda name: -values[name])
        related = int(frame.related[row])
        if related >= 0 and nameable is not None and not nameable[related]:
            related = -1  # neither said nor listed
        chosen = next((name for name in order if values[name] > 0 and _has(frame, row, name, related >= 0)), "")
        bought = bool(related_bought[position]) if related_bought is not None else True
        out.append(_sentence(chosen, frame, row, related, bought, values, catalog, item_ids, titles))
    return out


def _has(frame: FeatureFrame, row: int, group: str, tellable: bool = True) -> bool:
    """Whether a group's evidence can be told to the user for this pair (not just a model quirk);
    ``tellable``: whether the pair's related item may be named."""
    value = dict(zip(frame.names, frame.values[row].tolist(), strict=True))
    checks = {
        "bought_before": value.get("user_item_purchases", 0) > 0,
        "looked_at": np.isfinite(value.get("user_item_days_since", np.nan)),
        "goes_with": frame.related[row] >= 0 and tellable,
        "trending": value.get("item_events_7d", 0) > 0,
        "category": value.get("user_category_share", 0) > 0,
        "brand": value.get("user_brand_share", 0) > 0,
        "popular": value.get("item_users", 0) > 0,
        "taste": True,
        "similar": True,
        "browsing": True,
    }
    return bool(checks.get(group, False))


def _sentence(
    group: str,
    frame: FeatureFrame,
    row: int,
    related: int,
    bought: bool,
    values: dict[str, float],
    catalog: Catalog | None,
    item_ids: Sequence[str],
    titles: Sequence[str] | None,
) -> Explanation:
    item = int(frame.items[row])
    category = _category(catalog, item)
    related_name = None if related < 0 else (titles[related] if titles and titles[related] else item_ids[related])
    text = {
        "bought_before": "You bought this before",
        "looked_at": "You looked at this recently",
        "goes_with": f"Often bought with {related_name}" if bought else f"Because you viewed {related_name}",
        "trending": f"Popular in {category} this week" if category else "Popular this week",
        "popular": f"A bestseller in {category}" if category else "A bestseller",
        "taste": "Shoppers with your taste bought this",
        "similar": "Similar to items you liked",
        "browsing": "Picked for what you are browsing now",
        "category": f"Because you like {category}" if category else "Because you like this category",
        "brand": "From a brand you like",
    }.get(group, "Recommended for you")
    return Explanation(text, group or "none", item_ids[related] if related >= 0 else None, values)


def _category(catalog: Catalog | None, item: int) -> str:
    """The deepest category name of an item ("Home > Kitchen" reads as "Kitchen"), "" when unknown."""
    if catalog is None or catalog.category[item] < 0:
        return ""
    return catalog.categories[int(catalog.category[item])].split(" > ")[-1]
