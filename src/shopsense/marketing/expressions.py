"""A small, safe expression language that picks customers by their profile.

Marketers write ``recency_days <= 30 and interest("Kitchen") > 0.2 and preferred_channel == "store"``;
the text comes from config files, the CLI and the API, so it is never handed to ``eval``: it is
tokenised and parsed here into a tree of a few node types, type-checked against the profile
table's schema, and evaluated with numpy/pyarrow over the whole table at once.

Unknown values follow SQL: a comparison with NaN/null is *unknown*, ``and``/``or``/``not`` use
three-valued (Kleene) logic, and the final mask keeps only rows where the condition is known true,
so ``not (monetary > 100)`` does not select customers whose spend is unknown. Length and nesting
are capped so a hostile expression cannot exhaust the parser.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shopsense.errors import ConfigError

MAX_LENGTH = 2_000
"""Longest accepted expression, in characters."""
MAX_NESTING = 32
"""Deepest accepted nesting of parentheses, ``not`` and unary minus."""
FUNCTIONS = ("interest", "brand", "channel_share")
"""The only callable names; each takes one quoted name and returns a number per customer."""
KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false"})
COMPARISONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}
_HINTS = {"=": "use '==' to compare", "&": "use 'and'", "|": "use 'or'", "!": "use 'not' or '!='"}
_HINTS[";"] = _HINTS["`"] = "expressions are one condition, not statements"
_HINTS["."] = "attribute access is not allowed"
_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<number>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>==|!=|<=|>=|[<>+\-*/()\[\],])""",
    re.VERBOSE | re.ASCII,
)
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}

Kind: TypeAlias = Literal["number", "string", "bool"]
Span: TypeAlias = tuple[int, int]
BoolArray: TypeAlias = npt.NDArray[np.bool_]


class ExpressionError(ConfigError):
    """An expression that cannot be parsed, type-checked or evaluated, with a caret under the bad part.

    ``position`` is the 0-based offset of the bad part in ``text`` (``column`` is 1-based).
    """

    def __init__(self, message: str, text: str, span: Span, source: str | None = None) -> None:
        self.message, self.text, self.source = message, text, source
        self.position, self.length = span[0], max(1, span[1] - span[0])
        head = f"{source}: {message}" if source else message
        super().__init__(f"{head}\n{_caret_lines(text, self.position, self.length)}")

    @property
    def column(self) -> int:
        """1-based column of the bad part, as editors count."""
        return self.position + 1


