"""Campaigns run as experiments: define the split, assign users, attribute what they did, read the result out.

A campaign is a treatment (a coupon, an e-mail with recommendations) sent on one channel between
``start`` and ``end`` to every assigned user except a random hold-out. Its effect is whatever the
treated arms did beyond the hold-out, so every number here is intention to treat: outcomes are
counted for all *assigned* users, contacted or not, over the same measurement window
``[start, min(end + attribution window, as_of))``. The window runs past ``end`` because a coupon
sent on the last day is redeemed after it; it stops at ``as_of`` so a read-out never sees the future.

Attribution is one DuckDB query over the store's event table (an in-memory connection, no per-user
Python): purchases minus returns of the target give revenue, distinct purchase sessions (or days,
when the session is unknown) give orders, and clicks count only for contacted users, either tagged
with ``context.campaign`` or, untagged, on the campaign's channel within the window after contact.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shopsense.domain import ID_PATTERN, UtcDatetime, checked_id
from shopsense.errors import ConfigError
from shopsense.marketing.assignment import UserIds, Variant, assign, validate_variants
from shopsense.marketing.experiments import Readout, VariantOutcomes, decision, proportion_effect, read_out
from shopsense.settings import explain_validation, read_toml

ASSIGNMENT_SCHEMA = pa.schema(
    [("user_id", pa.string()), ("variant", pa.string()), ("assigned_at", pa.timestamp("us", tz="UTC"))]
)
"""Columns of an assignment table; store it, and pass it back so assigned users keep their arm."""

PrimaryMetric = Literal["conversion", "revenue_per_user", "ctr"]
_EVENT_COLUMNS = {"channel": pa.string(), "session_id": pa.string(), "value": pa.float64(), "context": pa.string()}
"""Optional event columns and their types; ``user_id``, ``item_id``, ``type`` and ``timestamp`` are required."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariantSpec(_Strict):
    """One arm as configured: its share, whether it is the hold-out, and what it does."""

    name: str = Field(min_length=1)
    weight: float = Field(gt=0, le=1, description="share of the audience, e.g. 0.1; the weights sum to 1")
    is_control: bool = Field(False, description="the hold-out: assigned and measured, never contacted")
    treatment: str = Field("", description='what the arm gets, e.g. "10% coupon"; shown in read-outs')
    offer_cost: float = Field(0.0, ge=0, allow_inf_nan=False, description="cost per contacted converter")


class CampaignTarget(_Strict):
    """What a conversion must buy: given items, or any item of a category level or brand."""

    kind: Literal["item", "category", "brand"]
    values: tuple[str, ...] = Field(min_length=1)


