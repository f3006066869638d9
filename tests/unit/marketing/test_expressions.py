"""The segment expression language: grammar, results against numpy/pandas oracles, and precise rejections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopsense.errors import ConfigError
from shopsense.marketing.expressions import (
    MAX_LENGTH,
    MAX_NESTING,
    Const,
    Expression,
    ExpressionError,
    Field,
    Logic,
    Unary,
)

INTERESTS = pa.list_(pa.struct([("tag", pa.string()), ("weight", pa.float64())]))


def _interest(*pairs: tuple[str, float]) -> list[dict[str, object]]:
    return [{"tag": tag, "weight": weight} for tag, weight in pairs]


# Six customers; row 2 knows almost nothing (NaN numbers, null strings, null interests).
PROFILES = pa.table(
    {
        "user_id": ["u0", "u1", "u2", "u3", "u4", "u5"],
        "recency_days": [5.0, 40.0, np.nan, 12.0, 30.0, 200.0],
        "monetary": [500.0, 80.0, np.nan, 1200.0, 0.0, 35.0],
        "f_score": pa.array([5, 2, None, 4, 3, 1], pa.int8()),
        "orders": pa.array([10, 2, 0, 7, 3, 1], pa.int64()),
        "preferred_channel": ["store", "web", None, "store", "app", "web"],
        "channel_store": [0.9, 0.1, np.nan, 0.6, 0.0, 0.2],
        "is_member": pa.array([True, False, None, True, False, True]),
        "as_of": pa.array([0] * 6, pa.timestamp("us", tz="UTC")),
        "interests": pa.array(
            [
                _interest(("category:Home", 0.5), ("category:Home/Kitchen", 0.3), ("brand:Acme", 1.0)),
                _interest(("category:Kitchen", 0.1), ("category:Garden/Kitchen", 0.05), ("brand:Zed", 1.0)),
                None,
                _interest(("category:Home/Kitchen", 0.25), ("category:Home/Kitchen/Knives", 0.6)),
                _interest(("category:Kitchenware", 0.9), ("category:Home", 0.1)),
                [],
            ],
            INTERESTS,
        ),
    }
)


def _mask(text: str, table: pa.Table = PROFILES) -> list[bool]:
    return Expression.parse(text).evaluate(table).tolist()


def _error(text: str, table: pa.Table = PROFILES) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        Expression.parse(text).evaluate(table)
    return caught.value


def test_the_documented_example_selects_recent_kitchen_lovers_who_shop_in_store() -> None:
    table = PROFILES.set_column(1, "recency_days", pa.array([5.0, 40.0, np.nan, 12.0, 30.0, 2.0]))
    text = 'recency_days <= 30 and interest("Kitchen") > 0.2 and preferred_channel == "store"'
    # u0: Kitchen 0.3, u3: Kitchen 0.25 (Knives is a deeper level, not Kitchen itself); u5 has no interests.
    assert _mask(text, table) == [True, False, False, True, False, False]


def test_and_binds_tighter_than_or_and_not_tighter_than_and() -> None:
    rows = [(a, b, c) for a in (False, True) for b in (False, True) for c in (False, True)]
    table = pa.table({name: [row[i] for row in rows] for i, name in enumerate("abc")})
    a, b, c = (np.array([row[i] for row in rows]) for i in range(3))
    assert _mask("a or b and c", table) == (a | (b & c)).tolist()
    assert _mask("(a or b) and c", table) == ((a | b) & c).tolist()
    assert _mask("not a and b", table) == (~a & b).tolist()
    assert _mask("not (a and b)", table) == (~(a & b)).tolist()
    assert _mask("a and not b or c", table) == ((a & ~b) | c).tolist()
    assert _mask("a == true and c != false", table) == (a & c).tolist()
    root = Expression.parse("a or b and c").root
    assert isinstance(root, Logic) and root.op == "or"
    assert root.operands[0] == Field("a", (0, 1))
    assert isinstance(root.operands[1], Logic) and root.operands[1].op == "and"


def test_long_chains_stay_flat_instead_of_nesting() -> None:
    root = Expression.parse(" and ".join(["true"] * 200)).root
    assert isinstance(root, Logic) and len(root.operands) == 200


def test_arithmetic_follows_precedence_and_unary_minus_folds_into_literals() -> None:
    money = np.array([500.0, 80.0, np.nan, 1200.0, 0.0, 35.0])
    orders = np.array([10, 2, 0, 7, 3, 1], dtype=float)
    with np.errstate(invalid="ignore"):
        assert _mask("monetary - orders * 10 > 100") == (money - orders * 10 > 100).tolist()
        assert _mask("(monetary - orders) * 2 >= 150") == ((money - orders) * 2 >= 150).tolist()
        assert _mask("-monetary < -100") == (money > 100).tolist()
    assert Expression.parse("-2.5 < 1").root == Expression.parse("-2.5 < 1").root
    assert Expression.parse("x > -2.5e1").root.right == Const(-25.0, (4, 10))  # type: ignore[union-attr]


def test_division_by_zero_is_unknown_not_infinite() -> None:
    # u4 has 3 orders and 0 spend; the orders / monetary ratio is unknown for it (and u2), never "huge".
    assert _mask("orders / monetary > 0") == [True, True, False, True, False, True]
    assert _mask("not (orders / monetary > 0)") == [False] * 6


def test_unknown_values_follow_three_valued_logic() -> None:
    # u2's spend is unknown: neither "> 100" nor its negation selects it, but "or true" does.
    assert _mask("monetary > 100") == [True, False, False, True, False, False]
    assert _mask("not (monetary > 100)") == [False, True, False, False, True, True]
    assert _mask("monetary > 100 or true") == [True] * 6
    assert _mask("monetary > 100 and false") == [False] * 6
    assert _mask('preferred_channel != "web"') == [True, False, False, True, True, False]
    assert _mask("is_member") == [True, False, False, True, False, True]
    assert _mask("not is_member") == [False, True, False, False, True, False]


def test_in_lists_over_numbers_strings_and_their_negation() -> None:
    assert _mask("f_score in [4, 5]") == [True, False, False, True, False, False]
    assert _mask("f_score not in [4, 5]") == [False, True, False, False, True, True]
    assert _mask("preferred_channel in ['web', \"app\"]") == [False, True, False, False, True, True]
    assert _mask('preferred_channel not in ["web"]') == [True, False, False, True, True, False]
    assert _mask("f_score in []") == [False] * 6
    assert _mask("is_member in [true]") == [True, False, False, True, False, True]


def test_interest_brand_and_channel_functions_read_the_profile_lists() -> None:
    text = 'interest("Kitchen") == 0.3 or interest("kitchen") > 0.149 and interest("KITCHEN") < 0.151'
    kitchen = Expression.parse(text).evaluate(PROFILES)
    # u1 sums its two Kitchen levels (0.1 + 0.05); Kitchenware (u4) and Knives (u3, deeper) do not count.
    assert kitchen.tolist() == [True, True, False, False, False, False]
    assert _mask('interest("Home/Kitchen") == 0.3') == [True, False, False, False, False, False]
    assert _mask('interest("category:Home") == 0.5') == [True, False, False, False, False, False]
    assert _mask('interest("Home") > 0') == [True, False, False, False, True, False]
    assert _mask('interest("Toys") == 0') == [True] * 6  # absent interest weighs 0, even with no list at all
    assert _mask('brand("acme") == 1 or brand("Zed") == 1') == [True, True, False, False, False, False]
    assert _mask('channel_share("store") >= 0.6') == [True, False, False, True, False, False]


def test_escapes_in_strings() -> None:
    table = pa.table({"name": ['say "hi"', "it's", "a\\b", "tab\there"]})
    assert _mask(r'name == "say \"hi\""', table) == [True, False, False, False]
    assert _mask(r"name == 'it\'s' or name == 'a\\b' or name == 'tab\there'", table) == [False, True, True, True]


def test_the_unknown_field_error_points_a_caret_at_the_field_and_suggests_the_right_name() -> None:
    error = _error('recncy_days <= 30 and channel == "store"')
    assert isinstance(error, ConfigError)
    assert str(error) == (
        "unknown field 'recncy_days' (did you mean 'recency_days'?)\n"
        '  recncy_days <= 30 and channel == "store"\n'
        "  ^^^^^^^^^^^"
    )
    assert (error.position, error.column, error.length) == (0, 1, 11)


@pytest.mark.parametrize(
    ("text", "message", "column", "length"),
    [
        ("recency_days < 3 and channel == 'x'", "unknown field 'channel'", 22, 7),
        ('interests("Kitchen") > 0', "unknown function 'interests' (did you mean 'interest'?)", 1, 9),
        ("__import__('os')", "unknown function '__import__'", 1, 10),
        ("__import__('os').system('ls')", "unexpected character '.'; attribute access is not allowed", 17, 1),
        ("monetary.real > 1", "unexpected character '.'; attribute access is not allowed", 9, 1),
        ('preferred_channel == "store', "unterminated string", 22, 6),
        ("monetary > 1 monetary", "unexpected name 'monetary' after a complete expression", 14, 8),
        ("monetary > 1 )", "unexpected ')' after a complete expression", 14, 1),
        ('monetary == "100"', "cannot compare a number with a string", 1, 17),
        ('preferred_channel < "web"', "a string can only be compared with == or !=, not <", 1, 25),
        ('monetary + "1" > 2', "'+' needs a number, but this is a string", 12, 3),
        ("monetary and true", "'and' needs a condition (true/false), but this is a number", 1, 8),
        ("not f_score", "'not' needs a condition (true/false), but this is a number", 5, 7),
        ("monetary * 2", "an expression needs a condition (true/false), but this is a number", 1, 12),
        ("f_score in [1, 'a']", "list item is a string but the value before 'in' is a number", 16, 3),
        ("f_score in [recency_days]", "lists after 'in' may hold only literal", 13, 12),
        ("f_score in [1 2]", "expected ',' or ']' in the list, found number '2'", 15, 1),
        ("1 < monetary < 5", "comparisons cannot be chained; join them with 'and'", 14, 1),
        ("interest(Kitchen) > 0", "interest() takes one quoted name", 10, 7),
        (
            "channel_share('stor') > 0",
            "no channel 'stor' in the profiles (channels: store) (did you mean 'store'?)",
            15,
            6,
        ),
        ("interests > 0", "field 'interests' has type list<", 1, 9),
        ("as_of > 0", "field 'as_of' has type timestamp", 1, 5),
        ("monetary = 5", "unexpected character '='; use '==' to compare", 10, 1),
        ("monetary > 5 && true", "unexpected character '&'; use 'and'", 14, 1),
        ("(monetary > 5", "expected ')' to close the '(' at column 1, found the end of the expression", 14, 1),
        ("monetary >", "expected a value, found the end of the expression", 11, 1),
        (r"user_id == 'a\qb'", "unknown escape '\\q' in string", 14, 2),
        ("   ", "empty expression", 1, 3),
    ],
)
def test_rejections_say_what_is_wrong_and_point_at_it(text: str, message: str, column: int, length: int) -> None:
    error = _error(text)
    assert message in error.message
    assert (error.column, error.length) == (column, length)
    caret_line = str(error).splitlines()[-1]
    assert caret_line == "  " + " " * (column - 1) + "^" * length


def test_too_long_and_too_deep_input_is_refused_before_parsing_it() -> None:
    long_error = _error("monetary > 1 or " * 200 + "true")
    assert f"limit is {MAX_LENGTH}" in long_error.message and long_error.column == MAX_LENGTH + 1
    assert len(str(long_error).splitlines()[1]) < 120  # the echo is a window, not 3,000 characters
    deep = "(" * (MAX_NESTING + 1) + "true" + ")" * (MAX_NESTING + 1)
    assert "nested too deeply" in _error(deep).message
    assert "nested too deeply" in _error("not " * 100 + "true").message
    assert "nested too deeply" in _error("- " * 100 + "1 > 0").message
    ok = "(" * MAX_NESTING + "true" + ")" * MAX_NESTING
    assert _mask(ok) == [True] * 6


def test_errors_carry_the_source_name_and_check_reads_no_rows() -> None:
    expression = Expression.parse("monetry > 1", source="segment 'big'")
    with pytest.raises(ExpressionError, match=r"^segment 'big': unknown field 'monetry'"):
        expression.check(PROFILES.schema)
    assert isinstance(Expression.parse("monetary > 1").root.left, Field)  # type: ignore[union-attr]
    assert isinstance(Expression.parse("not true").root, Unary)


PIECES = [
    "monetary",
    "f_score",
    "preferred_channel",
    "is_member",
    "interest",
    "(",
    ")",
    "[",
    "]",
    ",",
    '"web"',
    "'x",
    "1",
    "-",
    "2.5",
    "+",
    "*",
    "/",
    "==",
    "<",
    ">=",
    "!=",
    "and",
    "or",
    "not",
    "in",
    "true",
    ".",
    "=",
    "__x__",
    " ",
]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.lists(st.sampled_from(PIECES), max_size=14).map(" ".join)))
def test_any_text_either_evaluates_or_raises_an_expression_error(text: str) -> None:
    try:
        mask = Expression.parse(text).evaluate(PROFILES)
    except ExpressionError as error:
        assert 0 <= error.position <= len(text) and "^" in str(error)
    else:
        assert mask.dtype == bool and mask.shape == (PROFILES.num_rows,)


# --- property: random valid expressions equal a direct pandas (nullable, three-valued) computation ---

RNG = np.random.default_rng(7)
ROWS = 40
X = np.where(RNG.random(ROWS) < 0.15, np.nan, RNG.integers(-5, 6, ROWS).astype(float))
Y = np.where(RNG.random(ROWS) < 0.15, np.nan, RNG.normal(0, 3, ROWS).round(1))
S = np.where(RNG.random(ROWS) < 0.15, None, RNG.choice(["web", "store", "app"], ROWS)).tolist()
RANDOM_TABLE = pa.table({"x": X, "y": Y, "s": pa.array(S, pa.string())})
NUMBERS = {"x": pd.array(X, dtype="Float64"), "y": pd.array(Y, dtype="Float64")}
STRINGS = pd.array(S, dtype=pd.StringDtype("python", na_value=pd.NA))

OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}

ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}


def _with_unknown(found: np.ndarray, unknown: np.ndarray) -> pd.api.extensions.ExtensionArray:
    return pd.array(np.where(unknown, pd.NA, found), dtype="boolean")


numbers = st.one_of(
    st.sampled_from(["x", "y"]).map(lambda name: (name, NUMBERS[name])),
    st.integers(-6, 6).map(lambda v: (str(v), pd.array([float(v)] * ROWS, dtype="Float64"))),
)


@st.composite
def arithmetic(draw: st.DrawFn) -> tuple[str, Any]:
    text, value = draw(numbers)
    if draw(st.booleans()):
        op = draw(st.sampled_from(["+", "-", "*", "/"]))
        if op == "/":
            factor = draw(st.sampled_from([2, 4, -5]))  # nonzero: x / 0 is unknown here, infinite in pandas
            return f"{text} / {factor}", value / factor
        other_text, other = draw(numbers)
        return f"({text} {op} {other_text})", ARITHMETIC[op](value, other)
    return text, value


@st.composite
def comparison(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["number", "string", "in_number", "in_string"]))
    if kind == "number":
        (left, lvalue), (right, rvalue) = draw(arithmetic()), draw(arithmetic())
        op = draw(st.sampled_from(list(OPS)))
        return f"{left} {op} {right}", OPS[op](lvalue, rvalue)
    if kind == "string":
        op = draw(st.sampled_from(["==", "!="]))
        word = draw(st.sampled_from(["web", "store", "app", "fax"]))
        return f's {op} "{word}"', OPS[op](STRINGS, word)
    negated = draw(st.booleans())
    if kind == "in_number":
        values = draw(st.lists(st.integers(-5, 5), max_size=4))
        column = draw(st.sampled_from(["x", "y"]))
        found = np.asarray(NUMBERS[column].isin([float(v) for v in values]), dtype=bool)
        result = _with_unknown(found, NUMBERS[column].isna())
        items, text = ", ".join(map(str, values)), column
    else:
        words = draw(st.lists(st.sampled_from(["web", "store", "app"]), max_size=3))
        result = _with_unknown(np.asarray(STRINGS.isin(words), dtype=bool), STRINGS.isna())
        items, text = ", ".join(f"'{w}'" for w in words), "s"
    return f"{text} {'not in' if negated else 'in'} [{items}]", (~result if negated else result)


conditions = st.recursive(
    comparison(),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda p: (f"({p[0][0]}) and ({p[1][0]})", p[0][1] & p[1][1])),
        st.tuples(inner, inner).map(lambda p: (f"{p[0][0]} or {p[1][0]}", p[0][1] | p[1][1])),
        inner.map(lambda c: (f"not ({c[0]})", ~c[1])),
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(conditions)
def test_random_expressions_match_a_direct_three_valued_computation(case: tuple[str, Any]) -> None:
    text, oracle = case
    expected = pd.array(oracle, dtype="boolean").fillna(False).to_numpy(bool)
    np.testing.assert_array_equal(Expression.parse(text).evaluate(RANDOM_TABLE), expected, err_msg=text)
