"""What every candidate model learns from: weighted interactions, ordered sequences, item metadata.

Each event adds its type's weight (settings ``event_types.weights``) to a user x item matrix,
optionally decayed by age with a half-life, so a purchase last week outweighs a view last
year. Returns carry negative weight; pairs whose total is not positive are left out.

Models that care about order and time (repeat-buy, trending, the sequential model) read the
same events as per-user sequences; content models read the catalogue text aligned to the
item vocabulary. All three views share one item index, so any model can score any history.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from shopsense.domain import IdIndex


@dataclass(frozen=True)
class Sequences:
    """Every user's events in time order, stored CSR-style: user ``u`` owns ``indptr[u]:indptr[u+1]``.

    ``weights`` is each event's type weight before any time decay (a return is negative).
    """

    indptr: np.ndarray
    items: np.ndarray
    types: np.ndarray
    times: np.ndarray
    weights: np.ndarray
    type_names: tuple[str, ...]

    def rows(self, users: np.ndarray) -> Sequences:
        """The sequences of the given users, in that order (vectorised gather)."""
        starts, ends = self.indptr[users], self.indptr[users + 1]
        lengths = ends - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        take = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return Sequences(
            indptr, self.items[take], self.types[take], self.times[take], self.weights[take], self.type_names
        )

    def owners(self) -> np.ndarray:
        """The user row of every event (the CSR row expanded)."""
        return np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))

    def where(self, keep: np.ndarray) -> Sequences:
        """Only the events where ``keep`` is true, every user kept (possibly with no events)."""
        counts = np.bincount(self.owners()[keep], minlength=len(self.indptr) - 1)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return Sequences(
            indptr, self.items[keep], self.types[keep], self.times[keep], self.weights[keep], self.type_names
        )

    def type_code(self, name: str) -> int:
        """Code of an event type, -1 when no event of that type exists."""
        return self.type_names.index(name) if name in self.type_names else -1


@dataclass(frozen=True)
class Catalog:
    """Item metadata aligned with the item vocabulary.

    Codes index into the name tuples (-1 unknown). ``price`` is NaN where unknown; ``available``
    is False only where the catalogue says unavailable or out of stock; ``group`` ties variants
    of one product (the item attribute ``group``), -1 where an item has none; ``margin`` is the
    item attribute ``margin`` (profit per unit), NaN where not given; ``kind`` codes the item
    attribute ``kind`` into ``kinds`` (-1 where not given), e.g. ``service`` for postage and fees.
    """

    text: tuple[str, ...]
    category: np.ndarray
    categories: tuple[str, ...]
    brand: np.ndarray | None = None
    brands: tuple[str, ...] = ()
    price: np.ndarray | None = None
    available: np.ndarray | None = None
    group: np.ndarray | None = None
    margin: np.ndarray | None = None
    titles: tuple[str, ...] = ()
    kind: np.ndarray | None = None
    kinds: tuple[str, ...] = ()

    @classmethod
    def empty(cls, n_items: int) -> Catalog:
        """A catalogue that knows nothing about its items (data imported without one)."""
        return cls(("",) * n_items, np.full(n_items, -1, dtype=np.int32), (), titles=("",) * n_items)

    def prices(self) -> np.ndarray:
        """Price per item, NaN where unknown (all NaN when the catalogue has no prices)."""
        return self.price if self.price is not None else np.full(len(self.text), np.nan)


@dataclass(frozen=True)
class Interactions:
    """Users x items interest weights, with the vocabularies of rows and columns.

    ``sequences`` (events in time order) and ``catalog`` (item text and categories) are there
    when built from events and a catalogue; ``as_of`` is the epoch second ages are measured from.
    """

    matrix: sp.csr_matrix
    users: IdIndex
    items: IdIndex
    sequences: Sequences | None = None
    catalog: Catalog | None = None
    as_of: int | None = None

    def rows(self, users: np.ndarray) -> Interactions:
        """The same data restricted to some users (e.g. those with test events), in the order given."""
        users = np.asarray(users, dtype=np.int64)
        sequences = self.sequences.rows(users) if self.sequences is not None else None
        return replace(
            self, matrix=self.matrix[users], users=IdIndex(self.users.ids(users.tolist())), sequences=sequences
        )

    def window(self, start: int | None, end: int) -> Interactions:
        """The events in ``[start, end)`` (epoch seconds) as interactions measured at ``end``.

        The matrix is rebuilt from the events' type weights without time decay, so windows
        cut from one history are weighted alike whatever decay built the original matrix.
        """
        if self.sequences is None:
            raise ValueError("cutting a time window needs event sequences: build interactions from events")
        seq = self.sequences
        keep = seq.times < end if start is None else (seq.times >= start) & (seq.times < end)
        return self.select(keep, end)

    def select(self, keep: np.ndarray, as_of: int) -> Interactions:
        """Only the events where ``keep`` (aligned with ``sequences``) is true, measured at ``as_of``.

        Like :meth:`window`, but for holdouts that are not a time range (each user's last events,
        a random share of pairs), so a model can learn on the same kind of cut it is judged on.
        """
        if self.sequences is None:
            raise ValueError("selecting events needs event sequences: build interactions from events")
        part = self.sequences.where(keep)
        matrix = sp.csr_matrix((part.weights, (part.owners(), part.items.astype(np.int64))), shape=self.matrix.shape)
        matrix.sum_duplicates()
        matrix.data[matrix.data < 0] = 0
        matrix.eliminate_zeros()
        return replace(self, matrix=matrix, sequences=part, as_of=as_of)


def as_history(history: Interactions | sp.spmatrix | sp.sparray) -> Interactions:
    """Accept a bare matrix where only weights are known (sequence models then need more)."""
    if isinstance(history, Interactions):
        return history
    matrix = sp.csr_matrix(history)
    users = IdIndex([f"\x00row{u}" for u in range(matrix.shape[0])])  # never a real user id
    return Interactions(matrix, users, IdIndex([str(i) for i in range(matrix.shape[1])]))


def build_interactions(
    events: pa.Table,
    weights: dict[str, float],
    *,
    half_life_days: float | None = None,
    as_of: datetime | None = None,
    items: IdIndex | None = None,
    catalog: pa.Table | Catalog | None = None,
    users: IdIndex | None = None,
) -> Interactions:
    """Aggregate ``events`` (user_id, item_id, type, timestamp) into weighted interactions and sequences.

    Args:
        weights: weight per event type; types absent from it count 0 (they stay in the sequences).
        half_life_days: age at which an event counts half; None means no decay.
        as_of: the time ages are measured from (default: the newest event), never later data.
        items: a fixed item vocabulary (e.g. the catalogue); unknown items are dropped from it.
        catalog: items table (item_id, title, category, brand, description…) for content models and
            the ranker, or a :class:`Catalog` already aligned to ``items``.
        users: fixed user rows in this order (e.g. the users of one request, some with no events);
            events of other users are dropped.
    """
    user_ids = events.column("user_id").to_numpy(zero_copy_only=False).astype(str)
    item_ids = events.column("item_id").to_numpy(zero_copy_only=False).astype(str)
    types = events.column("type").to_numpy(zero_copy_only=False).astype(str)
    # Microseconds order the sequences (sessions log several events a second); whole seconds are kept.
    ts = pc.cast(events.column("timestamp"), pa.timestamp("us", tz="UTC"), safe=False)
    micros = ts.to_numpy(zero_copy_only=False).astype("datetime64[us]").astype(np.int64)
    seconds = micros // 1_000_000
    kinds, kind_of_event = np.unique(types, return_inverse=True)
    type_weight = np.array([weights.get(kind, 0.0) for kind in kinds], dtype=float)[kind_of_event]
    w = type_weight
    now = int(np.datetime64(as_of.replace(tzinfo=None), "s").astype(np.int64)) if as_of else None
    if now is None and len(seconds):
        now = int(seconds.max())
    if half_life_days is not None and now is not None:
        age_days = np.maximum(now - seconds, 0) / 86_400
        w = w * np.power(0.5, age_days / half_life_days)
    if users is None:
        uniq_users, u_idx = np.unique(user_ids, return_inverse=True)
    else:
        uniq_users, u_idx = np.array(users.values, dtype=object), np.array(users.index(list(user_ids)), dtype=np.int64)
    if items is None:
        uniq_items, i_idx = np.unique(item_ids, return_inverse=True)
        items = IdIndex(list(uniq_items))
    else:
        i_idx = np.array(items.index(list(item_ids)), dtype=np.int64)
    keep = (i_idx >= 0) & (u_idx >= 0)
    if not keep.all():
        u_idx, i_idx, w, kind_of_event = u_idx[keep], i_idx[keep], w[keep], kind_of_event[keep]
        seconds, micros = seconds[keep], micros[keep]
        type_weight = type_weight[keep]
    matrix = sp.csr_matrix((w, (u_idx, i_idx)), shape=(len(uniq_users), len(items)))
    matrix.sum_duplicates()
    matrix.data[matrix.data < 0] = 0
    matrix.eliminate_zeros()
    order = np.lexsort((i_idx, micros, u_idx))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(u_idx, minlength=len(uniq_users)))]).astype(np.int64)
    sequences = Sequences(
        indptr,
        i_idx[order].astype(np.int32),
        kind_of_event[order].astype(np.int16),
        seconds[order],
        type_weight[order],
        tuple(str(k) for k in kinds),
    )
    item_catalog = catalog if isinstance(catalog, Catalog) or catalog is None else _catalog(catalog, items)
    return Interactions(matrix, IdIndex(list(uniq_users)), items, sequences, item_catalog, now)


_TEXT_FIELDS = ("title", "brand", "category", "description")


def _catalog(table: pa.Table, items: IdIndex) -> Catalog:
    """Align catalogue rows to the item index; items missing from the catalogue get empty text."""
    idx = np.array(items.index(table.column("item_id").to_numpy(zero_copy_only=False).astype(str).tolist()))
    known = idx >= 0
    # Nulls become "" before joining: pyarrow 26's null_handling="skip" drops rows instead.
    parts = [pc.fill_null(_as_text(table.column(name)), "") for name in _TEXT_FIELDS if name in table.column_names]
    text = np.full(len(items), "", dtype=object)
    if parts:
        joined = pc.utf8_trim_whitespace(
            pc.replace_substring_regex(pc.binary_join_element_wise(*parts, " "), r"\s+", " ")
        )
        text[idx[known]] = joined.to_numpy(zero_copy_only=False)[known]
    category, names = _codes(table, "category", idx, known, len(items))
    brand, brands = _codes(table, "brand", idx, known, len(items))
    price = np.full(len(items), np.nan)
    if "price" in table.column_names:
        price[idx[known]] = pc.cast(table.column("price"), pa.float64()).to_numpy(zero_copy_only=False)[known]
    available = np.ones(len(items), dtype=bool)
    unavailable = []
    if "available" in table.column_names:
        unavailable.append(pc.equal(table.column("available"), False))
    if "stock" in table.column_names:
        unavailable.append(pc.less_equal(table.column("stock"), 0))
    for flags in unavailable:
        off = pc.fill_null(flags, False).to_numpy(zero_copy_only=False).astype(bool)
        available[idx[known & off]] = False
    group = np.full(len(items), -1, dtype=np.int64)
    margin = np.full(len(items), np.nan)
    kind, kinds = np.full(len(items), -1, dtype=np.int32), np.array([], dtype=str)
    if "attributes" in table.column_names:
        values = _json_field(table.column("attributes"), "group")
        present = known & (values != "")
        group[idx[present]] = np.unique(values[present], return_inverse=True)[1]
        margin[idx[known]] = _json_field(table.column("attributes"), "margin", numeric=True)[known]
        values = _json_field(table.column("attributes"), "kind")
        present = known & (values != "")
        kinds, codes = np.unique(values[present], return_inverse=True)
        kind[idx[present]] = codes
    titles = np.full(len(items), "", dtype=object)
    if "title" in table.column_names:
        titles[idx[known]] = pc.fill_null(_as_text(table.column("title")), "").to_numpy(zero_copy_only=False)[known]
    return Catalog(
        tuple(str(t) for t in text),
        category,
        names,
        brand,
        brands,
        price,
        available,
        group,
        margin,
        tuple(str(t) for t in titles),
        kind,
        tuple(str(k) for k in kinds),
    )


def _codes(
    table: pa.Table, column: str, idx: np.ndarray, known: np.ndarray, n_items: int
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Dense codes of a text column aligned to the item index (-1 missing) and the names they stand for."""
    codes = np.full(n_items, -1, dtype=np.int32)
    if column not in table.column_names:
        return codes, ()
    raw = pc.fill_null(_as_text(table.column(column)), "").to_numpy(zero_copy_only=False)
    present = known & (raw != "")
    uniq, found = np.unique(raw[present].astype(str), return_inverse=True)
    codes[idx[present]] = found
    return codes, tuple(str(c) for c in uniq)


def _json_field(column: pa.ChunkedArray, key: str, *, numeric: bool = False) -> np.ndarray:
    """One key of a JSON text column, parsed by DuckDB (not row by row): strings with "" where absent,
    or with ``numeric`` floats with NaN where absent or not a number."""
    value = f"json_extract_string(a, '$.{key}')"
    select = f"coalesce(try_cast({value} AS DOUBLE), 'NaN'::DOUBLE)" if numeric else f"coalesce({value}, '')"
    con = duckdb.connect()
    try:
        con.register("attrs", pa.table({"a": pc.cast(column, pa.string())}))
        rows = con.sql(f"SELECT {select} FROM attrs").to_arrow_table()
    finally:
        con.close()
    out: np.ndarray = rows.column(0).to_numpy(zero_copy_only=False).astype(float if numeric else str)
    return out


def _as_text(column: pa.ChunkedArray) -> pa.Array:
    """A text column as one array; a category path (list of levels) reads as "Home > Kitchen"."""
    array = column.combine_chunks()
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        return pc.binary_join(array, " > ")
    return pc.cast(array, pa.string())
