"""Advice for whole-column mistakes, read off the failing values themselves.

When every timestamp fails because the file writes ``06/12/2026 10:00``, or every channel
fails because the shop calls its store ``shop``, fifty identical problem lines do not say
what to do. These hints do: they try the failing values against likely timestamp formats
(one vectorised DuckDB pass over a bounded sample) and name the option that maps a value.
They run only after rows failed, never on the path of a clean import.
"""

from __future__ import annotations

import duckdb

from shopsense.ingest.validate import FieldPlan, Hint, Rule, ident, lit

_DATES = (
    "%d/%m/%Y", "%m/%d/%Y", "%d/%m/%y", "%m/%d/%y", "%d.%m.%Y", "%d.%m.%y", "%d-%m-%Y", "%m-%d-%Y",
    "%Y/%m/%d", "%Y.%m.%d", "%Y-%m-%d", "%d %b %Y", "%d %B %Y", "%b %d %Y", "%b %d, %Y", "%B %d, %Y", "%d-%b-%Y",
)  # fmt: skip
_TIMES = ("", " %H:%M", " %H:%M:%S", " %H:%M:%S.%f", " %I:%M %p", " %I:%M:%S %p", "T%H:%M", "T%H:%M:%S")
FORMATS = tuple(d + t for d in _DATES for t in _TIMES)
"""strptime formats tried on values that did not parse; ISO 8601 needs none."""
_UNIX = {"unix_s": r"^-?[0-9]{9,10}(\.[0-9]+)?$", "unix_ms": r"^-?[0-9]{12,13}$"}
_ISO = "ISO 8601"
_SAMPLE = 10_000
"""Distinct failing values tried: enough to meet a day above 12 in any real file, bounded for a huge one."""
_VOCABULARY = {
    "channel": ("--channel-value", "[channel_values]", "`channels` in the settings file"),
    "type": ("--type-value", "[type_values]", "[event_types] in the settings file"),
}


def hints(
    con: duckdb.DuckDBPyConnection, plan: FieldPlan, counts: dict[str, int], rows: int, timestamp_format: str | None
) -> list[str]:
    """One sentence per rule whose failures have a likely common cause, saying what to pass.

    Args:
        counts: failing rows per ``"column: reason"``, as the importer counts them.
        rows: rows read; a vocabulary hint needs at least half of them failing on that field.
        timestamp_format: the format the mapping gave (None: ISO 8601), left out of the guesses.
    """
    found = []
    for rule in plan.rules:
        n = counts.get(f"{rule.column}: {rule.reason}", 0)
        if not n:
            continue
        if rule.hint is Hint.TIMESTAMP:
            found.append(_timestamp_hint(con, rule, timestamp_format))
        elif rule.hint is Hint.VOCABULARY and 2 * n >= rows and rule.column in _VOCABULARY:
            found.append(_vocabulary_hint(con, rule, n, rows))
    return found


def _timestamp_hint(con: duckdb.DuckDBPyConnection, rule: Rule, given: str | None) -> str:
    """Which formats read every failing value (distinct, sampled): one → name it; several → name them, pick none."""
    tried = {f: f"try_strptime(v, {lit(f)}) IS NOT NULL" for f in FORMATS if f != given}
    tried |= {u: f"regexp_matches(v, {lit(rx)})" for u, rx in _UNIX.items() if u != given}
    if given is not None:
        tried[_ISO] = "TRY_CAST(v AS TIMESTAMPTZ) IS NOT NULL"
    fits = ", ".join(f"count(*) FILTER (WHERE {test})" for test in tried.values())
    raw = f"trim(CAST({ident('r_' + rule.column)} AS VARCHAR))"
    values = f"SELECT {raw} AS v, min(_row) AS first FROM checked WHERE {rule.condition} GROUP BY v LIMIT {_SAMPLE}"
    (row,) = con.execute(f"SELECT count(*), arg_min(v, first), {fits} FROM ({values})").fetchall()
    total, example, hits = int(row[0]), str(row[1]), dict(zip(tried, (int(h) for h in row[2:]), strict=True))
    where = f"{rule.column}: values such as {example!r} are not {_name(given or _ISO)}"
    every = [f for f, h in hits.items() if h == total]
    if _ISO in every:
        every = [_ISO]  # ISO 8601 reads every variant those formats read, and offsets too
    if len(every) == 1:
        return f"{where}; they read as {_name(every[0])}: {_how(every[0])}"
    if every:
        listed = " or ".join(_name(f) for f in every[:3])
        return (
            f"{where}; they fit {listed} and the values cannot tell which: check the file's source, "
            f"then {_how(every[0])} or the other"
        )
    best, n = max(hits.items(), key=lambda kv: kv[1])
    if 2 * n >= total:
        return f"{where}; {n:,} of the {total:,} distinct failing values read as {_name(best)}: {_how(best)}"
    return (
        f"{where}; pass --timestamp-format with the file's strptime format (e.g. '%d/%m/%Y %H:%M'), "
        "or unix_s / unix_ms for epoch numbers"
    )


def _name(fmt: str) -> str:
    """A format as the user would type it (quoted), or ISO 8601 by name."""
    return fmt if fmt == _ISO else repr(fmt)


def _how(fmt: str) -> str:
    """The option that makes ``fmt`` the one used."""
    if fmt == _ISO:
        return "leave out --timestamp-format (timestamp_format in the mapping file)"
    return f"pass --timestamp-format {_name(fmt)}"


def _vocabulary_hint(con: duckdb.DuckDBPyConnection, rule: Rule, n: int, rows: int) -> str:
    """The commonest unknown values and the two ways to accept them: map them, or configure them."""
    option, table, setting = _VOCABULARY[rule.column]
    raw = ident("r_" + rule.column)
    top = con.execute(
        f"SELECT CAST({raw} AS VARCHAR) AS v, count(*) AS n FROM checked WHERE {rule.condition} "
        "GROUP BY v ORDER BY n DESC, v LIMIT 3"
    ).fetchall()
    values = ", ".join(f"{v!r} in {c:,} rows" for v, c in top)
    first = str(top[0][0]).strip() if top else "VALUE"
    return (
        f"{rule.column}: {n:,} of {rows:,} rows have a {rule.column} that is not configured ({values}); "
        f"map them with {option} {first}=<{rule.column}> (or a {table} table in the mapping file), "
        f"or add them to {setting}"
    )
