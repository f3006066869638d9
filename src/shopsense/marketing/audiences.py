"""Audiences for an offer: who will likely buy a target, restricted, de-duplicated, grown and exported.

A campaign asks "whom do we send the Garden offer to?". :class:`PropensityModel` answers with
P(customer buys the target in the next ``horizon_days``) learned from the shop's own past without
leakage: features are taken at a cut ``horizon_days`` before ``as_of`` and the labels are the target
purchases in ``[cut, as_of)``, so no labelled event is visible to the features; the fitted model is
then applied to features taken at ``as_of``. :func:`build_audience` turns the scores into a contact
list (segment, exclusions, top-N or threshold), :func:`lookalike` grows a seed list by profile
similarity and :func:`export_audience` writes either atomically. Profiles come from
:func:`shopsense.features.profiles.build_profiles`; nothing here recomputes them.
"""

from __future__ import annotations

import difflib
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler, normalize

from shopsense.csv_safety import neutralise_table
from shopsense.errors import ConfigError
from shopsense.features.clv import DAY_US, as_of_micros, event_micros, history_before, locate, type_flags
from shopsense.features.profiles import ProfileConfig, build_profiles
from shopsense.marketing.segments import Segment, evaluate_segments
from shopsense.models.base import NotFitted

log = logging.getLogger(__name__)
Floats = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
Texts = npt.NDArray[np.str_]
_KINDS = ("item_id", "category", "brand")
_AUDIENCE_COLUMNS = ("user_id", "score", "rank", "main_reason", "interest_category", "interest_brand")
_PHRASES = {
    "target_last_interaction_days": "recent interaction with the target",
    "target_last_purchase_days": "recent purchase of the target",
    "interest_category": "interest in the target's category",
    "interest_brand": "interest in the target's brand",
}


class Target(BaseModel):
    """What an offer promotes: exactly one catalogue item, category (any level of the path) or brand.

    Category and brand match case-insensitively, so "garden" finds "Garden > Garden 2" items. A
    name the catalogue lacks fails in :meth:`resolve` with the closest names: a typo would otherwise
    train a model on zero positives and quietly target nobody.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: str | None = None
    category: str | None = None
    brand: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        given = [kind for kind in _KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ConfigError(f"a target names exactly one of item_id, category, brand; got {given or 'none'}")
        if not self.value.strip():
            raise ConfigError(f"target {given[0]} is empty")
        return self

    @property
    def kind(self) -> str:
        """Which of item_id, category or brand is given."""
        return next(kind for kind in _KINDS if getattr(self, kind) is not None)

    @property
    def value(self) -> str:
        """The given item id, category or brand name."""
        return str(getattr(self, self.kind))

    def __str__(self) -> str:
        return f"{self.kind} {self.value!r}"

    def resolve(self, items: pa.Table) -> ResolvedTarget:
        """The catalogue items this target covers and the profile interest tags that measure affinity to it.

        Raises:
            ConfigError: the catalogue lacks item_id/category/brand, or no item matches the target
                (the message suggests close names).
        """
        missing = [c for c in _KINDS if c not in items.column_names]
        if missing:
            raise ConfigError(f"items: missing column(s) {missing}; pass the table scan_items() returns")
        ids = pc.cast(items.column("item_id"), pa.string()).combine_chunks()
        brands = pc.utf8_trim_whitespace(pc.cast(items.column("brand"), pa.string()).combine_chunks())
        paths = _paths(items)
        wanted = self.value.strip().lower()
        if self.kind == "item_id":
            matched, names = _true(pc.equal(ids, self.value)), ids
        elif self.kind == "brand":
            matched, names = _true(pc.equal(pc.utf8_lower(brands), wanted)), brands
        else:
            names = pc.list_flatten(paths)
            hits = _true(pc.equal(pc.utf8_lower(names), wanted))
            matched = np.bincount(pc.list_parent_indices(paths).to_numpy()[hits], minlength=len(ids)) > 0
        if not matched.any():
            raise ConfigError(f"unknown target {self}: no catalogue item matches it{_hint(self.value, names)}")
        keep = pa.array(matched)
        brand_tags = set() if self.kind == "category" else set(pc.unique(brands.filter(keep)).to_pylist())
        return ResolvedTarget(
            item_ids=ids.filter(keep),
            category_tags=self._category_tags(paths.filter(keep), wanted),
            brand_tags=frozenset(f"brand:{brand.lower()}" for brand in brand_tags if brand),
        )

    def _category_tags(self, paths: pa.ListArray, wanted: str) -> frozenset[str]:
        """Lower-case ``category:`` profile tags of the target: the path up to the matching level (an item: its path).

        Loops over distinct paths of the matched items (a catalogue has few), never over rows.
        """
        if self.kind == "brand":
            return frozenset()
        tags: set[str] = set()
        for joined in pc.unique(pc.binary_join(paths, "\x1f")).to_pylist():
            levels = [level.lower() for level in (joined or "").split("\x1f") if level]
            depths = [len(levels)] if self.kind == "item_id" else [d + 1 for d, lv in enumerate(levels) if lv == wanted]
            tags.update("category:" + "/".join(levels[:depth]) for depth in depths if depth)
        return frozenset(tags)


@dataclass(frozen=True)
class ResolvedTarget:
    """A target against one catalogue: its item ids and the lower-case interest tags of its category and brand."""

    item_ids: pa.Array
    category_tags: frozenset[str]
    brand_tags: frozenset[str]


class PropensityConfig(BaseModel):
    """Label horizon, activity windows, LightGBM settings and the fallback's prior."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon_days: float = Field(30.0, gt=0, description="predict a target purchase within this many days")
    windows_days: tuple[int, ...] = Field((7, 30, 90), min_length=1, description="activity count windows")
    view_types: tuple[str, ...] = ("view", "click")
    cart_types: tuple[str, ...] = ("cart",)
    min_positives: int = Field(20, ge=2, description="fewer buyers (or non-buyers) to learn from: the fallback")
    valid_share: float = Field(0.2, gt=0, lt=1, description="customers held out for early stopping and AUC")
    num_leaves: int = Field(7, ge=2)
    learning_rate: float = Field(0.05, gt=0, le=1)
    max_trees: int = Field(300, ge=1)
    min_child_samples: int = Field(10, ge=1)
    early_stopping: int = Field(30, ge=1, description="rounds without held-out log-loss improvement")
    prior_days: float = Field(30.0, gt=0, description="fallback: pseudo-days of the shop-wide rate in each rate")
    seed: int = 0
    profile: ProfileConfig = Field(default_factory=ProfileConfig)


