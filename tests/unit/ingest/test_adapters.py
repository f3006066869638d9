"""Dataset adapters: every source row is imported, returned, or counted as excluded."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import pytest

from shopsense.errors import ValidationFailed
from shopsense.services.data import DataService
from tests.conftest import DATA

SAMPLE = DATA / "online_retail_sample.csv"


def _raw(sql: str) -> tuple[object, ...]:
    """Answer from the fixture computed independently of shopsense."""
    (row,) = duckdb.sql(sql.replace("SAMPLE", f"read_csv('{SAMPLE}', all_varchar=false)")).fetchall()
    return tuple(row)


def test_online_retail_sample_reconciles_with_the_raw_file(service: DataService) -> None:
    (events_report,) = [r for r in service.import_dataset("online-retail", [SAMPLE]) if r.kind == "events"]
    rows, adjustments, returns, qty, revenue, adj_qty, adj_rev = _raw(
        """SELECT count(*), count(*) FILTER (WHERE InvoiceNo LIKE 'A%'),
            count(*) FILTER (WHERE InvoiceNo LIKE 'C%' OR Quantity < 0),
            sum(Quantity), sum(Quantity * UnitPrice),
            sum(Quantity) FILTER (WHERE InvoiceNo LIKE 'A%'),
            sum(Quantity * UnitPrice) FILTER (WHERE InvoiceNo LIKE 'A%')
        FROM SAMPLE"""
    )
    assert adjustments == 3
    assert events_report.excluded == {"bad-debt adjustment (A invoice), not customer behaviour": 3}
    stats = service.stats()
    assert events_report.rows_read + adjustments == rows
    assert stats.events + events_report.duplicates_collapsed == rows - adjustments
    assert stats.events_by_type["return"] == returns
    assert stats.net_quantity == qty - adj_qty  # type: ignore[operator]
    assert stats.net_revenue == pytest.approx(revenue - adj_rev, abs=0.01)  # type: ignore[operator]


def test_online_retail_guests_and_times(service: DataService) -> None:
    service.import_dataset("online-retail", [SAMPLE])
    (guest_invoices, customers) = _raw(
        "SELECT count(DISTINCT InvoiceNo) FILTER (WHERE CustomerID IS NULL AND InvoiceNo NOT LIKE 'A%'), "
        "count(DISTINCT CustomerID) FROM SAMPLE"
    )
    stats = service.stats()
    assert stats.guest_users == guest_invoices
    assert stats.users == guest_invoices + customers  # type: ignore[operator]
    first = service.store.scan_events().to_pylist()[0]
    assert first["timestamp"].isoformat() == "2010-12-01T08:26:00+00:00"  # GMT in December
    assert first["session_id"] == "536365"


def _gz(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode()))
    return path


def test_instacart_orders_become_dated_purchases(service: DataService, tmp_path: Path) -> None:
    (tmp_path / "products.csv").write_text("product_id,product_name,aisle_id,department_id\n1,Milk,5,2\n2,Bread,6,3\n")
    (tmp_path / "aisles.csv").write_text("aisle_id,aisle\n5,dairy\n6,bakery\n")
    (tmp_path / "departments.csv").write_text("department_id,department\n2,fresh\n3,baked goods\n")
    _gz(
        tmp_path / "orders_products_prior_sample.csv.gz",
        "order_id,user_id,order_number,order_dow,order_hour_of_day,days_since_prior_order,product_id,"
        "add_to_cart_order,reordered\n10,7,1,2,8,,1,1,0\n10,7,1,2,8,,2,2,0\n11,7,2,4,9,3.0,1,1,1\n",
    )
    service.import_dataset("instacart", [tmp_path])
    events = service.store.scan_events().to_pylist()
    assert [e["timestamp"].isoformat() for e in events] == [
        "2017-04-28T08:00:00+00:00",
        "2017-04-28T08:00:00+00:00",
        "2017-05-01T09:00:00+00:00",
    ]
    assert json.loads(events[2]["context"])["reordered"] is True
    assert service.stats().top_categories[0]["category"] == "fresh"


def test_movielens_100k_ratings_and_genres(service: DataService, tmp_path: Path) -> None:
    flags = "|".join(["0"] * 5 + ["1"] + ["0"] * 13)  # Comedy
    (tmp_path / "u.item").write_bytes(f"1|Caf\xe9 Story (1995)|01-Jan-1995||http://x|{flags}\n".encode("latin-1"))
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n")
    (tmp_path / "u.data").write_text("1\t1\t5\t881250949\n")
    service.import_dataset("movielens-100k", [tmp_path])
    (event,) = service.store.scan_events().to_pylist()
    assert (event["type"], event["rating"], event["timestamp"].year) == ("rating", 5.0, 1997)
    assert service.stats().top_categories[0]["category"] == "Comedy"


def test_session_datasets_make_session_users(service: DataService, tmp_path: Path) -> None:
    (tmp_path / "yoochoose-clicks-100k_test.txt").write_text("SessionId\tItemId\tTime\n1\t99\t1396860669.277\n")
    (tmp_path / "sample_train-item-views.csv").write_text(
        "session_id;user_id;item_id;timeframe;eventdate\n1;NA;5;1000;2016-05-09\n2;42;6;0;2016-05-10\n"
    )
    service.import_dataset("yoochoose", [tmp_path])
    service.import_dataset("diginetica", [tmp_path])
    users = sorted(e["user_id"] for e in service.store.scan_events().to_pylist())
    assert users == ["42", "session:1", "session:1"]
    assert service.stats().events_by_type == {"click": 1, "view": 2}


def test_a_dataset_with_one_bad_file_writes_nothing_at_all(service: DataService, tmp_path: Path) -> None:
    good = SAMPLE.read_text()
    _gz(tmp_path / "online_retail_ii_2009_2010.csv.gz", good)
    _gz(tmp_path / "online_retail.csv.gz", good + "999999,85123A,X,1,not a date,2.55,17850,United Kingdom\n")
    with pytest.raises(ValidationFailed, match="unparseable timestamp"):
        service.import_dataset("online-retail", [tmp_path])
    stats = service.stats()
    assert (stats.items, stats.users, stats.events, stats.imports) == (0, 0, 0, [])


def test_online_retail_service_lines_are_tagged_by_code(service: DataService, tmp_path: Path) -> None:
    lines = [
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country",
        *(
            f"536365,{code},{title},1,2010-12-01 08:26:00,2.55,17850,United Kingdom"
            for code, title in [
                ("85123A", "WHITE HANGING HEART T-LIGHT HOLDER"),
                ("POST", "POSTAGE"),
                ("23444", "Next Day Carriage"),
                ("ADJUST2", "Adjustment by Peter"),
                ("23099", "FRENCH CARRIAGE LANTERN"),
            ]
        ),
    ]
    path = tmp_path / "retail.csv"
    path.write_text("\n".join(lines) + "\n")
    service.import_dataset("online-retail", [path])
    kinds = {
        r["item_id"]: json.loads(r["attributes"] or "{}").get("kind") for r in service.store.scan_items().to_pylist()
    }
    assert kinds == {"85123A": None, "POST": "service", "23444": "service", "ADJUST2": "service", "23099": None}
