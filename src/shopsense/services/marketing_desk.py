"""What the dashboard's marketing pages ask beyond :class:`MarketingService`, in the shape a page shows it.

An expression checked as it is typed (the caret and "did you mean" the CLI prints, as data), the RFM grid,
clusters in words, CSV downloads through the formula-safe writer, the audience job, personalised message
previews and the experiment-design calculator. Every function that reads the store takes the
:class:`MarketingService` it works over, so a server runs it on its reader
(``serving().marketing(lambda m: check_expression(m, text))``) and a job on its own handle; none computes
features or fits a model itself.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from shopsense.csv_safety import neutralise_table
from shopsense.errors import ConfigError
from shopsense.marketing.audiences import AudienceSpec, Target
from shopsense.marketing.campaigns import CampaignConfig
from shopsense.marketing.clustering import cluster_customers
from shopsense.marketing.content import personalise
from shopsense.marketing.experiments import minimum_detectable_effect, sample_size
from shopsense.marketing.expressions import ExpressionError
from shopsense.marketing.segments import Segment, evaluate_segments, overlaps, rfm_segments, segment_stats
from shopsense.services.marketing import MarketingService, SegmentReport

if TYPE_CHECKING:
    from shopsense.pipeline import Recommendation
    from shopsense.services.jobs import JobContext

SCORES = (1, 2, 3, 4, 5)
"""RFM quintile scores; 0 (no purchase yet) is left out of the grid."""


@dataclass(frozen=True)
class ExpressionCheck:
    """An expression as an editor shows it while one types: valid with the customers it selects, or where
    it breaks (``position`` 0-based, ``caret`` the expression with carets under the bad part)."""

    ok: bool
    message: str | None = None
    position: int | None = None
    length: int | None = None
    caret: str | None = None
    customers: int | None = None
    share: float | None = None
    revenue_share: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in asdict(self).items()}


def check_expression(marketing: MarketingService, text: str) -> ExpressionCheck:
    """Parse, type-check and evaluate ``text`` over the stored profiles; a bad expression is an answer
    (where and why, with the nearest field name), not an error.

    Raises:
        ConfigError: no profiles built yet.
    """
    profiles = marketing.profiles()
    try:
        masks = evaluate_segments(profiles, [Segment("draft", text)])
    except ExpressionError as exc:
        caret = str(exc).split("\n", 1)[1] if "\n" in str(exc) else None
        return ExpressionCheck(False, exc.message, exc.position, exc.length, caret)
    row = segment_stats(profiles, masks).to_pylist()[0]
    return ExpressionCheck(True, customers=row["customers"], share=row["share"], revenue_share=row["revenue_share"])


def saved_report(marketing: MarketingService) -> SegmentReport | None:
    """Sizes, revenue shares and overlaps of the saved segments; None when none is saved."""
    saved = marketing.saved_segments()
    return marketing.segments(saved) if saved else None


@dataclass(frozen=True)
class SegmentOverview:
    """The segments page in one read of the profiles: the saved segments and their report (None when none
    is saved), the named RFM segments, the RFM grid, and the profile fields an expression may name."""

    saved: dict[str, str]
    report: SegmentReport | None
    rfm: SegmentReport
    grid: RfmGrid
    fields: list[tuple[str, str]]


def segment_overview(marketing: MarketingService) -> SegmentOverview:
    """Everything the segments page shows, the stored profiles read once.

    Raises:
        ConfigError: no profiles yet, or a saved segment the profiles can no longer answer.
    """
    saved = marketing.saved_segments()
    profiles = marketing.profiles()
    masks = evaluate_segments(profiles, [Segment(n, e) for n, e in saved.items()]) if saved else None
    fields = [(f.name, str(f.type)) for f in profiles.schema if f.name not in ("user_id", "as_of")]
    report = _report(profiles, masks) if masks else None
    return SegmentOverview(saved, report, _report(profiles, rfm_segments(profiles)), _grid(profiles), fields)


def _report(profiles: pa.Table, masks: dict[str, np.ndarray]) -> SegmentReport:
    users = profiles.column("user_id").to_numpy(zero_copy_only=False)
    return SegmentReport(segment_stats(profiles, masks), overlaps(masks), dict(masks), users)


@dataclass(frozen=True)
class RfmGrid:
    """Customers and their revenue per (recency score, frequency score) cell; ``[r - 1][f - 1]``."""

    customers: list[list[int]]
    revenue: list[list[float]]
    segments: list[list[str]]
    """The most common RFM segment name of each cell ("" for an empty one)."""


def rfm_grid(marketing: MarketingService) -> RfmGrid:
    """The RFM grid of the stored profiles (purchasers only: a score of 0 means no purchase yet).

    Raises:
        ConfigError: no profiles, or profiles without RFM scores.
    """
    return _grid(marketing.profiles())


def _grid(profiles: pa.Table) -> RfmGrid:
    missing = {"r_score", "f_score", "monetary", "rfm_segment"} - set(profiles.column_names)
    if missing:
        raise ConfigError(f"profiles have no {sorted(missing)}: build profiles with RFM scores first")
    r = np.asarray(pc.fill_null(profiles.column("r_score"), 0).to_numpy(), dtype=np.int64)
    f = np.asarray(pc.fill_null(profiles.column("f_score"), 0).to_numpy(), dtype=np.int64)
    money = np.nan_to_num(np.asarray(pc.cast(profiles.column("monetary"), pa.float64()).to_numpy(), dtype=float))
    size = len(SCORES)
    scored = (r >= 1) & (r <= size) & (f >= 1) & (f <= size)
    cell = np.where(scored, (r - 1) * size + (f - 1), size * size)  # one past the grid: no purchase yet
    people = np.bincount(cell, minlength=size * size + 1)[: size * size].reshape(size, size)
    money_in = np.bincount(cell, weights=money, minlength=size * size + 1)[: size * size].reshape(size, size)
    customers = [[int(c) for c in row] for row in people]
    revenue = [[round(float(v), 2) for v in row] for row in money_in]
    segments = [[""] * size for _ in SCORES]
    names = pc.cast(profiles.column("rfm_segment"), pa.string())
    named = pa.table({"cell": cell, "name": names}).filter(
        pc.and_(pa.array(scored), pc.fill_null(pc.not_equal(names, ""), False))
    )
    counted = named.group_by(["cell", "name"]).aggregate([([], "count_all")])
    # the most common name per cell; a tie goes to the name first in order
    ranked = counted.sort_by([("cell", "ascending"), ("count_all", "descending"), ("name", "ascending")])
    seen: set[int] = set()
    for at, name in zip(ranked.column("cell").to_pylist(), ranked.column("name").to_pylist(), strict=True):
        if at not in seen:  # at most one row per (cell, name): 25 cells, a dozen names
            seen.add(at)
            segments[at // size][at % size] = name
    return RfmGrid(customers, revenue, segments)


def cluster_summary(marketing: MarketingService, profiles: pa.Table | None = None) -> list[dict[str, Any]]:
    """The customer clusters (largest first), each with its name, its description in words, size and share."""
    described = (marketing.clusters() if profiles is None else cluster_customers(profiles)).descriptions
    return cast(
        list[dict[str, Any]], described.select(["cluster", "name", "description", "customers", "share"]).to_pylist()
    )


def profiles_version(profiles: pa.Table) -> str:
    """What tells one build of the profiles from another (its ``as_of`` and size): answers derived from the
    profiles alone, such as the clusters, can be kept until it changes."""
    as_of = profiles.column("as_of")[0].as_py() if "as_of" in profiles.column_names and profiles.num_rows else None
    return f"{as_of}/{profiles.num_rows}"


def csv_bytes(table: pa.Table) -> bytes:
    """``table`` as CSV, text cells a spreadsheet would run as formulas neutralised (:mod:`shopsense.csv_safety`)."""
    sink = io.BytesIO()
    pacsv.write_csv(neutralise_table(table), sink)
    return sink.getvalue()


def lookalike_audience(marketing: MarketingService, seed_expression: str, n: int) -> pa.Table:
    """The ``n`` customers most like those a segment expression selects, each with the main reason in words
    (``user_id``, ``similarity``, ``rank``, ``main_reason``): the seeds' strongest shared interest when the
    customer has it too, else the seeds' most common RFM segment when the customer is in it, else the
    similarity of the whole profile."""
    report = marketing.segments({"seeds": seed_expression})
    seeds = report.members("seeds")
    if not seeds:
        raise ConfigError("the seed segment selects nobody: a lookalike audience needs at least one seed customer")
    found = marketing.lookalike(seeds, n)
    profiles = marketing.profiles()
    rows = np.asarray(pc.index_in(found.column("user_id"), value_set=profiles.column("user_id")).to_numpy(), np.int64)
    tag, weights = _seed_interest(profiles, report.masks["seeds"])
    similarity = np.asarray(found.column("similarity").to_numpy(zero_copy_only=False), dtype=float)
    reasons = np.char.add(np.char.add("profile ", np.char.mod("%.2f", similarity)), " similar to the seeds' average")
    if "rfm_segment" in profiles.column_names:
        segments = pc.cast(profiles.column("rfm_segment"), pa.string())
        common = _most_common(segments.filter(pa.array(report.masks["seeds"])))
        if common is not None:
            same = np.asarray(pc.fill_null(pc.equal(segments.take(pa.array(rows)), common), False), dtype=bool)
            reasons = np.where(same, f"{common}, as most seeds are", reasons)
    if tag is not None:
        share = weights[rows]
        liked = np.char.add(np.char.add(f"likes {_tag_label(tag)} (", np.char.mod("%.0f%%", share * 100)), " of ")
        reasons = np.where(share > 0, np.char.add(liked, "their interest), as the seeds do"), reasons)
    return found.append_column("main_reason", pa.array(reasons.tolist(), pa.string()))


def _most_common(values: pa.Array | pa.ChunkedArray) -> str | None:
    """The most common non-empty value (a tie: the first seen), or None."""
    counted = pc.value_counts(pc.drop_null(values))
    names, counts = counted.field("values").to_pylist(), counted.field("counts").to_numpy()
    kept = [i for i, name in enumerate(names) if name]
    return str(names[max(kept, key=lambda i: counts[i])]) if kept else None


def _seed_interest(profiles: pa.Table, seeds: np.ndarray) -> tuple[str | None, np.ndarray]:
    """The interest tag the seeds share most (summed weight), and every customer's weight for it."""
    weights = np.zeros(profiles.num_rows)
    if "interests" not in profiles.column_names:
        return None, weights
    lists = profiles.column("interests").combine_chunks()
    flat = pc.list_flatten(lists)
    if not len(flat):
        return None, weights
    owners = np.asarray(pc.list_parent_indices(lists).to_numpy(), dtype=np.int64)
    tags = flat.field("tag")
    values = np.nan_to_num(np.asarray(flat.field("weight").to_numpy(zero_copy_only=False), dtype=float))
    of_seeds = seeds[owners]
    if not of_seeds.any():
        return None, weights
    summed = pa.table({"tag": tags.filter(pa.array(of_seeds)), "weight": values[of_seeds]})
    by_tag = summed.group_by("tag", use_threads=False).aggregate([("weight", "sum")])  # in order of first seen
    tag = by_tag.column("tag")[int(np.argmax(by_tag.column("weight_sum").to_numpy()))].as_py()
    hit = np.asarray(pc.fill_null(pc.equal(tags, tag), False), dtype=bool)
    np.add.at(weights, owners[hit], values[hit])
    return str(tag), weights


