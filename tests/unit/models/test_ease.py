"""EASE sized to the machine: free memory as a container sees it, a coarse size that two runs share, and the
size used recorded with the fitted model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shopsense.features.interactions import build_interactions
from shopsense.models.ease import EASE, EASEConfig, coarse, free_memory_bytes
from tests.conftest import events_table

GIB = 2**30


def _cgroup(root: Path, *, limit: str, current: int, inactive_file: int) -> Path:
    root.mkdir()
    (root / "memory.max").write_text(f"{limit}\n")
    (root / "memory.current").write_text(f"{current}\n")
    (root / "memory.stat").write_text(f"anon {current - inactive_file}\nfile {inactive_file}\n"
                                      f"active_file 0\ninactive_file {inactive_file}\n")  # fmt: skip
    return root


def test_a_containers_page_cache_counts_as_free(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: {64 * GIB // 1024} kB\nMemAvailable: {60 * GIB // 1024} kB\n")
    cgroup = _cgroup(tmp_path / "cg", limit=str(8 * GIB), current=7 * GIB, inactive_file=5 * GIB)
    assert free_memory_bytes(cgroup, meminfo) == 6 * GIB, "8 GiB limit - (7 GiB used - 5 GiB reclaimable cache)"
    unlimited = _cgroup(tmp_path / "none", limit="max", current=7 * GIB, inactive_file=0)
    assert free_memory_bytes(unlimited, meminfo) == 60 * GIB
    (cgroup / "memory.stat").unlink()  # no statistics: bounded by the limit less all it uses
    assert free_memory_bytes(cgroup, meminfo) == 1 * GIB


@pytest.mark.parametrize(("items", "rounded"), [(23_456, 23_000), (1_000, 1_000), (987, 980), (12, 12), (0, 1)])
def test_sized_catalogues_are_rounded_down_to_a_coarse_step(items: int, rounded: int) -> None:
    assert coarse(items) == rounded


def test_two_runs_with_slightly_different_free_memory_size_alike() -> None:
    sized = [EASE(EASEConfig(memory_gib=gib, max_minutes=1e6)).item_limit()[0] for gib in (10.0, 10.04)]
    assert sized[0] == sized[1] == 12_000


def test_the_size_used_is_recorded_with_the_fitted_model() -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    rows = [(f"u{u}", f"i{(u + n) % 30}", "purchase", now - timedelta(hours=n)) for u in range(20) for n in range(5)]
    data = build_interactions(events_table(rows), {"purchase": 1.0})
    sized = EASE(EASEConfig(memory_gib=0.00001)).fit(data)
    assert sized.max_items_ == 12 and sized.resolved_params_ == {"max_items": 12}
    assert sized.scaled_down_ == ["ease: max_items 12 of 24 items (50% of 0.0102 MiB free memory)"]
    assert EASE(EASEConfig(max_items=7)).fit(data).resolved_params_ == {"max_items": 7}
