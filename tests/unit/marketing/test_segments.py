"""Rule and RFM segments on a hand-built profile table, with hand-computed sizes, revenue and overlaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from matplotlib.image import imread

from shopsense.errors import ConfigError
from shopsense.marketing.expressions import ExpressionError
from shopsense.marketing.segments import (
    Segment,
    evaluate_segments,
    overlaps,
    plot_segments,
    rfm_segments,
    segment_stats,
)

# Total revenue 100 + 50 + 30 + 20 = 200 (u2's spend is unknown and counts as 0).
PROFILES = pa.table(
    {
        "user_id": ["u0", "u1", "u2", "u3", "u4"],
        "recency_days": [3.0, 10.0, 90.0, 400.0, 20.0],
        "monetary": [100.0, 50.0, np.nan, 30.0, 20.0],
        "preferred_channel": ["store", "web", "store", None, "web"],
        "rfm_segment": ["champions", "loyal", None, "hibernating", "loyal"],
    }
)


def test_segments_select_the_rows_their_expressions_hold_for() -> None:
    masks = evaluate_segments(
        PROFILES,
        [Segment("recent", "recency_days <= 20"), Segment("store", 'preferred_channel == "store"')],
    )
    assert list(masks) == ["recent", "store"]
    assert masks["recent"].tolist() == [True, True, False, False, True]
    assert masks["store"].tolist() == [True, False, True, False, False]


def test_a_bad_segment_fails_when_defined_or_before_any_is_evaluated() -> None:
    with pytest.raises(ExpressionError, match=r"segment 'vip': unexpected name 'monetary'"):
        Segment("vip", "recency_days < 5 monetary")
    with pytest.raises(ConfigError, match="segment name is empty"):
        Segment(" ", "true")
    segments = [Segment("ok", "true"), Segment("typo", "monetry > 10")]
    with pytest.raises(ExpressionError, match=r"segment 'typo': unknown field 'monetry' \(did you mean 'monetary'\?\)"):
        evaluate_segments(PROFILES, segments)
    with pytest.raises(ConfigError, match="repeated: a"):
        evaluate_segments(PROFILES, [Segment("a", "true"), Segment("a", "false")])


def test_rfm_segments_one_mask_per_named_segment_largest_first() -> None:
    masks = rfm_segments(PROFILES)
    assert list(masks) == ["loyal", "champions", "hibernating"]  # u2 has no segment and is in none
    assert masks["loyal"].tolist() == [False, True, False, False, True]
    assert masks["champions"].tolist() == [True, False, False, False, False]
    with pytest.raises(ConfigError, match="no 'rfm_segment' column"):
        rfm_segments(PROFILES.drop_columns(["rfm_segment"]))


def test_segment_stats_size_share_and_revenue_share() -> None:
    masks = {
        "first_two": np.array([True, True, False, False, False]),
        "unknown_spend": np.array([False, False, True, False, False]),
        "everyone": np.ones(5, dtype=bool),
    }
    stats = segment_stats(PROFILES, masks).to_pydict()
    assert stats["segment"] == ["first_two", "unknown_spend", "everyone"]
    assert stats["customers"] == [2, 1, 5]
    assert stats["share"] == pytest.approx([0.4, 0.2, 1.0])
    assert stats["revenue"] == pytest.approx([150.0, 0.0, 200.0])
    assert stats["revenue_share"] == pytest.approx([0.75, 0.0, 1.0])


def test_revenue_share_is_nan_when_total_revenue_is_not_positive() -> None:
    refunds = PROFILES.set_column(2, "monetary", pa.array([-10.0, 5.0, 0.0, 0.0, 0.0]))
    stats = segment_stats(refunds, {"a": np.array([True, True, False, False, False])})
    assert stats.column("revenue").to_pylist() == [-5.0]
    assert np.isnan(stats.column("revenue_share").to_pylist()[0])


def test_masks_must_match_the_profiles() -> None:
    with pytest.raises(ConfigError, match=r"mask of segment 'short' has shape \(3,\); expected \(5,\)"):
        segment_stats(PROFILES, {"short": np.ones(3, dtype=bool)})
    with pytest.raises(ConfigError, match="different shapes"):
        overlaps({"a": np.ones(3, dtype=bool), "b": np.ones(4, dtype=bool)})


def test_overlaps_count_shared_customers_and_jaccard_per_pair() -> None:
    masks = {
        "a": np.array([True, True, True, False, False]),
        "b": np.array([False, False, True, True, False]),
        "c": np.zeros(5, dtype=bool),
        "d": np.zeros(5, dtype=bool),
    }
    table = overlaps(masks).to_pydict()
    pairs = list(zip(table["segment_a"], table["segment_b"], strict=True))
    assert pairs == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]
    assert table["both"] == [1, 0, 0, 0, 0, 0]
    assert table["either"] == [4, 3, 3, 2, 2, 0]
    assert table["jaccard"][:5] == pytest.approx([0.25, 0.0, 0.0, 0.0, 0.0])
    assert np.isnan(table["jaccard"][5])  # two empty segments: undefined, not "identical"
    assert overlaps({}).num_rows == 0


def test_plot_segments_writes_a_png_bar_chart(tmp_path: Path) -> None:
    stats = segment_stats(PROFILES, rfm_segments(PROFILES))
    path = plot_segments(stats, tmp_path / "segments.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = imread(path).shape
    assert (width, height) == (600, 450)