def _tag_label(tag: str) -> str:
    kind, _, name = tag.partition(":")
    return f"brand {name}" if kind == "brand" else name or tag


AUDIENCE_JOB = "audience"
"""The kind of the jobs :func:`audience_work` does."""


def audience_work(
    target: Target,
    spec: AudienceSpec,
    *,
    segment: str | None,
    horizon_days: float,
    limit: int,
    contacted: Sequence[str] = (),
    contacted_by: Sequence[str] = (),
) -> Callable[[JobContext], dict[str, Any]]:
    """A job's work building a propensity audience (``AUDIENCE_JOB``; the API and the dashboard both submit it).

    Args:
        target: The item, category or brand (checked first: an unknown one fails the job).
        spec: The threshold, top-N and recent-buyer cuts.
        segment: A segment expression the audience is cut to, or None.
        horizon_days: The window P(buying the target) is for.
        limit: The best customers kept beside the job (``JobRunner.rows``).
        contacted: Customers left out.
        contacted_by: Campaigns whose contacts are left out too.

    Returns:
        The work; its result: target, segment, size, funnel, the model's report and note, rows kept.
    """

    def work(job: JobContext) -> dict[str, Any]:
        left_out = sorted({*contacted, *(user for name in contacted_by for user in job.marketing.treated(name))})
        result = job.marketing.audience(
            target, spec, segment=segment, contacted=left_out, horizon_days=horizon_days, progress=job.progress
        )
        kept = result.table.select(["user_id", "score", "rank", "main_reason"]).slice(0, limit)
        job.keep_rows(kept)
        return {
            "target": str(target),
            "segment": segment,
            "contacted_by": list(contacted_by),
            "size": result.table.num_rows,
            "funnel": result.funnel,
            "model": asdict(result.scores.report),
            "note": result.scores.report.note,
            "rows": kept.num_rows,
        }

    return work


