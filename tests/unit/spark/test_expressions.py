"""Segment expressions compiled to Spark columns select the same customers as the in-process evaluator."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopsense.features.profiles import build_profiles
from shopsense.marketing.expressions import Expression, ExpressionError
from shopsense.spark.expressions import compile_expression, select_members

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

NUMBER_FIELDS = ("recency_days", "frequency", "monetary", "r_score", "orders", "returns_share", "churn_probability")
STRING_FIELDS = {
    "lifecycle": ("new", "active", "at_risk", "lapsed", "prospect"),
    "rfm_segment": ("Champions", "At risk", "Lost", "Prospect"),
    "preferred_channel": ("web", "app", "store", "fax"),
    "price_band": ("budget", "mid", "premium"),
}
CALLS = ('interest("Home")', 'interest("category:home/home 1")', 'brand("Home brand 1")', 'channel_share("web")')


@pytest.fixture(scope="module")
def profiles(shop_tables: tuple[pa.Table, pa.Table]) -> pa.Table:
    events, items = shop_tables
    as_of = pc.max(events.column("timestamp")).as_py() + timedelta(seconds=1)
    return build_profiles(events, items, as_of)


@pytest.fixture(scope="module")
def profile_frame(spark: SparkSession, profiles: pa.Table) -> DataFrame:
    return spark.createDataFrame(profiles).cache()


numbers = st.deferred(
    lambda: st.one_of(
        st.sampled_from(NUMBER_FIELDS),
        st.sampled_from(CALLS),
        st.sampled_from(["0", "1", "2.5", "30", "100", "-1", "0.2"]),
        st.tuples(numbers, st.sampled_from(["+", "-", "*", "/"]), numbers).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    )
)


@st.composite
def conditions(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(st.sampled_from(["compare", "string", "in", "bool"] + (["logic", "not"] if depth < 3 else [])))
    if kind == "compare":
        return f"{draw(numbers)} {draw(st.sampled_from(['<', '<=', '>', '>=', '==', '!=']))} {draw(numbers)}"
    if kind == "string":
        field = draw(st.sampled_from(sorted(STRING_FIELDS)))
        return f'{field} {draw(st.sampled_from(["==", "!="]))} "{draw(st.sampled_from(STRING_FIELDS[field]))}"'
    if kind == "in":
        negated = "not in" if draw(st.booleans()) else "in"
        if draw(st.booleans()):
            field = draw(st.sampled_from(sorted(STRING_FIELDS)))
            values = draw(st.lists(st.sampled_from(STRING_FIELDS[field]), max_size=3))
            return f"{field} {negated} [{', '.join(repr(v).replace(chr(39), chr(34)) for v in values)}]"
        values = draw(st.lists(st.integers(0, 5), max_size=3))
        return f"{draw(st.sampled_from(NUMBER_FIELDS))} {negated} [{', '.join(map(str, values))}]"
    if kind == "bool":
        return draw(st.sampled_from(["true", "false", "(recency_days > 10) == (frequency > 1)"]))
    if kind == "not":
        return f"not ({draw(conditions(depth + 1))})"
    left, right = draw(conditions(depth + 1)), draw(conditions(depth + 1))
    return f"({left}) {draw(st.sampled_from(['and', 'or']))} ({right})"


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(conditions(), min_size=8, max_size=12))
def test_spark_segments_select_the_same_customers(
    profiles: pa.Table, profile_frame: DataFrame, texts: list[str]
) -> None:
    definitions = {f"s{n}": text for n, text in enumerate(texts)}
    got = select_members(profile_frame, profiles.schema, definitions)
    users = profiles.column("user_id").to_numpy(zero_copy_only=False)
    for name, text in definitions.items():
        expected = set(users[Expression.parse(text).evaluate(profiles)].tolist())
        assert got[name] == expected, text


def test_compiling_reports_the_in_process_errors(spark: SparkSession, profiles: pa.Table) -> None:
    with pytest.raises(ExpressionError, match="unknown field 'monetry'"):
        compile_expression("monetry > 1", profiles.schema)
    with pytest.raises(ExpressionError, match="cannot compare a string with a number"):
        compile_expression("lifecycle > 1", profiles.schema)