def _caret_lines(text: str, start: int, length: int, width: int = 100) -> str:
    """The expression (a window of it when long) and a caret line under ``[start, start + length)``."""
    flat = re.sub(r"\s", " ", text)
    left = 0 if len(flat) <= width else max(0, min(start - width // 3, len(flat) - width))
    shown = flat[left : left + width]
    prefix = "..." if left > 0 else ""
    suffix = "..." if left + width < len(flat) else ""
    carets = "^" * max(1, min(length, left + width - start))
    return f"  {prefix}{shown}{suffix}\n  {' ' * (len(prefix) + start - left)}{carets}"


@dataclass(frozen=True)
class Token:
    """One lexical unit and where it starts, so every error can point at it."""

    kind: Literal["number", "string", "name", "keyword", "op", "end"]
    text: str
    start: int
    value: float | str | None = None

    @property
    def span(self) -> Span:
        return (self.start, self.start + len(self.text))

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the expression"
        return repr(self.text) if self.kind == "op" else f"{self.kind} {self.text!r}"


@dataclass(frozen=True)
class Const:
    """A literal number, string or boolean."""

    value: float | str | bool
    span: Span


@dataclass(frozen=True)
class Field:
    """A profile column, resolved against the table when evaluated."""

    name: str
    span: Span


@dataclass(frozen=True)
class Call:
    """A whitelisted function applied to one quoted name."""

    name: str
    argument: str
    span: Span
    argument_span: Span


@dataclass(frozen=True)
class Unary:
    """``not`` on a condition or ``-`` on a number."""

    op: Literal["not", "-"]
    operand: Node
    span: Span


@dataclass(frozen=True)
class Logic:
    """``and`` / ``or`` over two or more conditions, kept flat so long chains do not nest."""

    op: Literal["and", "or"]
    operands: tuple[Node, ...]
    span: Span


@dataclass(frozen=True)
class Arith:
    """A left-to-right chain of one precedence level: ``a + b - c`` or ``a * b / c``."""

    first: Node
    rest: tuple[tuple[str, Node], ...]
    span: Span


@dataclass(frozen=True)
class Compare:
    """One comparison; chains like ``a < b < c`` are refused rather than guessed."""

    op: str
    left: Node
    right: Node
    span: Span


@dataclass(frozen=True)
class InList:
    """``x in [..]`` / ``x not in [..]`` over literal values."""

    operand: Node
    items: tuple[Const, ...]
    negated: bool
    span: Span


Node: TypeAlias = Const | Field | Call | Unary | Logic | Arith | Compare | InList


def tokenize(text: str, source: str | None = None) -> list[Token]:
    """Split ``text`` into tokens, ending with an ``end`` token; bad characters raise with their position."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            char = text[pos]
            if char in "\"'":
                raise ExpressionError("unterminated string", text, (pos, len(text)), source)
            hint = f"; {_HINTS[char]}" if char in _HINTS else ""
            raise ExpressionError(f"unexpected character {char!r}{hint}", text, (pos, pos + 1), source)
        kind, raw = match.lastgroup, match.group()
        if kind == "number":
            tokens.append(Token("number", raw, pos, float(raw)))
        elif kind == "string":
            tokens.append(Token("string", raw, pos, _unescape(raw, pos, text, source)))
        elif kind == "name":
            tokens.append(
                Token("keyword", raw, pos, raw.lower()) if raw.lower() in KEYWORDS else Token("name", raw, pos)
            )
        elif kind == "op":
            tokens.append(Token("op", raw, pos))
        pos = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def _unescape(raw: str, start: int, text: str, source: str | None) -> str:
    def replace(m: re.Match[str]) -> str:
        if m.group(1) not in _ESCAPES:
            at = start + 1 + m.start()
            raise ExpressionError(f"unknown escape '\\{m.group(1)}' in string", text, (at, at + 2), source)
        return _ESCAPES[m.group(1)]

    return re.sub(r"\\(.)", replace, raw[1:-1], flags=re.DOTALL)


class _Parser:
    """Recursive descent, one method per precedence level, loosest first: or, and, not, comparison, +-, */, unary."""

    def __init__(self, text: str, source: str | None) -> None:
        self.text, self.source = text, source
        self.tokens = tokenize(text, source)
        self.index = 0
        self.nesting = 0

    def error(self, message: str, span: Span) -> ExpressionError:
        return ExpressionError(message, self.text, span, self.source)

    @property
    def peek(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def at(self, kind: str, *texts: str) -> bool:
        token = self.peek
        return token.kind == kind and (not texts or (token.value if kind == "keyword" else token.text) in texts)

    def expect(self, text: str, context: str) -> Token:
        if not self.at("op", text):
            raise self.error(f"expected '{text}' {context}, found {self.peek.describe()}", self.peek.span)
        return self.advance()

    @contextmanager
    def nested(self, token: Token) -> Iterator[None]:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self.error(f"expression is nested too deeply (more than {MAX_NESTING} levels)", token.span)
        yield
        self.nesting -= 1

    def parse(self) -> Node:
        node = self.logic("or")
        if not self.at("end"):
            raise self.error(f"unexpected {self.peek.describe()} after a complete expression", self.peek.span)
        return node

    def logic(self, op: Literal["and", "or"]) -> Node:
        operand: Callable[[], Node] = (lambda: self.logic("and")) if op == "or" else self.negation
        items = [operand()]
        while self.at("keyword", op):
            self.advance()
            items.append(operand())
        return items[0] if len(items) == 1 else Logic(op, tuple(items), (items[0].span[0], items[-1].span[1]))

    def negation(self) -> Node:
        if not self.at("keyword", "not"):
            return self.comparison()
        token = self.advance()
        with self.nested(token):
            operand = self.negation()
        return Unary("not", operand, (token.start, operand.span[1]))

    def comparison(self) -> Node:
        left = self.arith(0)
        if self.at("op", *COMPARISONS):
            op = self.advance().text
            node: Node = Compare(op, left, right := self.arith(0), (left.span[0], right.span[1]))
        elif self.at("keyword", "in") or (self.at("keyword", "not") and self.tokens[self.index + 1].value == "in"):
            negated = self.advance().value == "not"
            if negated:
                self.advance()
            items, end = self.literal_list()
            node = InList(left, items, negated, (left.span[0], end))
        else:
            return left
        if self.at("op", *COMPARISONS) or self.at("keyword", "in"):
            raise self.error("comparisons cannot be chained; join them with 'and'", self.peek.span)
        return node

    def literal_list(self) -> tuple[tuple[Const, ...], int]:
        self.expect("[", "to open the list after 'in'")
        items: list[Const] = []
        while not self.at("op", "]"):
            if items:
                self.expect(",", "or ']' in the list")
            item = self.unary()
            if not isinstance(item, Const):
                raise self.error("lists after 'in' may hold only literal numbers, strings or booleans", item.span)
            items.append(item)
        return tuple(items), self.advance().span[1]

    def arith(self, level: int) -> Node:
        ops = ("+", "-") if level == 0 else ("*", "/")
        operand: Callable[[], Node] = (lambda: self.arith(1)) if level == 0 else self.unary
        first = operand()
        rest: list[tuple[str, Node]] = []
        while self.at("op", *ops):
            rest.append((self.advance().text, operand()))
        return first if not rest else Arith(first, tuple(rest), (first.span[0], rest[-1][1].span[1]))

    def unary(self) -> Node:
        if not self.at("op", "-"):
            return self.primary()
        token = self.advance()
        with self.nested(token):
            operand = self.unary()
        span = (token.start, operand.span[1])
        if isinstance(operand, Const) and isinstance(operand.value, float):
            return Const(-operand.value, span)
        return Unary("-", operand, span)

    def primary(self) -> Node:
        token = self.advance()
        if token.kind in ("number", "string"):
            assert token.value is not None
            return Const(token.value, token.span)
        if token.kind == "keyword" and token.value in ("true", "false"):
            return Const(token.value == "true", token.span)
        if token.kind == "name":
            return self.call(token) if self.at("op", "(") else Field(token.text, token.span)
        if token.kind == "op" and token.text == "(":
            with self.nested(token):
                inner = self.logic("or")
            self.expect(")", f"to close the '(' at column {token.start + 1}")
            return inner
        raise self.error(f"expected a value, found {token.describe()}", token.span)

    def call(self, name: Token) -> Call:
        if name.text not in FUNCTIONS:
            known = f"{_did_you_mean(name.text, FUNCTIONS)}; functions: {', '.join(FUNCTIONS)}"
            raise self.error(f"unknown function '{name.text}'{known}", name.span)
        self.advance()
        argument = self.advance()
        if argument.kind != "string":
            usage = f'takes one quoted name, e.g. {name.text}("Kitchen")'
            raise self.error(f"{name.text}() {usage}, found {argument.describe()}", argument.span)
        end = self.expect(")", f"after the argument of {name.text}()").span[1]
        return Call(name.text, str(argument.value), (name.start, end), argument.span)


def _did_you_mean(name: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _field_kind(data_type: pa.DataType) -> Kind | None:
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    if pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
        return "number"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return "string"
    return "bool" if pa.types.is_boolean(data_type) else None


@dataclass(frozen=True)
class _Truth:
    """Three-valued truth per row: ``true`` and ``false`` are both unset where the answer is unknown."""

    true: BoolArray
    false: BoolArray

    @classmethod
    def of(cls, result: np.ndarray, known: BoolArray) -> _Truth:
        return cls(result & known, ~result & known)

    @classmethod
    def of_arrow(cls, result: pa.ChunkedArray) -> _Truth:
        def filled(values: pa.ChunkedArray) -> BoolArray:
            return np.asarray(pc.fill_null(values, False).to_numpy(), dtype=bool)

        return cls(filled(result), filled(pc.invert(result)))

    def invert(self) -> _Truth:
        return _Truth(self.false, self.true)

    def combine(self, op: str, other: _Truth) -> _Truth:
        if op == "and":
            return _Truth(self.true & other.true, self.false | other.false)
        return _Truth(self.true | other.true, self.false & other.false)


Value: TypeAlias = "npt.NDArray[np.float64] | pa.ChunkedArray | _Truth"


def _kind(value: Value) -> Kind:
    return "bool" if isinstance(value, _Truth) else "number" if isinstance(value, np.ndarray) else "string"


class _Evaluator:
    """Walks the tree once over a whole table, checking each operator's operand kinds as it combines them.

    Numbers are float64 arrays (NaN: unknown), strings arrow arrays (null: unknown), conditions ``_Truth``.
    Run over a zero-row table, the same walk is the type check: every error is raised before data is read.
    """

    def __init__(self, table: pa.Table, text: str, source: str | None) -> None:
        self.table, self.text, self.source = table, text, source
        self.rows = table.num_rows
        self._interests: tuple[np.ndarray, pa.ChunkedArray, np.ndarray] | None = None

    def error(self, message: str, span: Span) -> ExpressionError:
        return ExpressionError(message, self.text, span, self.source)

    def truth(self, node: Node, role: str) -> _Truth:
        value = self.value(node)
        if not isinstance(value, _Truth):
            raise self.error(f"{role} needs a condition (true/false), but this is a {_kind(value)}", node.span)
        return value

    def number(self, node: Node, role: str) -> npt.NDArray[np.float64]:
        value = self.value(node)
        if not isinstance(value, np.ndarray):
            raise self.error(f"{role} needs a number, but this is a {_kind(value)}", node.span)
        return value

    def value(self, node: Node) -> Value:
        if isinstance(node, Const):
            return self.constant(node.value)
        if isinstance(node, Field):
            return self.field(node)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Unary):
            if node.op == "not":
                return self.truth(node.operand, "'not'").invert()
            return -self.number(node.operand, "unary '-'")
        if isinstance(node, Logic):
            truth = self.truth(node.operands[0], f"'{node.op}'")
            for operand in node.operands[1:]:
                truth = truth.combine(node.op, self.truth(operand, f"'{node.op}'"))
            return truth
        if isinstance(node, Arith):
            return self.arith(node)
        if isinstance(node, Compare):
            return self.compare(node)
        return self.membership(node)

    def constant(self, value: float | str | bool) -> Value:
        if isinstance(value, bool):
            return _Truth(np.full(self.rows, value), np.full(self.rows, not value))
        if isinstance(value, str):
            return pa.chunked_array([pa.repeat(pa.scalar(value, pa.string()), self.rows)])
        return np.full(self.rows, value)

    def field(self, node: Field) -> Value:
        names = self.table.column_names
        if node.name not in names:
            raise self.error(f"unknown field '{node.name}'{_did_you_mean(node.name, names)}", node.span)
        column = self.table.column(node.name)
        kind = _field_kind(column.type)
        if kind is None:
            hint = "; use interest(...) or brand(...)" if node.name == "interests" else ""
            raise self.error(
                f"field '{node.name}' has type {column.type}, which expressions cannot use{hint}", node.span
            )
        if kind == "number":
            return np.asarray(pc.cast(column, pa.float64()).to_numpy(), dtype=np.float64)
        return pc.cast(column, pa.string()) if kind == "string" else _Truth.of_arrow(column)

    def arith(self, node: Arith) -> npt.NDArray[np.float64]:
        total = self.number(node.first, f"'{node.rest[0][0]}'")
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for op, operand in node.rest:
                other = self.number(operand, f"'{op}'")
                if op == "/":  # x / 0 is unknown, not infinity, which would pass every '>' test
                    total = np.divide(total, other, out=np.full(self.rows, np.nan), where=other != 0)
                else:
                    total = total + other if op == "+" else total - other if op == "-" else total * other
        return total

    def compare(self, node: Compare) -> _Truth:
        left, right = self.value(node.left), self.value(node.right)
        if _kind(left) != _kind(right):
            raise self.error(f"cannot compare a {_kind(left)} with a {_kind(right)}", node.span)
        if node.op not in ("==", "!=") and not isinstance(left, np.ndarray):
            raise self.error(f"a {_kind(left)} can only be compared with == or !=, not {node.op}", node.span)
        if isinstance(left, np.ndarray) and isinstance(right, np.ndarray):
            with np.errstate(invalid="ignore"):
                return _Truth.of(COMPARISONS[node.op](left, right), ~np.isnan(left) & ~np.isnan(right))
        if isinstance(left, _Truth) and isinstance(right, _Truth):
            same = _Truth(
                (left.true & right.true) | (left.false & right.false),
                (left.true & right.false) | (left.false & right.true),
            )
            return same if node.op == "==" else same.invert()
        return _Truth.of_arrow(pc.equal(left, right) if node.op == "==" else pc.not_equal(left, right))

    def membership(self, node: InList) -> _Truth:
        operand = self.value(node.operand)
        for item in node.items:
            if _kind(found := self.value(item)) != _kind(operand):
                message = f"list item is a {_kind(found)} but the value before 'in' is a {_kind(operand)}"
                raise self.error(message, item.span)
        values = [item.value for item in node.items]
        if isinstance(operand, _Truth):
            hit = (operand.true & (True in values)) | (operand.false & (False in values))
            truth = _Truth(hit, (operand.true | operand.false) & ~hit)
        elif isinstance(operand, np.ndarray):
            truth = _Truth.of(np.isin(operand, np.asarray(values, dtype=float)), ~np.isnan(operand))
        else:
            found_in = pc.is_in(operand, value_set=pa.array(values, pa.string()))
            truth = _Truth.of_arrow(pc.if_else(pc.is_valid(operand), found_in, pa.scalar(None, pa.bool_())))
        return truth.invert() if node.negated else truth

    def call(self, node: Call) -> npt.NDArray[np.float64]:
        if node.name == "channel_share":
            return self.channel_share(node)
        if "interests" not in self.table.column_names or not pa.types.is_list(self.table.column("interests").type):
            raise self.error(f"{node.name}() needs an 'interests' list column, which this table lacks", node.span)
        owners, tags, weights = self.interests()
        key = node.argument.lower()
        if node.name == "brand" or ":" in key:
            match = pc.equal(tags, key if ":" in key else f"brand:{key}")
        else:  # a category name matches its own level at any depth: "category:Kitchen", "category:Home/Kitchen"
            ends = pc.or_(pc.equal(tags, f"category:{key}"), pc.ends_with(tags, f"/{key}"))
            match = pc.and_(pc.starts_with(tags, "category:"), ends)
        chosen = np.asarray(pc.fill_null(match, False).to_numpy(), dtype=bool)
        return np.bincount(owners[chosen], weights=weights[chosen], minlength=self.rows).astype(np.float64)

    def channel_share(self, node: Call) -> npt.NDArray[np.float64]:
        names = self.table.column_names
        column = f"channel_{node.argument}"
        if column not in names or _field_kind(self.table.column(column).type) != "number":
            channels = [n.removeprefix("channel_") for n in names if n.startswith("channel_")]
            message = f"no channel '{node.argument}' in the profiles (channels: {', '.join(channels) or 'none'})"
            raise self.error(message + _did_you_mean(node.argument, channels), node.argument_span)
        return np.asarray(pc.cast(self.table.column(column), pa.float64()).to_numpy(), dtype=np.float64)

    def interests(self) -> tuple[np.ndarray, pa.ChunkedArray, np.ndarray]:
        """Every (row, lower-cased tag, weight) of the interests column, flattened once per evaluation."""
        if self._interests is None:
            lists = self.table.column("interests").combine_chunks()
            entries = lists.flatten()
            owners = np.asarray(pc.list_parent_indices(lists).to_numpy(), dtype=np.int64)
            tags = pc.utf8_lower(pa.chunked_array([entries.field("tag")]))
            weights = np.asarray(pc.fill_null(entries.field("weight"), 0.0).to_numpy(zero_copy_only=False), float)
            self._interests = (owners, tags, weights)
        return self._interests


@dataclass(frozen=True)
class Expression:
    """A parsed condition over profile columns; ``source`` names where it came from in error messages."""

    text: str
    root: Node
    source: str | None = None

    @classmethod
    def parse(cls, text: str, source: str | None = None) -> Expression:
        """Parse ``text`` (syntax only: fields are checked against a table by ``check``/``evaluate``).

        Raises:
            ExpressionError: empty, too long, or not valid syntax; the error points at the bad token.
        """
        if len(text) > MAX_LENGTH:
            message = f"expression is {len(text)} characters long; the limit is {MAX_LENGTH}"
            raise ExpressionError(message, text, (MAX_LENGTH, len(text)), source)
        if not text.strip():
            raise ExpressionError("empty expression", text, (0, len(text)), source)
        return cls(text, _Parser(text, source).parse(), source)

    def check(self, schema: pa.Schema) -> None:
        """Fail unless every field exists and every operator gets the types it needs; reads no data.

        Raises:
            ExpressionError: pointing at the unknown field, bad function argument or mistyped operand.
        """
        self._truth(schema.empty_table())

    def evaluate(self, table: pa.Table) -> BoolArray:
        """One boolean per row of ``table``: true where the condition is known to hold (unknown counts as false).

        Raises:
            ExpressionError: as ``check``, before any row is evaluated.
        """
        self.check(table.schema)
        return self._truth(table).true

    def _truth(self, table: pa.Table) -> _Truth:
        return _Evaluator(table, self.text, self.source).truth(self.root, "an expression")
