"""Full public datasets from ../shared (skipped where that folder is absent, e.g. a user's clone)."""

from __future__ import annotations

import pytest

from shopsense.services.data import DataService
from tests.conftest import SHARED

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets is not beside this checkout")


def test_online_retail_counts_match_the_dataset_readme(service: DataService) -> None:
    """README: 541,909 rows, sum(Quantity) 5,176,450, sum(Quantity*UnitPrice) 9,747,747.93, 4,372 customers.

    Three of those rows are bad-debt adjustments (A invoices: +1, +1, +1 units; +11,062.06,
    -11,062.06, -11,062.06), excluded as not behaviour; 135,080 guest lines form per-invoice guests.
    """
    (_, _, events) = service.import_dataset("online-retail", [SHARED / "online_retail" / "online_retail.csv.gz"])
    stats = service.stats()
    assert events.rows_read == 541_906 and events.excluded == {
        "bad-debt adjustment (A invoice), not customer behaviour": 3
    }
    assert stats.events == 541_909 - 3
    assert stats.events_by_type["return"] == 9_288 + 1_336  # C invoices + other negative lines
    assert stats.net_quantity == 5_176_450 - 3
    assert stats.net_revenue == pytest.approx(9_747_747.93 + 11_062.06, abs=0.01)
    assert stats.users - stats.guest_users == 4_372
    assert stats.first_event == "2010-12-01T08:26:00Z" and stats.last_event == "2011-12-09T12:50:00Z"


def test_both_online_retail_files_overlap_only_once(service: DataService) -> None:
    reports = service.import_dataset("online-retail", [SHARED / "online_retail"])
    second = reports[-1]
    assert second.already_stored == 22_523  # identical lines of 2010-12-01..09 in both files
    assert service.stats().events == (525_461 - 3) + (541_909 - 3) - 22_523


@pytest.mark.parametrize(
    ("name", "events", "users"),
    [
        ("instacart", 149_903, 592),
        ("movielens-100k", 100_000, 943),
        ("movielens-1m", 1_000_209, 6_040),
        ("yoochoose", 70_278 + 13_568, None),
        ("diginetica", 12_391, None),
    ],
)
def test_every_adapter_imports_its_whole_dataset(
    service: DataService, name: str, events: int, users: int | None
) -> None:
    reports = service.import_dataset(name, [])
    assert all(r.rows_rejected == 0 for r in reports)
    stats = service.stats()
    assert stats.events == events
    if users is not None:
        assert stats.users == users
