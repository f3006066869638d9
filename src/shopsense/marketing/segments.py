"""Customer segments: named conditions over the profile table, and how large and valuable each is.

A segment is a name plus an expression (``shopsense.marketing.expressions``) and selects the profile
rows it holds for. RFM segments need no expression: the profile builder already names one per
customer. Segments may overlap (a "loyal" customer can also be "kitchen lover"), so statistics are
per segment and ``overlaps`` says how much any two share before a campaign targets both.
Masks are boolean arrays aligned to the profile rows; they are read, never recomputed, from profiles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shopsense.errors import ConfigError
from shopsense.marketing.expressions import Expression

Masks = dict[str, npt.NDArray[np.bool_]]
"""Segment name to a boolean per profile row, in the order the segments were given."""


@dataclass(frozen=True)
class Segment:
    """A named audience definition.

    The expression is parsed when the segment is made, so a typo fails when the configuration is
    loaded, not halfway through a campaign run; fields are checked against the profiles on evaluation.
    """

    name: str
    expression: str
    parsed: Expression = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ConfigError(f"segment name is empty (expression {self.expression!r})")
        object.__setattr__(self, "parsed", Expression.parse(self.expression, source=f"segment {self.name!r}"))


def evaluate_segments(profiles: pa.Table, segments: Sequence[Segment]) -> Masks:
    """Which profile rows each segment selects.

    Every expression is checked against the profile schema before any is evaluated, so one bad
    definition fails the run at once instead of after the others have been computed.

    Raises:
        ConfigError: two segments share a name.
        ExpressionError: a segment names an unknown field or mixes types; the message names the segment.
    """
    names = [segment.name for segment in segments]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"segment names must be unique; repeated: {', '.join(repeated)}")
    for segment in segments:
        segment.parsed.check(profiles.schema)
    return {segment.name: segment.parsed.evaluate(profiles) for segment in segments}


def rfm_segments(profiles: pa.Table) -> Masks:
    """One mask per named RFM segment in the profiles' ``rfm_segment`` column, largest first.

    Customers without a segment (null: no purchase yet) belong to none.

    Raises:
        ConfigError: the profiles have no ``rfm_segment`` column.
    """
    if "rfm_segment" not in profiles.column_names:
        raise ConfigError("profiles have no 'rfm_segment' column; build profiles with RFM scores first")
    encoded = pc.dictionary_encode(profiles.column("rfm_segment").combine_chunks())
    codes = np.asarray(pc.fill_null(encoded.indices, -1).to_numpy(), dtype=np.int64)
    names = encoded.dictionary.to_pylist()
    sizes = np.bincount(codes[codes >= 0], minlength=len(names))
    order = sorted(range(len(names)), key=lambda i: (-sizes[i], names[i]))
    return {names[i]: codes == i for i in order}


def _stack(rows: int, masks: Mapping[str, npt.NDArray[np.bool_]]) -> npt.NDArray[np.bool_]:
    """Masks as a (segments, rows) matrix, refusing any whose length is not the profile row count."""
    for name, mask in masks.items():
        if mask.shape != (rows,):
            raise ConfigError(f"mask of segment {name!r} has shape {mask.shape}; expected ({rows},)")
    return np.vstack([np.asarray(mask, dtype=bool) for mask in masks.values()]) if masks else np.zeros((0, rows), bool)


def segment_stats(profiles: pa.Table, masks: Mapping[str, npt.NDArray[np.bool_]]) -> pa.Table:
    """Size and revenue of each segment, absolute and as a share of all customers.

    Revenue is the sum of ``monetary`` (net of returns; unknown counts as 0). ``revenue_share`` is
    relative to the revenue of all profiles, and NaN when that total is not positive, where a share
    would mislead.

    Returns:
        Table with ``segment``, ``customers``, ``share``, ``revenue``, ``revenue_share``, one row per mask.

    Raises:
        ConfigError: no ``monetary`` column, or a mask whose length is not the number of profiles.
    """
    if "monetary" not in profiles.column_names:
        raise ConfigError("profiles have no 'monetary' column, which segment revenue is summed from")
    rows = profiles.num_rows
    matrix = _stack(rows, masks)
    monetary = np.nan_to_num(np.asarray(pc.cast(profiles.column("monetary"), pa.float64()).to_numpy(), dtype=float))
    customers = matrix.sum(axis=1).astype(np.int64)
    revenue = matrix.astype(float) @ monetary
    total = float(monetary.sum())
    return pa.table(
        {
            "segment": pa.array(list(masks), pa.string()),
            "customers": customers,
            "share": customers / rows if rows else np.full(len(masks), np.nan),
            "revenue": revenue,
            "revenue_share": revenue / total if total > 0 else np.full(len(masks), np.nan),
        }
    )


def overlaps(masks: Mapping[str, npt.NDArray[np.bool_]]) -> pa.Table:
    """How many customers every pair of segments shares, and their Jaccard index (shared / in either).

    Returns:
        Table with ``segment_a``, ``segment_b``, ``both``, ``either``, ``jaccard``, one row per unordered
        pair in mask order; Jaccard is NaN for two empty segments.

    Raises:
        ConfigError: masks of different lengths.
    """
    lengths = {mask.shape for mask in masks.values()}
    if len(lengths) > 1:
        raise ConfigError(f"segment masks have different shapes: {sorted(lengths)}")
    matrix = _stack(next(iter(lengths), (0,))[0], masks).astype(np.int64)
    both = matrix @ matrix.T
    sizes = np.diag(both)
    first, second = np.triu_indices(len(masks), k=1)
    shared = both[first, second]
    either = sizes[first] + sizes[second] - shared
    names = np.asarray(list(masks), dtype=object)
    with np.errstate(invalid="ignore", divide="ignore"):
        jaccard = np.where(either > 0, shared / np.maximum(either, 1), np.nan)
    return pa.table(
        {
            "segment_a": pa.array(names[first].tolist(), pa.string()),
            "segment_b": pa.array(names[second].tolist(), pa.string()),
            "both": shared,
            "either": either,
            "jaccard": jaccard,
        }
    )


def plot_segments(stats: pa.Table, path: str | Path) -> Path:
    """Bar chart of segment sizes, each labelled with its share of revenue, written as a PNG.

    Uses the Agg canvas directly (no pyplot), so it runs in servers and tests without a display.

    Args:
        stats: a ``segment_stats`` table.
        path: where to write the PNG; its folder must exist.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # here: matplotlib takes a tenth of a second to load
    from matplotlib.figure import Figure

    names = stats.column("segment").to_pylist()
    customers = stats.column("customers").to_numpy()
    revenue_share = stats.column("revenue_share").to_numpy()
    figure = Figure(figsize=(max(6.0, 0.8 * len(names) + 2), 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    bars = axes.bar(range(len(names)), customers, color="#4C72B0")
    labels = ["revenue n/a" if np.isnan(share) else f"{share:.0%} of revenue" for share in revenue_share]
    axes.bar_label(bars, labels=labels, fontsize=8, padding=2)
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes.set_ylabel("customers")
    axes.set_title("Segments: size and share of revenue")
    axes.margins(y=0.15)
    figure.tight_layout()
    target = Path(path)
    figure.savefig(target, format="png", dpi=100)
    return target