@dataclass(frozen=True)
class _Shown:
    """A recommended item as the API answers it, in the shape :func:`personalise` reads."""

    item_id: str
    title: str
    score: float
    reason: str

    @property
    def explanation(self) -> _Shown:
        return self


def preview_messages(
    recommend: Callable[[str], Sequence[Mapping[str, Any]]], user_ids: Sequence[str], template: str, k: int = 3
) -> list[dict[str, Any]]:
    """Each customer's personalised message and items, as a campaign would send them.

    Args:
        recommend: one user's recommendations as the API answers them (``item_id``, ``title``, ``score``,
            ``reason``), best first.
        user_ids: the customers to preview, each once.
        template: the message, ``$first_title`` and the other :data:`shopsense.marketing.content.FIELDS`.
        k: most items per message.

    Raises:
        ConfigError: a bad template (naming the allowed placeholders).
    """

    def shown(user: str) -> Sequence[Recommendation]:
        items = [
            _Shown(
                str(r["item_id"]), str(r.get("title") or r["item_id"]), float(r.get("score") or 0.0), str(r["reason"])
            )
            for r in recommend(user)
        ]
        return cast("Sequence[Recommendation]", items)

    table = personalise(list(dict.fromkeys(user_ids)), shown, template, k)
    return cast(list[dict[str, Any]], table.to_pylist())


