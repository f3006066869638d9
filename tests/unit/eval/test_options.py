"""What a user sets on an evaluation: parameters typed by each model's config, and a duration."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopsense.eval.options import parse_duration, parse_params


def test_parameters_are_typed_by_the_model_config(tmp_path: Path) -> None:
    file = tmp_path / "params.toml"
    file.write_text("[ease]\nl2 = 100.0\nmax_items = 10\n[item_knn]\nneighbours = 20\n")
    params = parse_params(["ease.max_items=4000", "item_knn.binary=true", "popular.half_life_days=7"], file)
    assert params == {
        "ease": {"l2": 100.0, "max_items": 4000},  # the command line wins over the file
        "item_knn": {"neighbours": 20, "binary": True},
        "popular": {"half_life_days": 7},
    }


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("nope.x=1", "unknown model 'nope'; known: als, bpr"),
        ("ease.max_itemz=5", "ease has no parameter 'max_itemz'; valid: l2, max_items, max_minutes"),
        ("ease.max_items=lots", "ease.max_items: Input should be a valid integer"),
        ("ease.l2=-1", "ease.l2: Input should be greater than 0"),
        ("ease=3", "write MODEL.PARAM=VALUE"),
    ],
)
def test_a_bad_parameter_says_what_is_valid(assignment: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_params([assignment])


def test_a_params_file_that_is_not_tables_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "p.toml"
    file.write_text("ease = 3\n")
    with pytest.raises(ValueError, match=r"'ease' must be a table \(\[ease\]\)"):
        parse_params([], file)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "0m", "-5m", "5d"])
def test_a_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