@dataclass(frozen=True)
class PropensityReport:
    """How the model was trained: method, customers and positives in the label window, held-out AUC."""

    method: Literal["lightgbm", "smoothed_rate"]
    customers: int
    positives: int
    valid_auc: float
    trees: int
    note: str


@dataclass(frozen=True)
class PropensityScores:
    """One row per customer with history before ``as_of``, in profile row order.

    ``table``: ``user_id``, ``score``, ``main_reason`` and the target features (activity counts per
    window, ``target_last_interaction_days``, ``target_last_purchase_days``, null without any,
    ``interest_category``, ``interest_brand``).
    """

    table: pa.Table
    target: Target
    as_of: datetime
    horizon_days: float
    report: PropensityReport


class PropensityModel:
    """P(customer buys the target within ``horizon_days``) from profile and target-activity features.

    LightGBM stops early on held-out customers' log-loss; with fewer than ``min_positives`` buyers it
    is not trained and a shrunk per-customer purchase rate ranks customers instead (report says so).
    """

    def __init__(self, config: PropensityConfig | None = None) -> None:
        self.config = config or PropensityConfig()

    def fit(self, events: pa.Table, items: pa.Table, target: Target, as_of: datetime) -> PropensityModel:
        """Learn from features at ``as_of - horizon_days`` and target purchases in ``[that cut, as_of)``.

        Raises:
            ConfigError: unknown target, or no history before the cut.
        """
        cfg = self.config
        resolved = target.resolve(items)
        cut = as_of - timedelta(days=cfg.horizon_days)
        if as_of_micros(cut) <= int(event_micros(events).min(initial=np.iinfo(np.int64).max)):
            raise ConfigError(
                f"as_of {as_of.isoformat()} minus horizon_days {cfg.horizon_days:g} is at or before the first "
                "event: no history to learn from; use a later as_of or a shorter horizon"
            )
        profiles = build_profiles(events, items, cut, cfg.profile)
        features = _target_features(events, profiles, resolved, cut, cfg)
        names = (*_numeric(profiles), *features)
        labels = _bought(events, profiles, resolved, cut, as_of, cfg.profile.purchase_types)
        positives, negatives = int(labels.sum()), int((~labels).sum())
        classifier: lgb.LGBMClassifier | None = None
        if min(positives, negatives) < cfg.min_positives:
            report = PropensityReport(
                "smoothed_rate",
                len(labels),
                positives,
                float("nan"),
                0,
                f"{positives} buyers and {negatives} non-buyers of {target} in the {cfg.horizon_days:g} days "
                f"before as_of: too few (< {cfg.min_positives}) to train; scores are each customer's target "
                f"purchase rate shrunk to the shop-wide rate, a ranking rather than a calibrated probability",
            )
        else:
            classifier, report = self._train(_matrix(profiles, features, names), labels)
        self.target_, self.resolved_, self.feature_names_ = target, resolved, names
        self.classifier_, self.report_ = classifier, report
        return self

    def _train(self, x: Floats, labels: Mask) -> tuple[lgb.LGBMClassifier, PropensityReport]:
        cfg = self.config
        train, valid = train_test_split(
            np.arange(len(labels)), test_size=cfg.valid_share, stratify=labels, random_state=cfg.seed
        )
        classifier = lgb.LGBMClassifier(
            n_estimators=cfg.max_trees,
            learning_rate=cfg.learning_rate,
            num_leaves=cfg.num_leaves,
            min_child_samples=cfg.min_child_samples,
            random_state=cfg.seed,
            n_jobs=1,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )
        classifier.fit(
            x[train],
            labels[train],
            eval_set=[(x[valid], labels[valid])],
            callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)],
        )
        auc = float(roc_auc_score(labels[valid], _proba(classifier, x[valid])))
        trees = int(classifier.best_iteration_ or cfg.max_trees)
        note = f"LightGBM, {trees} trees; AUC {auc:.3f} on {len(valid)} held-out customers"
        return classifier, PropensityReport("lightgbm", len(labels), int(labels.sum()), auc, trees, note)

    def score(
        self, events: pa.Table, items: pa.Table, as_of: datetime, profiles: pa.Table | None = None
    ) -> PropensityScores:
        """Score every customer with history before ``as_of`` from features at ``as_of`` (later events unread).

        Args:
            events, items: as ``scan_events()`` / ``scan_items()`` return them.
            as_of: the time the audience is built for.
            profiles: ``build_profiles(events, items, as_of, config.profile)`` if already built.

        Raises:
            NotFitted: ``fit`` was not called.
            ConfigError: ``profiles`` were built for another time.
        """
        if not hasattr(self, "report_"):
            raise NotFitted("PropensityModel is not fitted: call fit() before score()")
        cfg = self.config
        if profiles is None:
            profiles = build_profiles(events, items, as_of, cfg.profile)
        elif profiles.num_rows and pc.cast(profiles.column("as_of"), pa.int64())[0].as_py() != as_of_micros(as_of):
            raise ConfigError(f"profiles were built for {profiles.column('as_of')[0]}, not as_of {as_of.isoformat()}")
        features = _target_features(events, profiles, self.resolved_, as_of, cfg)
        if self.classifier_ is None:
            scores, reasons = _smoothed_rate(features, _column(profiles, "tenure_days"), cfg)
        else:
            x = _matrix(profiles, features, self.feature_names_)
            scores, reasons = _proba(self.classifier_, x), _reasons(self.classifier_, x, self.feature_names_)
        known = {name: pa.array(values, mask=np.isnan(values)) for name, values in features.items()}  # NaN: null
        columns = {"user_id": profiles.column("user_id"), "score": scores, "main_reason": reasons, **known}
        return PropensityScores(pa.table(columns), self.target_, as_of, cfg.horizon_days, self.report_)