@dataclass(frozen=True)
class Design:
    """A two-arm test's design: users per arm and the absolute conversion lift they can detect, and the
    curve between the two (``curve``: users per arm, detectable lift) for a plot."""

    baseline_rate: float
    n_per_arm: int
    mde_abs: float
    alpha: float
    power: float
    curve: list[tuple[int, float]]


def design(
    baseline_rate: float,
    *,
    n_per_arm: int | None = None,
    mde_abs: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> Design:
    """Solve a 50/50 conversion test for the missing one of ``n_per_arm`` and ``mde_abs``.

    Raises:
        ConfigError: neither or both given, or values out of range.
    """
    if (n_per_arm is None) == (mde_abs is None):
        raise ConfigError("give either the users per arm or the lift to detect, not both")
    if n_per_arm is None:
        assert mde_abs is not None
        n_per_arm = sample_size(baseline_rate, mde_abs, alpha, power)
    else:
        mde_abs = minimum_detectable_effect(n_per_arm, baseline_rate, alpha, power)
    curve = []
    for n in sorted({int(v) for v in np.geomspace(max(n_per_arm / 20, 50), n_per_arm * 20, 25)} | {n_per_arm}):
        try:
            curve.append((n, minimum_detectable_effect(n, baseline_rate, alpha, power)))
        except ConfigError:  # too few users to detect any lift from this baseline
            continue
    return Design(baseline_rate, n_per_arm, float(mde_abs), alpha, power, curve)


@dataclass(frozen=True)
class CampaignRow:
    """A campaign as the campaigns page lists it: its definition and users assigned per variant."""

    config: CampaignConfig
    assigned: dict[str, int]


def campaigns_overview(marketing: MarketingService) -> list[CampaignRow]:
    """Every stored campaign, oldest first, with its users per variant (0 for an arm nobody is in yet)."""
    rows = []
    for name in marketing.campaign_names():
        config = marketing.campaign(name)
        counts = marketing.assigned(name)
        rows.append(CampaignRow(config, {v.name: counts.get(v.name, 0) for v in config.variants}))
    return rows


def contacts(marketing: MarketingService, name: str) -> pa.Table:
    """Whom a campaign contacts: every user of a treatment arm (never the hold-out), with the arm and what it
    gets (``user_id``, ``variant``, ``treatment``), for the mailing tool."""
    config = marketing.campaign(name)
    treatments = {v.name: v.treatment for v in config.variants}
    rows = marketing.store.assignments(name)
    rows = rows.filter(pc.not_equal(rows.column("variant"), config.control))
    arms = pc.index_in(pc.cast(rows.column("variant"), pa.string()), value_set=pa.array(list(treatments), pa.string()))
    given = pa.array(list(treatments.values()), pa.string()).take(arms)
    return pa.table(
        {
            "user_id": rows.column("user_id"),
            "variant": rows.column("variant"),
            "treatment": pc.fill_null(given, ""),
        }
    )
