"""The items page's search and titles, in Arrow over a cached lower-cased search column."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pyarrow as pa

from shopsense.services.insights import Insights

CATALOG = pa.table(
    {
        "item_id": ["A-1", "mug", "b-2", "kettle"],
        "title": ["Red Mug", "Plain", None, "Steel kettle"],
        "brand": [None, "Acme", "Mugshot", "Acme"],
        "category": [["Kitchen", "Cups"], None, ["Garden"], ["Kitchen"]],
    }
)


class _Store:
    scans = 0

    def scan_items(self) -> pa.Table:
        _Store.scans += 1
        return CATALOG


class _Serving:
    def read(self, work: Any) -> Future[Any]:
        done: Future[Any] = Future()
        done.set_result(work(_Store()))
        return done


def _insights() -> Insights:
    return Insights(_Serving())  # type: ignore[arg-type]


def test_search_matches_id_title_brand_or_category_without_case_exact_id_first() -> None:
    found = _insights()
    assert [r["item_id"] for r in found.search("MUG").result()] == ["mug", "A-1", "b-2"]
    assert [r["item_id"] for r in found.search("kitchen").result()] == ["A-1", "kettle"]
    assert [r["item_id"] for r in found.search("  ").result()] == ["A-1", "mug", "b-2", "kettle"]
    assert [r["item_id"] for r in found.search("", limit=2).result()] == ["A-1", "mug"]
    assert found.search("nothing like it").result() == []
    assert found.search("mug", limit=1).result()[0]["brand"] == "Acme", "whole records come back"


def test_the_catalogue_and_its_search_column_are_read_once_per_ttl() -> None:
    found = _insights()
    before = _Store.scans
    for query in ("mug", "acme", "", "kettle"):
        found.search(query).result()
    assert _Store.scans == before + 1


def test_titles_are_the_records_of_the_ids_asked_for() -> None:
    titles = _insights().titles(["kettle", "nope", "A-1", "kettle"]).result()
    assert sorted(titles) == ["A-1", "kettle"] and titles["kettle"]["title"] == "Steel kettle"


def test_an_empty_catalogue_searches_to_nothing() -> None:
    empty = CATALOG.slice(0, 0)
    found = Insights(_Serving())  # type: ignore[arg-type]
    found._catalog = (float("inf"), empty, pa.array([], pa.string()))  # kept "forever": no store read
    found._lock = threading.Lock()
    assert found.search("x").result() == [] and found.titles(["x"]).result() == {}
