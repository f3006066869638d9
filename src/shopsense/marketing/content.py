"""Personalised campaign content: each customer's recommendations rendered into a message and a payload.

The message comes from a ``string.Template`` filled with a fixed set of fields, never from format
strings or eval, because templates are written by marketers and must not reach Python objects. The
template's placeholders are checked before any recommendation is computed, so a typo such as
``$first_tilte`` fails at once with the allowed names instead of sending thousands of broken e-mails.
The payload (message plus the items with their scores and reasons) is what a mailing or push tool
imports, as JSON lines or CSV, written atomically so a half-written file is never picked up.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, TypeAlias

import pyarrow as pa
import pyarrow.csv as pcsv

from shopsense.csv_safety import neutralise_table
from shopsense.errors import ConfigError

if TYPE_CHECKING:  # the pipeline imports every model; content only reads its result objects
    from shopsense.pipeline import Recommendation

Recommend: TypeAlias = "Callable[[str], Sequence[Recommendation]]"
"""One user's recommendations, best first, e.g. ``lambda u: service.recommend(u, k)``."""

FIELDS = {
    "user_id": "the customer's id",
    "count": "how many items are in the payload",
    "first_item_id": "id of the top item",
    "first_title": "title of the top item",
    "first_reason": "why the top item was chosen",
    "titles": "all item titles, comma separated",
    "reasons": "the distinct reasons, in item order, separated by '; '",
}
"""Placeholders a template may use, e.g. ``"Hi, $first_title is back in stock"``."""

ITEM_TYPE = pa.struct(
    [("item_id", pa.string()), ("title", pa.string()), ("reason", pa.string()), ("score", pa.float64())]
)
PAYLOAD_SCHEMA = pa.schema([("user_id", pa.string()), ("message", pa.string()), ("items", pa.list_(ITEM_TYPE))])
"""One row per customer; ``message`` is null for a customer with no recommendations (nothing to say)."""


def check_template(template: str) -> Template:
    """Parse a message template, refusing bad ``$`` syntax and placeholders that are not in ``FIELDS``.

    Raises:
        ConfigError: naming the unknown placeholders and the allowed ones, or the malformed ``$``.
    """
    parsed = Template(template)
    if not parsed.is_valid():
        raise ConfigError(
            f"template {template!r} has a '$' that starts no placeholder; write $$ for a dollar sign "
            "and $name or ${name} for a field"
        )
    unknown = sorted(set(parsed.get_identifiers()) - set(FIELDS))
    if unknown:
        raise ConfigError(f"template uses unknown placeholder(s) {unknown}; available: {sorted(FIELDS)}")
    return parsed


def personalise(user_ids: Sequence[str], recommend: Recommend, template: str, k: int = 3) -> pa.Table:
    """Each customer's top ``k`` recommendations and a message rendered from them.

    Args:
        user_ids: the campaign audience (e.g. the treated users of an assignment), each once.
        recommend: returns one user's recommendations, best first; only the first ``k`` are used.
        template: ``string.Template`` text over the placeholders in ``FIELDS``.
        k: most items per customer.

    Returns:
        A ``PAYLOAD_SCHEMA`` table in the order of ``user_ids``.

    Raises:
        ConfigError: on a bad template, ``k < 1``, or a repeated user id (one person, one message).
    """
    parsed = check_template(template)
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    repeated = [user for user, count in Counter(user_ids).items() if count > 1]
    if repeated:
        raise ConfigError(f"user {repeated[0]!r} appears more than once in the audience; send one message each")
    messages: list[str | None] = []
    payloads: list[list[dict[str, object]]] = []
    for user in user_ids:
        items = list(recommend(user))[:k]
        messages.append(parsed.substitute(_fields(user, items)) if items else None)
        payloads.append(
            [{"item_id": r.item_id, "title": r.title, "reason": r.explanation.reason, "score": r.score} for r in items]
        )
    return pa.table([list(user_ids), messages, payloads], schema=PAYLOAD_SCHEMA)


def _fields(user_id: str, items: Sequence[Recommendation]) -> dict[str, str]:
    reasons = dict.fromkeys(r.explanation.reason for r in items if r.explanation.reason)
    return {
        "user_id": user_id,
        "count": str(len(items)),
        "first_item_id": items[0].item_id,
        "first_title": items[0].title,
        "first_reason": items[0].explanation.reason,
        "titles": ", ".join(r.title for r in items),
        "reasons": "; ".join(reasons),
    }


def export_payload(table: pa.Table, path: Path) -> Path:
    """Write a payload table as JSON lines (``.jsonl``/``.ndjson``) or CSV (``.csv``, items as JSON text).

    In a CSV, text cells starting like a formula get a leading ``'`` (:func:`shopsense.csv_safety.neutralise`).

    The file is written next to ``path`` under a temporary name and renamed over it, so a reader sees
    either the old file or the complete new one.

    Raises:
        ConfigError: on another suffix or a table that is not a ``PAYLOAD_SCHEMA`` payload.
    """
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise ConfigError(f"{path}: payloads are written as .jsonl, .ndjson or .csv, not {path.suffix or 'no suffix'}")
    if not table.schema.equals(PAYLOAD_SCHEMA):
        raise ConfigError(f"{path}: the table is not a personalise() payload; expected {PAYLOAD_SCHEMA}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if suffix == ".csv":
                items = pa.array([json.dumps(row, ensure_ascii=False) for row in table.column("items").to_pylist()])
                pcsv.write_csv(neutralise_table(table.set_column(2, "items", items)), handle)
            else:
                handle.writelines((json.dumps(row, ensure_ascii=False) + "\n").encode() for row in table.to_pylist())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path
