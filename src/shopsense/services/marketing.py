"""MarketingService: profiles, segments and clusters over the store, for the CLI and the API.

Profiles are a batch job at an explicit ``as_of`` whose result is stored; every marketing
question after that reads the stored profiles (marketing never recomputes features). Guests
(the store's users flagged ``guest``: anonymous baskets) are left out: they are not customers
one can address, and they would crowd the bottom RFM quintile.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopsense.domain import checked_id
from shopsense.errors import ConfigError, NotFound, ShopsenseError
from shopsense.features.profiles import (
    CHURN_ERROR_KEY,
    CHURN_MODEL_KEY,
    CLV_ERROR_KEY,
    ProfileConfig,
    build_profiles,
)
from shopsense.marketing.audiences import (
    Audience,
    AudienceSpec,
    PropensityConfig,
    PropensityModel,
    Target,
    build_audience,
    export_audience,
    lookalike,
)
from shopsense.marketing.campaigns import CampaignConfig, CampaignReadout, assign_campaign, campaign_readout
from shopsense.marketing.clustering import ClusterConfig, Clustering, cluster_customers
from shopsense.marketing.segments import Segment, evaluate_segments, overlaps, rfm_segments, segment_stats
from shopsense.settings import Settings
from shopsense.store.base import Store


@dataclass(frozen=True)
class SegmentReport:
    """Sizes, revenue shares and pairwise overlaps of some segments, with their member masks."""

    stats: pa.Table
    overlaps: pa.Table
    masks: dict[str, np.ndarray]
    user_ids: np.ndarray

    def members(self, name: str) -> list[str]:
        return [str(u) for u in self.user_ids[self.masks[name]]]

    def membership(self) -> pa.Table:
        """(user_id, segment) rows, one per membership, segment by segment."""
        names = list(self.masks)
        users = [self.user_ids[self.masks[n]] for n in names]
        return pa.table(
            {
                "user_id": pa.array(np.concatenate(users) if users else [], pa.string()),
                "segment": pa.array([n for n, u in zip(names, users, strict=True) for _ in range(len(u))], pa.string()),
            }
        )


class MarketingService:
    """Marketing questions answered from one store."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def build_profiles(self, as_of: datetime | None = None, config: ProfileConfig | None = None) -> pa.Table:
        """Compute every customer's profile at ``as_of`` (default: just after the newest event) and store it."""
        events = self._customer_events()
        if as_of is None:
            as_of = pc.max(events.column("timestamp")).as_py() + timedelta(seconds=1)
        elif as_of.tzinfo is None:
            raise ConfigError("as_of needs a time zone, e.g. 2011-12-10T00:00:00Z")
        events = events.filter(pc.less(events.column("timestamp"), pa.scalar(as_of.astimezone(UTC), _TS)))
        profiles = build_profiles(events, self.store.scan_items(), as_of.astimezone(UTC), config or ProfileConfig())
        self.store.save_profiles(profiles)
        return profiles

    @staticmethod
    def profiles_summary(profiles: pa.Table) -> dict[str, Any]:
        """What a profile build tells its caller: customers, lifecycle counts, the churn model's horizon and
        held-out AUC, and why churn or CLV is missing when the history could not support them."""
        lifecycle = profiles.group_by("lifecycle").aggregate([("user_id", "count")]).to_pylist()
        notes = {k.decode(): v.decode() for k, v in (profiles.schema.metadata or {}).items()}
        return {
            "customers": profiles.num_rows,
            "lifecycle": {r["lifecycle"]: r["user_id_count"] for r in lifecycle},
            "churn": json.loads(notes[CHURN_MODEL_KEY]) if CHURN_MODEL_KEY in notes else None,
            "churn_error": notes.get(CHURN_ERROR_KEY),
            "clv_error": notes.get(CLV_ERROR_KEY),
        }

    def profiles(self) -> pa.Table:
        """The stored profiles (``shopsense profiles build`` makes them)."""
        profiles = self.store.load_profiles()
        if profiles is None:
            raise ConfigError("no customer profiles yet: run `shopsense profiles build` first")
        return profiles

    def profile(self, user_id: str) -> dict[str, Any] | None:
        """One customer's stored profile as a JSON-ready dict, or None."""
        profiles = self.profiles()
        row = profiles.filter(pc.equal(profiles.column("user_id"), user_id))
        if row.num_rows == 0:
            return None
        record: dict[str, Any] = row.to_pylist()[0]
        return {k: (None if isinstance(v, float) and v != v else v) for k, v in record.items()}

    def segments(self, definitions: dict[str, str]) -> SegmentReport:
        """Evaluate named rule segments (expression language) over the stored profiles."""
        if not definitions:
            raise ConfigError("give at least one segment: NAME=EXPRESSION")
        profiles = self.profiles()
        masks = evaluate_segments(profiles, [Segment(name, text) for name, text in definitions.items()])
        return self._report(profiles, masks)

    def rfm(self) -> SegmentReport:
        """The named RFM segments (Champions, Loyal customers, At risk, ...)."""
        profiles = self.profiles()
        return self._report(profiles, rfm_segments(profiles))

    def save_segment(self, name: str, expression: str) -> Segment:
        """Save (or replace) a named segment, once its expression is found valid over the stored profiles."""
        try:
            name = checked_id(name.strip())
        except ValueError as exc:
            raise ConfigError(f"segment name {name!r}: {exc}") from exc
        if len(name) > 256:
            raise ConfigError(f"segment name is {len(name)} characters long; the limit is 256")
        segment = Segment(name, expression)
        evaluate_segments(self.profiles().schema.empty_table(), [segment])
        self.store.save_segment(segment.name, segment.expression)
        return segment

    def delete_segment(self, name: str) -> None:
        """Forget a saved segment (none of that name: nothing to do)."""
        self.store.save_segment(name, None)

    def saved_segments(self) -> dict[str, str]:
        """The saved segments' expressions by name, oldest first."""
        return self.store.saved_segments()

    @staticmethod
    def export_members(report: SegmentReport, path: Path) -> Path:
        """Write (user_id, segment) rows, one per membership, to CSV or Parquet (atomically)."""
        return export_audience(report.membership(), path)

    def clusters(self, config: ClusterConfig | None = None) -> Clustering:
        """k-means on standardised profile features, with a readable description per cluster."""
        return cluster_customers(self.profiles(), config)

    # -- audiences ----------------------------------------------------------------------------

    def audience(
        self,
        target: Target,
        spec: AudienceSpec,
        *,
        segment: str | None = None,
        contacted: list[str] | None = None,
        horizon_days: float = 30.0,
        progress: Callable[[float, str], None] = lambda fraction, stage: None,
    ) -> Audience:
        """Customers ranked by P(buying the target within the horizon), learnt without leakage on the
        store's history, then cut by top-N / threshold, segment and exclusions. ``progress`` hears of each
        stage (a job reports them: the fit alone takes seconds per million events)."""
        progress(0.0, "reading events")
        events, items = self._customer_events(), self.store.scan_items()
        as_of = pc.max(events.column("timestamp")).as_py() + timedelta(seconds=1)
        progress(0.2, "fitting the propensity model")
        model = PropensityModel(PropensityConfig(horizon_days=horizon_days)).fit(events, items, target, as_of)
        progress(0.7, "scoring customers")
        scores = model.score(events, items, as_of)
        progress(0.9, "cutting the audience")
        profiles = self.store.load_profiles() if segment is not None else None
        return build_audience(scores, spec, segment=segment, profiles=profiles, contacted=contacted or ())

    def check_target(self, target: Target) -> None:
        """Refuse a target no catalogue item matches (with the nearest names) before any long work starts:
        a bad request is the request's error, not a failed job."""
        target.resolve(self.store.scan_items())

    def lookalike(self, seeds: list[str], n: int) -> pa.Table:
        """The ``n`` customers most like the seed customers (the seeds themselves left out)."""
        return lookalike(self.profiles(), seeds, n)

    def _customer_events(self) -> pa.Table:
        events = self.store.scan_events()
        if events.num_rows == 0:
            raise ShopsenseError("the store has no events: import some first")
        guests = self.store.guest_user_ids()
        if guests:
            events = events.filter(pc.invert(pc.is_in(events.column("user_id"), pa.array(guests, pa.string()))))
        return events

    # -- campaigns ----------------------------------------------------------------------------

    def save_campaign(self, config: CampaignConfig) -> CampaignConfig:
        """Create or replace a campaign definition (its assignments, if any, are kept)."""
        self.store.save_campaign(config.name, config.model_dump_json())
        return config

    def campaign(self, name: str) -> CampaignConfig:
        stored = self.store.campaigns()
        if name not in stored:
            known = ", ".join(sorted(stored)) or "none yet"
            raise NotFound(f"no campaign {name!r} (known: {known}); create it with `shopsense campaign create`")
        return CampaignConfig.parse(json.loads(stored[name]), f"stored campaign {name!r}")

    def campaign_names(self) -> list[str]:
        """Every stored campaign's name, oldest first."""
        return list(self.store.campaigns())

    def assigned(self, name: str) -> dict[str, int]:
        """A campaign's assigned users per variant (variants nobody is in are left out)."""
        counts = self.store.assignments(name).group_by("variant").aggregate([("user_id", "count")]).to_pylist()
        return {r["variant"]: r["user_id_count"] for r in counts}

    def assign(self, name: str, user_ids: list[str] | None = None, segment: str | None = None) -> dict[str, int]:
        """Assign an audience (ids, or the customers a segment expression selects) to the campaign's variants.
        Users assigned before keep their variant; returns the campaign's users per variant."""
        config = self.campaign(name)
        if (user_ids is None) == (segment is None):
            raise ConfigError("give either user ids or a segment expression as the audience")
        if segment is not None:
            user_ids = self.segments({"audience": segment}).members("audience")
        previous = self.store.assignments(name)
        rows = assign_campaign(config, user_ids or [], previous=previous)
        self.store.add_assignments(name, rows)
        return self.assigned(name)

    def readout(self, name: str, as_of: datetime | None = None) -> CampaignReadout:
        """The experiment read-out from stored assignments and events (attribution window applied)."""
        config = self.campaign(name)
        assignments = self.store.assignments(name)
        if assignments.num_rows == 0:
            raise ConfigError(f"campaign {name!r} has no assigned users yet: run `shopsense campaign assign`")
        events = self.store.scan_events(start=config.start.isoformat())
        when = as_of or datetime.now(UTC)
        return campaign_readout(config, assignments, events, as_of=when, items=self.store.scan_items())

    def treated(self, name: str) -> list[str]:
        """The users a campaign contacts: everyone assigned to a treatment arm (never the hold-out)."""
        config = self.campaign(name)
        rows = self.store.assignments(name)
        treated = rows.filter(pc.not_equal(rows.column("variant"), config.control))
        return [str(u) for u in treated.column("user_id").to_pylist()]

    @staticmethod
    def _report(profiles: pa.Table, masks: dict[str, np.ndarray]) -> SegmentReport:
        users = profiles.column("user_id").to_numpy(zero_copy_only=False)
        return SegmentReport(segment_stats(profiles, masks), overlaps(masks), dict(masks), users)


_TS = pa.timestamp("us", tz="UTC")
