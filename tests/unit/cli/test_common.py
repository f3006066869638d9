"""What every ``--json`` output shares: strict JSON a reader that refuses NaN can parse."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from shopsense.cli.common import echo_json


def _strict(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_undefined_numbers_come_out_as_null_and_the_rest_as_given(capsys: pytest.CaptureFixture[str]) -> None:
    when = datetime(2026, 1, 2, tzinfo=UTC)
    echo_json({"auc": math.nan, "gain": [1.5, math.inf, -math.inf], "nested": {"at": when, "n": 3}, "pair": (1, 2)})
    assert _strict(capsys.readouterr().out) == {
        "auc": None,
        "gain": [1.5, None, None],
        "nested": {"at": str(when), "n": 3},
        "pair": [1, 2],
    }


def test_compact_output_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    echo_json({"a": [1, 2]}, indent=None)
    assert capsys.readouterr().out == '{"a": [1, 2]}\n'