class AudienceSpec(BaseModel):
    """How many to contact and whom to leave out; neither ``top_n`` nor ``min_score``: every eligible customer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    top_n: int | None = Field(None, ge=1)
    min_score: float | None = Field(None, ge=0, le=1)
    exclude_bought_within_days: float | None = Field(None, gt=0, description="recent buyers need no offer")


@dataclass(frozen=True)
class Audience:
    """The chosen customers (``table``: user_id, score, rank, reasons) and how many each step removed."""

    table: pa.Table
    scores: PropensityScores
    funnel: dict[str, int]

    def describe(self) -> str:
        """A few lines for a person: target, size, what each step removed and how trustworthy the scores are."""
        report = self.scores.report
        lines = [f"Audience for {self.scores.target} as of {self.scores.as_of.isoformat()}: {self.table.num_rows}"]
        lines += [f"  {step}: {count}" for step, count in self.funnel.items()]
        if self.table.num_rows and report.method == "lightgbm":
            total = float(pc.sum(self.table.column("score")).as_py())
            lines.append(f"  expected buyers in {self.scores.horizon_days:g} days: {total:.1f}")
        lines.append(f"  model: {report.note} ({report.positives} buyers among {report.customers} customers)")
        return "\n".join(lines)


def build_audience(
    scores: PropensityScores,
    spec: AudienceSpec | None = None,
    *,
    segment: str | Mask | None = None,
    profiles: pa.Table | None = None,
    contacted: Iterable[str] = (),
) -> Audience:
    """Rank scored customers and keep those a campaign should contact.

    Steps, in order (each counted in ``funnel``): the segment, recent target buyers, already contacted
    ids, ``min_score``, then the ``top_n`` highest scores (ties by profile row order).

    Args:
        scores: ``PropensityModel.score`` output.
        spec: size and exclusions.
        segment: a boolean mask aligned with ``scores.table`` rows, or an expression over ``profiles``.
        profiles: the profiles an expression is evaluated on (matched to scores by user_id).
        contacted: user ids to leave out.

    Raises:
        ConfigError: a mask of the wrong shape, an expression without profiles, or a bad expression.
    """
    spec = spec or AudienceSpec()
    table = scores.table
    keep = np.ones(table.num_rows, dtype=bool)
    funnel = {"scored": table.num_rows}

    def step(name: str, allowed: Mask) -> None:
        nonlocal keep
        funnel[name] = int((keep & ~allowed).sum())
        keep &= allowed

    if segment is not None:
        step("outside the segment", _segment_mask(table, segment, profiles))
    if spec.exclude_bought_within_days is not None:
        days = spec.exclude_bought_within_days
        step(f"bought the target within {days:g} days", ~(_column(table, "target_last_purchase_days") <= days))
    contacted_ids = pa.array(sorted(set(contacted)), pa.string())
    if len(contacted_ids):
        step("already contacted", ~_true(pc.is_in(table.column("user_id"), value_set=contacted_ids)))
    score = _column(table, "score")
    if spec.min_score is not None:
        step(f"score below {spec.min_score:g}", score >= spec.min_score)
    order = np.argsort(-score, kind="stable")
    chosen = order[keep[order]]
    if spec.top_n is not None:
        funnel[f"beyond the top {spec.top_n}"] = max(0, len(chosen) - spec.top_n)
        chosen = chosen[: spec.top_n]
    funnel["selected"] = len(chosen)
    picked = table.take(pa.array(chosen, pa.int64())).append_column("rank", pa.array(np.arange(1, len(chosen) + 1)))
    return Audience(picked.select(list(_AUDIENCE_COLUMNS)), scores, funnel)


def lookalike(
    profiles: pa.Table, seed_user_ids: Iterable[str], n: int, features: Iterable[str] | None = None
) -> pa.Table:
    """The ``n`` customers most like a seed audience (seeds excluded), for reaching beyond known buyers.

    Each customer is a vector of two equally weighted unit blocks: standardised numeric profile
    features (unknown values at the mean) and tf-idf weighted interest tags, so a rare shared taste
    counts more than a common one. Similarity is the dot product with the seeds' normalised centroid
    (the cosine for customers with both blocks; one without interests scores lower). Ties keep
    profile row order, so equal inputs give equal audiences.

    Args:
        profiles: ``build_profiles`` output.
        seed_user_ids: the audience to grow; ids without a profile are skipped (logged).
        n: how many to return (fewer when fewer non-seed customers exist).
        features: numeric profile columns and/or ``"interests"``; all of them when None.

    Returns:
        Table ``user_id``, ``similarity``, ``rank`` (1 = most similar).

    Raises:
        ConfigError: ``n`` < 1, an unknown or non-numeric feature, or no seed has a profile.
    """
    if n < 1:
        raise ConfigError(f"lookalike n must be at least 1, got {n}")
    numeric, interests = _lookalike_features(profiles, features)
    asked = sorted(set(seed_user_ids))
    seeds = _true(pc.is_in(profiles.column("user_id"), value_set=pa.array(asked, pa.string())))
    if not seeds.any():
        raise ConfigError(f"none of the {len(asked)} seed user ids has a profile")
    if len(asked) > seeds.sum():
        log.warning("lookalike: %d of %d seed user ids have no profile", len(asked) - seeds.sum(), len(asked))
    raw = np.column_stack([_column(profiles, name) for name in numeric]) if numeric else np.empty((len(seeds), 0))
    raw = raw[:, ~np.isnan(raw).all(axis=0)]  # a column nobody has a value in (CLV not fitted) says nothing
    blocks = [sp.csr_matrix(normalize(np.nan_to_num(StandardScaler().fit_transform(raw))))] if raw.shape[1] else []
    blocks += [_interest_matrix(profiles)] if interests and len(_flat_interests(profiles)[1]) else []  # tags known
    if not blocks:
        raise ConfigError(f"no lookalike feature of {numeric} has a known value")
    vectors = sp.hstack(blocks).tocsr() / np.sqrt(len(blocks))
    centroid = np.asarray(vectors[seeds].mean(axis=0)).ravel()
    similarity = vectors @ (centroid / max(float(np.linalg.norm(centroid)), 1e-12))
    candidates = np.flatnonzero(~seeds)
    chosen = candidates[np.argsort(-similarity[candidates], kind="stable")][:n]
    return pa.table(
        {
            "user_id": profiles.column("user_id").take(pa.array(chosen, pa.int64())),
            "similarity": similarity[chosen],
            "rank": np.arange(1, len(chosen) + 1),
        }
    )


def export_audience(table: pa.Table, path: str | Path) -> Path:
    """Write an audience as CSV or Parquet (by suffix), atomically: a reader sees the old file or the new one.

    In a CSV, text cells starting like a formula get a leading ``'`` (:func:`shopsense.csv_safety.neutralise`).

    Raises:
        ConfigError: another suffix, a missing folder, or nested columns for CSV.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ConfigError(f"{target}: audiences are exported as .csv or .parquet, not {suffix or 'no suffix'!r}")
    if not target.parent.is_dir():
        raise ConfigError(f"{target}: folder {target.parent} does not exist")
    nested = [f.name for f in table.schema if pa.types.is_nested(f.type)]
    if suffix == ".csv" and nested:
        raise ConfigError(f"{target}: CSV cannot hold nested column(s) {nested}; drop them or use .parquet")
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        if suffix == ".csv":
            pacsv.write_csv(neutralise_table(table), temporary)
        else:
            pq.write_table(table, temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def _target_features(
    events: pa.Table, profiles: pa.Table, target: ResolvedTarget, as_of: datetime, config: PropensityConfig
) -> dict[str, Floats]:
    """Per profile row: target views/carts/purchases per window, days since the last touch and purchase, interest."""
    history = history_before(events, as_of)
    history = history.filter(pc.is_in(pc.cast(history.column("item_id"), pa.string()), value_set=target.item_ids))
    rows, found = _profile_rows(profiles, history.column("user_id"))
    rows = rows[found]
    age = ((as_of_micros(as_of) - event_micros(history)) / DAY_US)[found]
    n = profiles.num_rows
    signals = {"views": config.view_types, "carts": config.cart_types, "purchases": config.profile.purchase_types}
    out: dict[str, Floats] = {}
    for signal, types in signals.items():
        flags = type_flags(history, types)[found]
        for window in config.windows_days:
            hit = flags & (age < window)
            out[f"target_{signal}_{window}d"] = np.bincount(rows[hit], minlength=n).astype(float)
    bought = type_flags(history, config.profile.purchase_types)[found]
    out["target_last_interaction_days"] = _latest(rows, age, n)
    out["target_last_purchase_days"] = _latest(rows[bought], age[bought], n)
    out["interest_category"] = _interest(profiles, target.category_tags)
    out["interest_brand"] = _interest(profiles, target.brand_tags)
    return out


def _bought(
    events: pa.Table, profiles: pa.Table, target: ResolvedTarget, start: datetime, end: datetime, types: tuple[str, ...]
) -> Mask:
    """Which profile rows bought a target item in ``[start, end)``: the label, read only from that window."""
    micros = event_micros(events)
    window = (micros >= as_of_micros(start)) & (micros < as_of_micros(end)) & type_flags(events, types)
    window &= _true(pc.is_in(pc.cast(events.column("item_id"), pa.string()), value_set=target.item_ids))
    rows, found = _profile_rows(profiles, events.filter(pa.array(window)).column("user_id"))
    labels = np.zeros(profiles.num_rows, dtype=bool)
    labels[rows[found]] = True
    return labels


def _smoothed_rate(features: dict[str, Floats], tenure_days: Floats, config: PropensityConfig) -> tuple[Floats, Texts]:
    """Fallback: target purchases per day in the longest window, shrunk to the shop rate, as P(one in horizon)."""
    window = max(config.windows_days)
    bought = features[f"target_purchases_{window}d"]
    exposure = np.minimum(np.nan_to_num(tenure_days), window)
    shop_rate = bought.sum() / max(float(exposure.sum()), 1e-12)
    rate = (bought + shop_rate * config.prior_days) / (exposure + config.prior_days)
    reasons = np.where(bought > 0, f"purchases of the target in the last {window} days", "shop-wide rate")
    return 1.0 - np.exp(-rate * config.horizon_days), np.asarray(reasons, dtype=str)


def _reasons(classifier: lgb.LGBMClassifier, x: Floats, names: tuple[str, ...]) -> Texts:
    """The feature that raised each customer's score most (LightGBM's SHAP contributions), in words."""
    contributions = np.asarray(classifier.predict(x, pred_contrib=True), dtype=float)[:, : len(names)]
    phrases = np.array([_phrase(name) for name in names] + ["no single strong signal"], dtype=object)
    best = np.where(contributions.max(axis=1) > 0, contributions.argmax(axis=1), len(names))
    return np.asarray(phrases[best], dtype=str)


def _phrase(feature: str) -> str:
    """A feature name as a reason a marketer can read."""
    if feature in _PHRASES:
        return _PHRASES[feature]
    if feature.startswith("target_"):
        signal, window = feature.removeprefix("target_").rsplit("_", 1)
        return f"{signal} of the target in the last {window.removesuffix('d')} days"
    return f"profile: {feature}"


def _segment_mask(table: pa.Table, segment: str | Mask, profiles: pa.Table | None) -> Mask:
    """The segment as a mask over the score rows; an expression is evaluated on profiles, matched by user id."""
    if isinstance(segment, str):
        if profiles is None:
            raise ConfigError("a segment expression needs the profiles it is evaluated on (profiles=...)")
        mask = evaluate_segments(profiles, [Segment("audience", segment)])["audience"]
        rows, found = _profile_rows(profiles, table.column("user_id"))
        return found & mask[rows]
    mask = np.asarray(segment)
    if mask.dtype != np.bool_ or mask.shape != (table.num_rows,):
        raise ConfigError(
            f"segment mask is {mask.dtype} {mask.shape}; expected bool ({table.num_rows},), one per score"
        )
    return mask


def _lookalike_features(profiles: pa.Table, features: Iterable[str] | None) -> tuple[list[str], bool]:
    """The numeric columns and whether interests take part; unknown or non-numeric names are refused."""
    numeric = _numeric(profiles)
    has_interests = "interests" in profiles.column_names
    if features is None:
        return numeric, has_interests
    chosen = list(features)
    for name in chosen:
        if name not in numeric and not (name == "interests" and has_interests):
            known = [*numeric, *(["interests"] if has_interests else [])]
            raise ConfigError(
                f"lookalike feature {name!r} is not a numeric profile column{_hint(name, pa.array(known))}"
            )
    if not chosen:
        raise ConfigError("lookalike features is empty: name numeric profile columns or 'interests', or pass None")
    return [name for name in chosen if name != "interests"], "interests" in chosen


def _interest_matrix(profiles: pa.Table) -> sp.csr_matrix:
    """Customers x interest tags, tf-idf weighted and L2 normalised (sklearn's smooth idf)."""
    rows, tags, weights = _flat_interests(profiles)
    codes = pc.dictionary_encode(tags)
    matrix = sp.csr_matrix((weights, (rows, codes.indices)), shape=(profiles.num_rows, len(codes.dictionary)))
    return TfidfTransformer().fit_transform(matrix)


def _interest(profiles: pa.Table, tags: frozenset[str]) -> Floats:
    """Each customer's decayed interest weight summed over the given (lower-case) tags."""
    rows, names, weights = _flat_interests(profiles)
    hit = _true(pc.is_in(pc.utf8_lower(names), value_set=pa.array(sorted(tags), pa.string())))
    return np.bincount(rows[hit], weights=weights[hit], minlength=profiles.num_rows).astype(float)


def _flat_interests(profiles: pa.Table) -> tuple[npt.NDArray[np.int64], pa.Array, Floats]:
    """Every (profile row, interest tag, weight) of the ``interests`` lists, flattened without a Python loop."""
    lists = profiles.column("interests").combine_chunks()
    flat = pc.list_flatten(lists)
    weights = np.asarray(flat.field("weight").to_numpy(zero_copy_only=False), dtype=float)
    return pc.list_parent_indices(lists).to_numpy().astype(np.int64), flat.field("tag"), weights


def _paths(items: pa.Table) -> pa.ListArray:
    """Each item's category path as trimmed levels; a path given as text ("Home > Kitchen") is split on ">"."""
    category = items.column("category").combine_chunks()
    if pa.types.is_string(category.type) or pa.types.is_large_string(category.type):
        category = pc.split_pattern(category, ">")
    levels = pc.utf8_trim_whitespace(pc.cast(pc.list_flatten(category), pa.string()))
    sizes = np.bincount(pc.list_parent_indices(category).to_numpy(), minlength=len(category))
    return pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(sizes)]), pa.int32()), levels)


