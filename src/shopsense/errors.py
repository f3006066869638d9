"""Typed errors that say what is wrong, where, and what to do.

Every shell (CLI, API) prints these without a traceback, so each carries enough
location (file, row, column) for a person to fix the input.
"""

from __future__ import annotations

from dataclasses import dataclass


class ShopsenseError(Exception):
    """Base of every error shopsense raises on purpose."""


class ConfigError(ShopsenseError):
    """A settings file, mapping file or option is invalid."""


class NotFound(ConfigError):
    """A name or id the request refers to is not known (a campaign, say): the API answers 404."""


class StoreError(ShopsenseError):
    """The store cannot be opened or written as asked."""


class StoreUnavailable(StoreError):
    """The store failed for a passing reason (the connection lost, the database restarting, a deadlock or
    serialization conflict rolled back): the same request may succeed when sent again, so the API answers
    503 with ``Retry-After`` and clients retry, instead of a 400 that says the request itself is wrong."""


@dataclass(frozen=True)
class Problem:
    """One reason one input row (or the whole file, when ``row`` is None) is unusable."""

    file: str
    row: int | None
    column: str | None
    value: str | None
    reason: str

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}:row {self.row}"
        col = f" [{self.column}]" if self.column else ""
        val = "" if self.value is None else f" value={_clip(self.value)!r}"
        return f"{where}{col}{val}: {self.reason}"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + f"…(+{len(text) - limit} chars)"


class InputError(ShopsenseError):
    """An input file cannot be read at all (encoding, compression, delimiter, empty...)."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


class ValidationFailed(ShopsenseError):
    """Rows failed validation under ``--on-error fail``; nothing was written."""

    def __init__(self, problems: list[Problem], total: int, rows_bad: int, hints: list[str] | None = None) -> None:
        """``hints``: what the failing values suggest doing (a timestamp format, a value mapping), if anything."""
        shown = "\n".join(f"  {p}" for p in problems)
        more = f"\n  … and {total - len(problems)} more problems" if total > len(problems) else ""
        advice = "".join(f"Hint — {h}\n" for h in hints or [])
        super().__init__(
            f"{total} problem(s) in {rows_bad} row(s); nothing was written.\n{shown}{more}\n{advice}"
            "Fix the input, or re-run with --on-error skip to import the valid rows "
            "and write the rejected ones to a rejects file."
        )
        self.problems = problems
        self.total = total
        self.rows_bad = rows_bad
        self.hints = hints or []