class CampaignConfig(_Strict):
    """A campaign and the experiment that measures it; load it with ``parse`` or ``from_toml``."""

    name: Annotated[
        str, Field(min_length=1, max_length=256, json_schema_extra={"pattern": ID_PATTERN}), AfterValidator(checked_id)
    ]
    salt: str = Field(min_length=1, description="assignment salt; defaults to the name, change it to reshuffle")
    variants: tuple[VariantSpec, ...]
    channel: str = Field(min_length=1, description="where the treatment is sent (email, sms, push...)")
    start: UtcDatetime
    end: UtcDatetime
    attribution_days: float = Field(7.0, gt=0, allow_inf_nan=False, description="measured this long after end")
    primary_metric: PrimaryMetric = "conversion"
    cost_per_contact: float = Field(0.0, ge=0, allow_inf_nan=False)
    target: CampaignTarget | None = Field(None, description="only purchases of the target convert; None: any")
    click_types: tuple[str, ...] = ("click", "view")
    purchase_types: tuple[str, ...] = ("purchase",)
    return_types: tuple[str, ...] = ("return",)

    @model_validator(mode="before")
    @classmethod
    def _salt_defaults_to_name(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("salt") is None:
            name = data.get("name")  # as the name will be stored: "café" composed or not salts alike
            return {**data, "salt": unicodedata.normalize("NFC", name) if isinstance(name, str) else name}
        return data

    @field_validator("channel")
    @classmethod
    def _lower_channel(cls, value: str) -> str:
        return value.strip().lower()

    @model_validator(mode="after")
    def _valid_experiment(self) -> CampaignConfig:
        try:
            validate_variants(self.split)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        if self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        return self

    @classmethod
    def parse(cls, values: Mapping[str, Any], source: str = "campaign config") -> CampaignConfig:
        """Validate plain values (a parsed TOML or JSON body), turning every problem into one ConfigError."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(f"invalid {source}:\n{explain_validation(exc)}") from exc

    @classmethod
    def from_toml(cls, path: Path) -> CampaignConfig:
        """Read a campaign TOML file (``[[variants]]`` tables, times such as ``2024-05-01T00:00:00Z``)."""
        return cls.parse(read_toml(path, "campaign file"), source=f"campaign file {path}")

    @property
    def split(self) -> tuple[Variant, ...]:
        """The arms as ``assignment.Variant``s, in configured order."""
        return tuple(Variant(v.name, v.weight, v.is_control) for v in self.variants)

    @property
    def control(self) -> str:
        """Name of the hold-out arm."""
        return next(v.name for v in self.variants if v.is_control)

    @property
    def window(self) -> timedelta:
        """How long after contact (and after ``end``) behaviour still counts."""
        return timedelta(days=self.attribution_days)

    def measured_until(self, as_of: datetime) -> datetime:
        """End (exclusive) of the measurement window as known at ``as_of``."""
        if not isinstance(as_of, datetime) or as_of.utcoffset() is None:
            raise ConfigError(f"as_of must be a time-zone-aware datetime, got {as_of!r}")
        if as_of <= self.start:
            raise ConfigError(f"as_of {as_of.isoformat()} is not after the start of campaign {self.name!r}")
        return min(self.end + self.window, as_of)


def assign_campaign(
    config: CampaignConfig, user_ids: UserIds, *, previous: pa.Table | None = None, at: datetime | None = None
) -> pa.Table:
    """Assign an audience to the campaign's arms by the deterministic hash of ``assignment.assign``.

    Users in ``previous`` keep their arm even if the weights have changed since (a ramp-up must not
    move anyone already treated); only new users are hashed, and repeated ids are assigned once.

    Args:
        config: the campaign (salt and variants).
        user_ids: the audience, e.g. a segment's user ids.
        previous: an earlier assignment table (``ASSIGNMENT_SCHEMA``) of this campaign.
        at: time stamped on the new rows; defaults to now.

    Returns:
        ``previous``'s rows followed by one row per new user, in input order (``ASSIGNMENT_SCHEMA``).
    """
    stamp = at if at is not None else datetime.now(UTC)
    if stamp.utcoffset() is None:
        raise ConfigError(f"at must be a time-zone-aware datetime, got {stamp!r}")
    ids = _id_array(user_ids)
    kept = ASSIGNMENT_SCHEMA.empty_table() if previous is None else _checked_assignments(previous, config, "previous")
    new = pc.unique(ids.filter(pc.invert(pc.is_in(ids, value_set=kept.column("user_id").combine_chunks()))))
    arms = pa.array(assign(new, config.salt, config.split), pa.string())
    rows = pa.table(
        [new, arms, pa.repeat(pa.scalar(stamp, ASSIGNMENT_SCHEMA.field("assigned_at").type), len(new))],
        schema=ASSIGNMENT_SCHEMA,
    )
    return pa.concat_tables([kept, rows])


def _id_array(user_ids: UserIds) -> pa.Array:
    """The audience as one Arrow string array, refusing missing or non-text ids before anything is assigned."""
    ids = user_ids.combine_chunks() if isinstance(user_ids, pa.ChunkedArray) else user_ids
    if isinstance(ids, pa.Array):
        if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
            raise ConfigError(f"user ids must be strings, got an Arrow array of {ids.type}")
        text = pc.cast(ids, pa.string())
    else:
        try:
            text = pa.array(ids, pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ConfigError(f"user ids must be strings: {exc}") from exc
    if text.null_count:
        raise ConfigError(f"user_ids[{pc.index(pc.is_null(text), True).as_py()}] is missing; every user needs an id")
    return text


def attribute(
    config: CampaignConfig,
    assignments: pa.Table,
    events: pa.Table,
    exposures: pa.Table | None = None,
    *,
    as_of: datetime,
    items: pa.Table | None = None,
) -> list[VariantOutcomes]:
    """What every assigned user did in the measurement window, one ``VariantOutcomes`` per arm.

    Args:
        config: the campaign.
        assignments: ``assign_campaign``'s table.
        events: the store's ``scan_events()`` table (at least user_id, item_id, type, timestamp).
        exposures: who was actually contacted when (user_id, timestamp); None means every treated user
            was contacted at ``start``. Contacts outside ``[start, min(end, as_of))`` do not count.
        as_of: nothing at or after this time is read.
        items: the catalogue (``scan_items()``), needed only for a category or brand target.

    Returns:
        One entry per configured variant, in config order; arrays follow that arm's rows of ``assignments``.

    Raises:
        ConfigError: on missing columns, unknown variants, repeated users, or a contacted hold-out user.
    """
    assigned = _checked_assignments(assignments, config, "assignments")
    until = config.measured_until(as_of)
    contacts = _contacts(config, assigned, exposures)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("assigned", assigned.append_column("pos", pa.array(np.arange(assigned.num_rows))))
        con.register("contacts", contacts)
        con.register("events", _event_frame(events, config, items))
        params = {
            "start": config.start,
            "until": until,
            "contact_until": min(config.end, until),
            "window": config.window,
            "channel": config.channel,
            "name": config.name,
            "clicks": list(config.click_types),
            "purchases": list(config.purchase_types),
            "returns": list(config.return_types),
        }
        per_user = con.sql(_OUTCOMES_SQL, params=params).to_arrow_table()
    finally:
        con.close()
    columns = {name: per_user.column(name).to_numpy() for name in ("exposed", "clicks", "orders", "revenue")}
    variant = assigned.column("variant").to_numpy(zero_copy_only=False)
    contacted_control = columns["exposed"] & (variant == config.control)
    if contacted_control.any():
        user = assigned.column("user_id")[int(np.flatnonzero(contacted_control)[0])].as_py()
        raise ConfigError(
            f"exposures contact {int(contacted_control.sum())} user(s) of the hold-out {config.control!r} "
            f"(e.g. {user!r}); a hold-out is never contacted, so fix the send list or the assignments"
        )
    outcomes = []
    for spec in config.variants:
        arm = variant == spec.name
        outcomes.append(
            VariantOutcomes(
                name=spec.name,
                exposed=columns["exposed"][arm],
                clicks=columns["clicks"][arm],
                converted=columns["orders"][arm] > 0,
                orders=columns["orders"][arm],
                revenue=columns["revenue"][arm],
                cost_per_contact=config.cost_per_contact,
                offer_cost=spec.offer_cost,
            )
        )
    return outcomes


_OUTCOMES_SQL = """
WITH exposed AS (
    SELECT user_id, min(timestamp) AS contacted_at FROM contacts
    WHERE timestamp >= $start AND timestamp < $contact_until GROUP BY user_id
), ev AS (
    SELECT a.pos, x.contacted_at, e.type, e.timestamp AS ts, e.channel, coalesce(e.value, 0) AS value, e.is_target,
        coalesce('s:' || e.session_id, 'd:' || strftime(e.timestamp, '%Y-%m-%d')) AS order_key,
        CASE WHEN json_valid(e.context) THEN json_extract_string(e.context, '$.campaign') END AS tag
    FROM events e JOIN assigned a USING (user_id) LEFT JOIN exposed x USING (user_id)
    WHERE e.timestamp >= $start AND e.timestamp < $until
), per_user AS (
    SELECT pos,
        count(*) FILTER (
            WHERE list_contains($clicks, type) AND contacted_at IS NOT NULL AND CASE
                WHEN tag IS NULL THEN channel = $channel AND ts >= contacted_at AND ts < contacted_at + $window
                ELSE tag = $name END
        ) AS clicks,
        count(DISTINCT order_key) FILTER (WHERE is_target AND list_contains($purchases, type)) AS orders,
        coalesce(sum(value) FILTER (WHERE is_target AND list_contains($purchases, type)), 0)
            - coalesce(sum(value) FILTER (WHERE is_target AND list_contains($returns, type)), 0) AS net
    FROM ev GROUP BY pos
)
SELECT x.contacted_at IS NOT NULL AS exposed, coalesce(p.clicks, 0) AS clicks, coalesce(p.orders, 0) AS orders,
    greatest(coalesce(p.net, 0), 0)::DOUBLE AS revenue
FROM assigned a LEFT JOIN exposed x USING (user_id) LEFT JOIN per_user p USING (pos)
ORDER BY a.pos
"""


@dataclass(frozen=True)
class CampaignReadout:
    """The experiment read-out of a campaign and the verdict on its primary metric."""

    campaign: str
    primary_metric: PrimaryMetric
    treatments: dict[str, str]
    readout: Readout
    decision: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (see ``Readout.to_dict``)."""
        return {
            "campaign": self.campaign,
            "primary_metric": self.primary_metric,
            "treatments": self.treatments,
            "decision": self.decision,
            **self.readout.to_dict(),
        }


def campaign_readout(
    config: CampaignConfig,
    assignments: pa.Table,
    events: pa.Table,
    exposures: pa.Table | None = None,
    *,
    as_of: datetime,
    items: pa.Table | None = None,
    alpha: float = 0.05,
    planned_users: int | None = None,
) -> CampaignReadout:
    """Attribute outcomes (see ``attribute``) and read the experiment out, sample-ratio check included.

    The decision is for the configured primary metric. CTR has no hold-out to beat (the hold-out is never
    contacted), so for "ctr" the best-clicking treatment is tested against the runner-up instead.
    """
    outcomes = attribute(config, assignments, events, exposures, as_of=as_of, items=items)
    readout = read_out(config.split, outcomes, alpha=alpha, planned_users=planned_users)
    if config.primary_metric == "ctr":
        verdict = _ctr_decision(readout, outcomes)
    else:
        verdict = decision(readout, config.primary_metric)
    treatments = {v.name: v.treatment for v in config.variants}
    return CampaignReadout(config.name, config.primary_metric, treatments, readout, verdict)


def _ctr_decision(readout: Readout, outcomes: Sequence[VariantOutcomes]) -> str:
    """Compare the share of contacted users who clicked between the two best-clicking treatments."""
    early = readout.planned_users is not None and sum(v.n for v in readout.variants) < readout.planned_users
    if readout.sample_ratio.mismatch or early:
        return decision(readout)  # the trust checks come first, whatever the metric
    contacted = [o for o in outcomes if o.exposed.sum() > 0]
    if len(contacted) < 2:
        return (
            "CTR needs two contacted treatments to compare (the hold-out is never contacted); "
            f"on conversion: {decision(readout, 'conversion')}"
        )
    clicked = {o.name: float(((o.clicks > 0) & (o.exposed > 0)).sum()) for o in contacted}
    sent = {o.name: float(o.exposed.sum()) for o in contacted}
    best, runner = sorted(contacted, key=lambda o: -clicked[o.name] / sent[o.name])[:2]
    e = proportion_effect(clicked[best.name], sent[best.name], clicked[runner.name], sent[runner.name], readout.alpha)
    low, high, p_value = 100 * float(e.diff_low), 100 * float(e.diff_high), float(e.p_value)
    comparison = (
        f"{best.name} {100 * float(e.treatment):.2f}% vs {runner.name} {100 * float(e.control):.2f}% of contacted "
        f"users clicked ({1 - readout.alpha:.0%} CI {low:+.2f} to {high:+.2f} pp, "
        f"{'p < 0.0001' if p_value < 1e-4 else f'p = {p_value:.4f}'})"
    )
    if bool(e.significant):
        return f"Best click-through: {comparison}."
    return f"No detectable click-through difference: {comparison}."


def _checked_assignments(table: pa.Table, config: CampaignConfig, what: str) -> pa.Table:
    """The assignment columns cast to ``ASSIGNMENT_SCHEMA``, after checking they can belong to this campaign."""
    missing = [name for name in ASSIGNMENT_SCHEMA.names if name not in table.column_names]
    if missing:
        raise ConfigError(f"{what}: missing column(s) {missing}; pass the table assign_campaign() returned")
    try:
        checked = table.select(ASSIGNMENT_SCHEMA.names).cast(ASSIGNMENT_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConfigError(f"{what}: columns do not match {ASSIGNMENT_SCHEMA}: {exc}") from exc
    if checked.column("user_id").null_count or checked.column("variant").null_count:
        raise ConfigError(f"{what}: user_id and variant must not be null")
    unknown = sorted(set(pc.unique(checked.column("variant")).to_pylist()) - {v.name for v in config.variants})
    if unknown:
        raise ConfigError(f"{what}: variant(s) {unknown} are not arms of campaign {config.name!r}")
    if len(pc.unique(checked.column("user_id"))) != checked.num_rows:
        counts = pc.value_counts(checked.column("user_id")).flatten()
        repeated = counts[0].filter(pc.greater(counts[1], 1))[0].as_py()
        raise ConfigError(f"{what}: user {repeated!r} is assigned more than once; each user has one arm")
    return checked


def _contacts(config: CampaignConfig, assigned: pa.Table, exposures: pa.Table | None) -> pa.Table:
    """Who was contacted when: the given exposures, or every treated user at the campaign start."""
    schema = pa.schema([("user_id", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC"))])
    if exposures is None:
        treated = assigned.filter(pc.not_equal(assigned.column("variant"), config.control))
        start = pa.repeat(pa.scalar(config.start, schema.field("timestamp").type), treated.num_rows)
        return pa.table([treated.column("user_id"), start], schema=schema)
    missing = [name for name in schema.names if name not in exposures.column_names]
    if missing:
        raise ConfigError(f"exposures: missing column(s) {missing}; give one row per contact (user_id, timestamp)")
    _require_utc(exposures, "exposures")
    return exposures.select(schema.names).cast(schema)


def _event_frame(events: pa.Table, config: CampaignConfig, items: pa.Table | None) -> pa.Table:
    """The event columns attribution reads, optional ones filled with nulls, plus whether each is a target."""
    missing = [name for name in ("user_id", "item_id", "type", "timestamp") if name not in events.column_names]
    if missing:
        raise ConfigError(f"events: missing column(s) {missing}; pass the table scan_events() returns")
    _require_utc(events, "events")
    columns = {name: pc.cast(events.column(name), pa.string()) for name in ("user_id", "item_id", "type")}
    columns["timestamp"] = events.column("timestamp")
    for name, kind in _EVENT_COLUMNS.items():
        present = name in events.column_names
        columns[name] = pc.cast(events.column(name), kind) if present else pa.nulls(events.num_rows, kind)
    target = _target_items(config.target, items)
    hit = pc.is_in(columns["item_id"], value_set=target) if target is not None else pa.repeat(True, events.num_rows)
    return pa.table({**columns, "is_target": hit})


def _target_items(target: CampaignTarget | None, items: pa.Table | None) -> pa.Array | None:
    """Item ids a conversion must buy; a category matches any level of an item's category path."""
    if target is None:
        return None
    if target.kind == "item":
        return pa.array(target.values, pa.string())
    if items is None or not {"item_id", target.kind} <= set(items.column_names):
        raise ConfigError(
            f"a {target.kind} target needs the catalogue with item_id and {target.kind}: pass items=store.scan_items()"
        )
    column = items.column(target.kind).combine_chunks()
    wanted = pa.array(target.values, pa.string())
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        level_hit = pc.is_in(pc.list_flatten(column), value_set=wanted)
        rows = pc.unique(pc.list_parent_indices(column).filter(level_hit))
    else:
        rows = pc.indices_nonzero(pc.fill_null(pc.is_in(column, value_set=wanted), False))
    return pc.cast(items.column("item_id").take(rows), pa.string()).combine_chunks()


def _require_utc(table: pa.Table, what: str) -> None:
    kind = table.schema.field("timestamp").type
    if not pa.types.is_timestamp(kind) or kind.tz is None:
        raise ConfigError(f"{what}.timestamp is {kind}; it must be a time-zone-aware timestamp (UTC)")
    if table.column("timestamp").null_count or table.column("user_id").null_count:
        raise ConfigError(f"{what}: timestamp and user_id must not be null")
