"""MarketingService over a real store: profiles are stored at an as_of, guests left out, segments read them."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow.compute as pc
import pytest

from shopsense.errors import ConfigError
from shopsense.services.data import DataService
from shopsense.services.marketing import MarketingService
from tests.conftest import DATA


@pytest.fixture
def marketing(service: DataService) -> MarketingService:
    service.import_dataset("online-retail", [DATA / "online_retail_sample.csv"])
    return MarketingService(service.settings, service.store)


def test_profiles_are_built_once_stored_and_leave_guests_out(marketing: MarketingService) -> None:
    with pytest.raises(ConfigError, match="profiles build"):
        marketing.profiles()
    built = marketing.build_profiles()
    stored = marketing.profiles()
    assert stored.num_rows == built.num_rows > 0
    assert not any(u.startswith("guest:") for u in stored.column("user_id").to_pylist())
    guests = marketing.store.guest_user_ids()
    assert guests and all(g.startswith("guest:") for g in guests)
    events = marketing.store.scan_events()
    purchases = events.filter(pc.equal(events.column("user_id"), "17850"))
    assert purchases.num_rows and marketing.profile("17850")["frequency"] >= 1  # type: ignore[index]
    assert marketing.profile("nobody") is None


def test_as_of_cuts_the_history(marketing: MarketingService) -> None:
    early = marketing.build_profiles(datetime(2010, 12, 2, tzinfo=UTC))
    late = marketing.build_profiles()
    assert early.num_rows < late.num_rows, "customers who first bought after as_of have no profile then"
    with pytest.raises(ConfigError, match="time zone"):
        marketing.build_profiles(datetime(2010, 12, 2))


def test_segments_and_rfm_from_stored_profiles(marketing: MarketingService) -> None:
    profiles = marketing.build_profiles()
    report = marketing.segments({"big": "monetary > 200", "repeat": "frequency >= 2"})
    stats = {r["segment"]: r for r in report.stats.to_pylist()}
    monetary = profiles.column("monetary").to_numpy(zero_copy_only=False)
    assert stats["big"]["customers"] == int((monetary > 200).sum())
    assert set(report.members("big")) == {
        u for u, m in zip(profiles.column("user_id").to_pylist(), monetary, strict=True) if m > 200
    }
    (pair,) = report.overlaps.to_pylist()
    assert pair["both"] <= min(stats["big"]["customers"], stats["repeat"]["customers"])
    rfm = marketing.rfm()
    assert sum(r["customers"] for r in rfm.stats.to_pylist()) == profiles.num_rows
    with pytest.raises(ConfigError, match="monetry"):
        marketing.segments({"typo": "monetry > 1"})
