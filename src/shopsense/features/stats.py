"""Item and user statistics at an explicit ``as_of``: what the ranker (and marketing) know about each.

Every function reads only the events it is given, which the caller cuts at ``as_of``, and
measures ages from ``as_of``, so a statistic computed for a past training window is exactly
what would have been known then. Columns are numpy arrays keyed by name, aligned to the
item index or to the user rows of the sequences; NaN means "no evidence", never zero.
"""

from __future__ import annotations

import numpy as np

from shopsense.features.interactions import Catalog, Sequences

DAY = 86_400
WINDOWS_DAYS = (7, 30)
"""Popularity windows: this week's and this month's interest, besides all time."""


def type_mask(sequences: Sequences, names: tuple[str, ...]) -> np.ndarray:
    """Events whose type is one of ``names`` (absent types match nothing)."""
    codes = [sequences.type_code(name) for name in names]
    return np.isin(sequences.types, [c for c in codes if c >= 0])


def item_stats(
    sequences: Sequences, n_items: int, as_of: int, purchase_types: tuple[str, ...], catalog: Catalog | None
) -> dict[str, np.ndarray]:
    """Popularity over several windows, distinct users, smoothed view-to-purchase conversion, price, age."""
    age = (as_of - sequences.times) / DAY
    bought = type_mask(sequences, purchase_types)
    out: dict[str, np.ndarray] = {}
    for days in WINDOWS_DAYS:
        recent = age <= days
        out[f"item_events_{days}d"] = np.bincount(sequences.items[recent], minlength=n_items).astype(float)
        out[f"item_purchases_{days}d"] = np.bincount(sequences.items[recent & bought], minlength=n_items).astype(float)
    events = np.bincount(sequences.items, minlength=n_items).astype(float)
    purchases = np.bincount(sequences.items[bought], minlength=n_items).astype(float)
    pairs = np.unique(sequences.owners().astype(np.int64) * n_items + sequences.items)
    out["item_events"] = events
    out["item_purchases"] = purchases
    out["item_users"] = np.bincount(pairs % n_items, minlength=n_items).astype(float)
    # Smoothed toward a 10% prior: an item seen once and bought once is not a sure converter.
    out["item_conversion"] = (purchases + 0.1) / (events + 1.0)
    first = np.full(n_items, np.inf)
    np.minimum.at(first, sequences.items, sequences.times.astype(float))
    last = np.full(n_items, -np.inf)
    np.maximum.at(last, sequences.items, sequences.times.astype(float))
    out["item_age_days"] = np.where(np.isfinite(first), (as_of - first) / DAY, np.nan)
    out["item_days_since_last"] = np.where(np.isfinite(last), (as_of - last) / DAY, np.nan)
    out["item_price"] = catalog.prices() if catalog is not None else np.full(n_items, np.nan)
    return out


def user_stats(
    sequences: Sequences, as_of: int, purchase_types: tuple[str, ...], catalog: Catalog | None
) -> dict[str, np.ndarray]:
    """Recency, frequency, spend, breadth, price level and usual shopping hour of each user row."""
    n_users = len(sequences.indptr) - 1
    owners = sequences.owners()
    counts = np.diff(sequences.indptr).astype(float)
    bought = type_mask(sequences, purchase_types)
    has = counts > 0
    last_index = np.maximum(sequences.indptr[1:] - 1, 0)
    first_index = np.minimum(sequences.indptr[:-1], max(len(sequences.times) - 1, 0))
    times = sequences.times.astype(float) if len(sequences.times) else np.zeros(1)
    last, first = np.where(has, times[last_index], np.nan), np.where(has, times[first_index], np.nan)
    last_buy = np.full(n_users, -np.inf)
    np.maximum.at(last_buy, owners[bought], sequences.times[bought].astype(float))
    price = catalog.prices()[sequences.items] if catalog is not None else np.full(len(owners), np.nan)
    priced = ~np.isnan(price)
    priced_events = np.bincount(owners[priced], minlength=n_users)
    price_sum = np.bincount(owners[priced], weights=price[priced], minlength=n_users)
    divisor = int(sequences.items.max(initial=0)) + 1
    distinct = np.unique(owners.astype(np.int64) * divisor + sequences.items)
    seconds_of_day = np.mod(last, DAY)
    return {
        "user_events": counts,
        "user_purchases": np.bincount(owners[bought], minlength=n_users).astype(float),
        "user_items": np.bincount(distinct // divisor, minlength=n_users).astype(float),
        "user_days_since_last": (as_of - last) / DAY,
        "user_days_since_purchase": np.where(np.isfinite(last_buy), (as_of - last_buy) / DAY, np.nan),
        "user_span_days": (last - first) / DAY,
        "user_mean_price": np.where(priced_events > 0, price_sum / np.maximum(priced_events, 1), np.nan),
        "user_spend": np.bincount(owners[bought & priced], weights=price[bought & priced], minlength=n_users),
        "user_last_hour": np.floor(seconds_of_day / 3600),
        "user_last_weekday": np.mod(np.floor(last / DAY) + 3, 7),  # 1970-01-01 was a Thursday (3, Monday = 0)
    }
