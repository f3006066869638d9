"""RFM quintile scores and the named R x (F+M)/2 segment grid, on known answers."""

from __future__ import annotations

import numpy as np
import pytest

from shopsense.errors import ConfigError
from shopsense.features.rfm import SEGMENTS, quintile_scores, rfm_segment_names

# (R, F, M) -> segment: one customer per segment, each read off the documented grid.
KNOWN = [
    ((5, 5, 5), "Champions"),
    ((3, 4, 4), "Loyal customers"),
    ((5, 2, 3), "Potential loyalists"),
    ((5, 1, 1), "New customers"),
    ((4, 1, 1), "Promising"),
    ((3, 3, 3), "Need attention"),
    ((3, 1, 2), "About to sleep"),
    ((2, 4, 3), "At risk"),
    ((1, 5, 5), "Cannot lose them"),
    ((2, 2, 1), "Hibernating"),
    ((1, 1, 1), "Lost"),
    ((0, 0, 0), "Prospect"),
]


def test_every_named_segment_from_its_cell() -> None:
    r, f, m = (np.array(s, dtype=np.int8) for s in zip(*(scores for scores, _ in KNOWN), strict=True))
    names = rfm_segment_names(r, f, m)
    assert names.tolist() == [name for _, name in KNOWN]
    assert set(SEGMENTS) == {name for _, name in KNOWN}


def test_fm_is_the_mean_of_f_and_m_rounded_half_up() -> None:
    # F=4, M=3: (4+3)/2 = 3.5 -> FM 4 -> Champions; rounding down would have said "Potential loyalists".
    assert rfm_segment_names(np.array([5]), np.array([4]), np.array([3])).tolist() == ["Champions"]
    assert rfm_segment_names(np.array([5]), np.array([3]), np.array([2])).tolist() == ["Potential loyalists"]


def test_segment_names_keep_the_input_shape() -> None:
    grid = np.array([[5, 1], [0, 1]])
    assert rfm_segment_names(grid, grid, grid).tolist() == [["Champions", "Lost"], ["Prospect", "Lost"]]


@pytest.mark.parametrize(
    ("r", "f", "m", "message"),
    [
        ([6], [1], [1], "1..5"),
        ([-1], [1], [1], "1..5"),
        ([0], [3], [3], "customer 0 has a 0 score"),
        ([1, 2], [1], [1], "shapes differ"),
    ],
)
def test_bad_scores_are_refused(r: list[int], f: list[int], m: list[int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        rfm_segment_names(np.array(r), np.array(f), np.array(m))


def test_quintiles_split_distinct_values_into_equal_fifths() -> None:
    values = np.array([7.0, 1.0, 9.0, 3.0, 10.0, 2.0, 5.0, 4.0, 8.0, 6.0])
    scores = quintile_scores(values)
    assert scores.dtype == np.int8
    assert scores.tolist() == [4, 1, 5, 2, 5, 1, 3, 2, 4, 3]  # ceil(5 * rank / 10)
    assert quintile_scores(values, higher_is_better=False).tolist() == [2, 5, 1, 4, 1, 5, 3, 4, 2, 3]


def test_ties_share_a_score_whatever_the_row_order() -> None:
    values = np.array([1.0, 1.0, 2.0, 3.0, 4.0])
    # Average ranks 1.5, 1.5, 3, 4, 5 -> ceil(5 * rank / 5).
    assert quintile_scores(values).tolist() == [2, 2, 3, 4, 5]
    flipped = values[::-1]
    assert quintile_scores(flipped).tolist() == [5, 4, 3, 2, 2]
    everyone_once = np.ones(8)
    assert set(quintile_scores(everyone_once).tolist()) == {3}  # one tie lands in its middle quintile


def test_quintiles_refuse_nan_and_accept_nobody() -> None:
    with pytest.raises(ConfigError, match="NaN"):
        quintile_scores(np.array([1.0, np.nan]))
    assert quintile_scores(np.array([])).tolist() == []
