"""Which tombstones a bundle honours: those of users erased after its training read the events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shopsense.services.bundles import BundleInfo
from shopsense.store.base import erasure_hash

READ = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _info(read_at: datetime | None) -> BundleInfo:
    return BundleInfo(
        pipeline="default",
        version="20260301T120500-abcdef",
        created_at=(READ + timedelta(minutes=5)).isoformat(),
        data_from=None,
        data_to=None,
        events=10,
        users=2,
        items=3,
        metrics={},
        config={},
        read_at=None if read_at is None else read_at.isoformat(),
    )


def test_a_bundle_forgets_users_erased_after_its_training_read_the_events_and_only_those() -> None:
    """Erased while it trained (after the read, before the bundle was written): forgotten. Erased before the
    read and come back since: the bundle learnt only their new events, which are theirs to be answered from."""
    tombstones = {
        erasure_hash("during"): READ + timedelta(minutes=1),
        erasure_hash("later"): READ + timedelta(days=3),
        erasure_hash("returned"): READ - timedelta(days=1),
    }
    assert _info(READ).erased_users(tombstones) == {erasure_hash("during"), erasure_hash("later")}


def test_a_bundle_that_does_not_say_when_it_read_honours_every_tombstone() -> None:
    tombstones = {erasure_hash("a"): READ - timedelta(days=400), erasure_hash("b"): READ}
    assert _info(None).erased_users(tombstones) == set(tombstones)
