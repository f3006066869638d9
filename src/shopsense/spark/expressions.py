"""Segment expressions compiled to Spark column expressions: the language of ``marketing.expressions``.

The text is parsed and type-checked by the in-process :class:`~shopsense.marketing.expressions.Expression`
against the profile schema (same errors, same carets), then its tree is turned into one boolean
``Column``. Unknown values follow the same SQL rules: NaN counts as unknown (Spark would order NaN above
every number, so NaN becomes null before any comparison), ``x / 0`` is unknown, and ``and``/``or``/``not``
are Kleene logic, which is Spark's own for null booleans. A row is selected where the condition is true.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from shopsense.marketing.expressions import (
    Arith,
    Call,
    Compare,
    Const,
    Expression,
    Field,
    InList,
    Logic,
    Node,
    Unary,
    _field_kind,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


def _known(value: Column) -> Column:
    """A number with NaN as null (unknown), as the in-process evaluator treats NaN."""
    from pyspark.sql import functions as F

    return F.when(~F.isnan(value), value)


class _Compiler:
    """Walks a tree that ``Expression.check`` accepted; the kinds come from the same schema."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema

    def kind(self, node: Node) -> str:
        if isinstance(node, Const):
            return "bool" if isinstance(node.value, bool) else "string" if isinstance(node.value, str) else "number"
        if isinstance(node, Field):
            return str(_field_kind(self.schema.field(node.name).type))
        if isinstance(node, (Call, Arith)) or (isinstance(node, Unary) and node.op == "-"):
            return "number"
        return "bool"

    def column(self, node: Node) -> Column:
        from pyspark.sql import functions as F

        if isinstance(node, Const):
            value = node.value
            return F.lit(float(value)) if self.kind(node) == "number" else F.lit(value)
        if isinstance(node, Field):
            kind = self.kind(node)
            if kind == "number":
                return _known(F.col(f"`{node.name}`").cast("double"))
            return F.col(f"`{node.name}`").cast("string" if kind == "string" else "boolean")
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Unary):
            inner = self.column(node.operand)
            return ~inner if node.op == "not" else -inner
        if isinstance(node, Logic):
            out = self.column(node.operands[0])
            for operand in node.operands[1:]:
                out = (out & self.column(operand)) if node.op == "and" else (out | self.column(operand))
            return out
        if isinstance(node, Arith):
            total = self.column(node.first)
            for op, operand in node.rest:
                other = self.column(operand)
                if op == "/":  # x / 0 is unknown, not infinity
                    total = F.when(other != 0, total / other)
                else:
                    total = total + other if op == "+" else total - other if op == "-" else total * other
                total = _known(total)  # inf - inf, 0 * inf: NaN in-process, unknown there
            return total
        if isinstance(node, Compare):
            left, right = self.column(node.left), self.column(node.right)
            return {
                "==": left == right,
                "!=": left != right,
                "<": left < right,
                "<=": left <= right,
                ">": left > right,
                ">=": left >= right,
            }[node.op]
        assert isinstance(node, InList)
        tested = self.column(node.operand)
        values = [item.value for item in node.items]
        if self.kind(node.operand) == "number":
            values = [float(v) for v in values]
        hit = tested.isin(values) if values else F.when(tested.isNotNull(), F.lit(False))
        return ~hit if node.negated else hit

    def call(self, node: Call) -> Column:
        from pyspark.sql import functions as F

        if node.name == "channel_share":
            return _known(F.col(f"`channel_{node.argument}`").cast("double"))
        key = node.argument.lower()
        if node.name == "brand" or ":" in key:
            target = key if ":" in key else f"brand:{key}"

            def match(tag: Column) -> Column:
                return tag == F.lit(target)
        else:

            def match(tag: Column) -> Column:
                own_level = (tag == F.lit(f"category:{key}")) | tag.endswith(f"/{key}")
                return tag.startswith("category:") & own_level

        chosen = F.filter(
            F.coalesce(F.col("interests"), F.array()), lambda e: F.coalesce(match(F.lower(e["tag"])), F.lit(False))
        )
        return F.aggregate(chosen, F.lit(0.0), lambda acc, e: acc + F.coalesce(e["weight"].cast("double"), F.lit(0.0)))


def compile_expression(expression: Expression | str, schema: pa.Schema) -> Column:
    """One boolean column, true exactly where ``expression.evaluate`` would be true on a table of ``schema``.

    Raises:
        ExpressionError: as ``Expression.check``: unknown field, bad argument, mistyped operand.
    """
    from pyspark.sql import functions as F

    parsed = Expression.parse(expression) if isinstance(expression, str) else expression
    parsed.check(schema)
    return F.coalesce(_Compiler(schema).column(parsed.root), F.lit(False))


def select_members(profiles: DataFrame, schema: pa.Schema, expressions: dict[str, str]) -> dict[str, set[str]]:
    """The user ids each named expression selects among ``profiles`` (one pass over the table)."""
    from pyspark.sql import functions as F

    compiled = {name: compile_expression(Expression.parse(text, name), schema) for name, text in expressions.items()}
    flags = profiles.select("user_id", *(column.alias(f"s{n}") for n, column in enumerate(compiled.values())))
    table = flags.where(F.greatest(*(F.col(f"s{n}") for n in range(len(compiled))), F.lit(False))).toArrow()
    users = table.column("user_id").to_pylist()
    return {
        name: {u for u, hit in zip(users, table.column(f"s{n}").to_pylist(), strict=True) if hit}
        for n, name in enumerate(compiled)
    }