def _hint(value: str, names: pa.Array) -> str:
    """The closest known names (case-insensitive) as a did-you-mean suffix for an error, or nothing."""
    known = {name.lower(): name for name in pc.unique(names).to_pylist() if name}
    close = difflib.get_close_matches(value.strip().lower(), list(known), n=3)
    return f"; did you mean {', '.join(repr(known[c]) for c in close)}?" if close else ""


def _matrix(profiles: pa.Table, target: dict[str, Floats], names: tuple[str, ...]) -> Floats:
    """Features in the fitted order; a profile column absent now (a channel never seen) is unknown."""
    missing = np.full(profiles.num_rows, np.nan)
    columns = [
        target[name] if name in target else _column(profiles, name) if name in profiles.column_names else missing
        for name in names
    ]
    return np.column_stack(columns)


def _numeric(profiles: pa.Table) -> list[str]:
    return [f.name for f in profiles.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]


def _profile_rows(profiles: pa.Table, user_ids: pa.ChunkedArray) -> tuple[npt.NDArray[np.int64], Mask]:
    """Profile row of each user id, and whether it has one."""
    users = profiles.column("user_id").to_numpy(zero_copy_only=False).astype(str)
    order = np.argsort(users)
    at, found = locate(users[order], user_ids.to_numpy(zero_copy_only=False).astype(str))
    return np.asarray(order[at], dtype=np.int64), found


def _latest(rows: npt.NDArray[np.int64], age: Floats, n: int) -> Floats:
    """Smallest age per row (days since the latest event), NaN where a row has none."""
    latest = np.full(n, np.inf)
    np.minimum.at(latest, rows, age)
    latest[np.isinf(latest)] = np.nan
    return latest


def _proba(classifier: lgb.LGBMClassifier, x: Floats) -> Floats:
    return np.asarray(classifier.predict_proba(x), dtype=float)[:, 1]


def _column(table: pa.Table, name: str) -> Floats:
    """A numeric column as float64, nulls as NaN."""
    values = pc.fill_null(pc.cast(table.column(name), pa.float64()), np.nan)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=float)


def _true(values: pa.Array | pa.ChunkedArray) -> Mask:
    """A boolean Arrow array as numpy, null as False."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)
