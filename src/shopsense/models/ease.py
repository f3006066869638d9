"""EASE (Steck 2019): a closed-form item-item linear model, strong on implicit feedback.

It inverts an items x items matrix over the items with any interaction, so memory grows with
those items squared (about ``8 * n**2 * MATRIX_COPIES`` bytes) and time with their cube: above
``max_items`` it either keeps the most popular items or refuses, never runs out of memory. Left
unset, ``max_items`` is sized to the machine: the largest ``n`` whose matrices fit
``memory_fraction`` of the free memory and whose inverse takes at most ``max_minutes`` at the
speed of a small inverse timed once per process, rounded down to a coarse step (:func:`coarse`) so
that two runs on one machine size alike. Free memory is what the kernel could give without swapping
(``MemAvailable``; in a container, its limit less what it uses other than reclaimable file cache). The
size used is kept in ``max_items_`` (and reported as the fitted ``params``); what it scaled down, and
why, in ``scaled_down_``. Items nobody interacted with are never recommended by it.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shopsense.errors import ShopsenseError
from shopsense.features.interactions import Interactions
from shopsense.models.base import Recommender


class EASEConfig(BaseModel):
    """Regularisation and the catalogue-size guard."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    l2: float = Field(500.0, gt=0, description="L2 penalty on the item-item weights")
    max_items: int | None = Field(
        None, ge=1, description="largest catalogue modelled (items² floats in memory); None: sized to the machine"
    )
    memory_fraction: float = Field(0.5, gt=0, le=1, description="share of free memory max_items may use when sized")
    memory_gib: float | None = Field(None, gt=0, description="free memory to size for; None: measured at fit")
    max_minutes: float = Field(10.0, gt=0, description="time the inverse may take when max_items is sized")
    over_limit: str = Field("top", pattern="^(top|refuse)$", description="above max_items: keep top items or refuse")


class EASE(Recommender):
    """Scores = history @ B, with B the ridge solution that may not use an item to predict itself."""

    config: EASEConfig
    evidence = "goes_with"
    similar_items_rank = 1
    tuning_grid = ({"l2": 50.0}, {"l2": 250.0}, {"l2": 1000.0})
    sizes_itself = True
    fit_per_million = 2.0
    rank_per_billion = 20.0

    def __init__(self, config: EASEConfig | None = None) -> None:
        self.config = config or EASEConfig()

    @classmethod
    def adjust_estimate(cls, seconds: float, n_items: int, params: Mapping[str, Any]) -> float:
        """Add the inverse: the cube of the items modelled (at most ``max_items``, or as sized at fit) at this
        machine's measured speed."""
        try:
            limit, _ = cls(EASEConfig.model_validate(params)).item_limit()
        except ValueError:  # parameters the fit itself will refuse, with its own message
            limit = n_items
        return seconds + min(n_items, limit) ** 3 * inverse_seconds_per_cube()

    def _fit(self, data: Interactions) -> None:
        matrix = data.matrix
        popularity = np.asarray((matrix > 0).sum(axis=0)).ravel()
        # Items nobody touched have an all-zero Gram row: they cost items² memory and can never score.
        kept = np.flatnonzero(popularity > 0)
        self.scaled_down_: list[str] = []
        limit, why = self.item_limit()
        self.max_items_ = limit
        if len(kept) > limit:
            if self.config.over_limit == "refuse":
                gib = len(kept) ** 2 * 8 * MATRIX_COPIES / 2**30
                raise ShopsenseError(
                    f"EASE: {len(kept):,} items need ~{gib:.1f} GiB; {why}; raise max_items or set over_limit='top'"
                )
            if self.config.max_items is None:
                self.scaled_down_.append(f"ease: max_items {limit:,} of {len(kept):,} items ({why})")
            kept = np.sort(np.argsort(-popularity, kind="stable")[:limit])
        x = matrix[:, kept]
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.config.l2
        inverse = np.linalg.inv(gram)
        b = inverse / -np.diag(inverse)
        b[np.diag_indices_from(b)] = 0.0
        self.kept_ = kept
        self.weights_ = b

    @property
    def resolved_params_(self) -> dict[str, int]:
        """Parameters chosen at fit rather than set (the ``max_items`` used), for reports."""
        return {"max_items": self.max_items_}

    def item_limit(self) -> tuple[int, str]:
        """``max_items``, or the largest catalogue that fits the memory and time budget (rounded down by
        :func:`coarse`), and why."""
        cfg = self.config
        if cfg.max_items is not None:
            return cfg.max_items, f"max_items = {cfg.max_items:,}"
        free = cfg.memory_gib * 2**30 if cfg.memory_gib is not None else free_memory_bytes()
        memory = coarse(items_for_memory(free * cfg.memory_fraction))
        seconds = cfg.max_minutes * 60
        timed = coarse(int((seconds / inverse_seconds_per_cube()) ** (1 / 3)))
        if memory <= timed:
            size = f"{free / 2**30:.1f} GiB" if free >= 2**30 else f"{free / 2**20:.3g} MiB"
            return memory, f"{cfg.memory_fraction:.0%} of {size} free memory"
        return timed, f"an inverse within max_minutes = {cfg.max_minutes:g} at this machine's speed"

    def _score(self, history: Interactions) -> np.ndarray:
        scores = np.full((history.matrix.shape[0], self.n_items_), -np.inf)
        scores[:, self.kept_] = np.asarray(history.matrix[:, self.kept_] @ self.weights_)
        return scores


MATRIX_COPIES = 4
"""Dense n x n float64 matrices alive at the peak of a fit: the Gram matrix (and its float copy), its inverse, B."""
CALIBRATION_ITEMS = 800
"""Size of the inverse timed (three times, once per process) to learn this machine's speed (~0.1 s each)."""


ITEM_STEP = 1_000
"""Sized catalogues are rounded down to this many items (smaller ones to two significant digits)."""


def coarse(items: int) -> int:
    """``items`` rounded down to :data:`ITEM_STEP` (below it, to two significant digits; at least 1), so that
    the small changes of free memory and timing between runs do not change the size."""
    if items >= ITEM_STEP:
        return items // ITEM_STEP * ITEM_STEP
    step = int(10 ** max(len(str(max(items, 1))) - 2, 0))
    return max(1, items // step * step)


def items_for_memory(budget_bytes: float) -> int:
    """The largest n whose ``MATRIX_COPIES`` dense n x n float64 matrices fit ``budget_bytes`` (at least 1)."""
    return max(1, int((budget_bytes / (8 * MATRIX_COPIES)) ** 0.5))


@functools.cache
def inverse_seconds_per_cube() -> float:
    """Seconds per n³ of a float64 inverse on this machine, from a small inverse timed three times (an over-estimate:
    small inverses run below BLAS's top speed)."""
    rng = np.random.default_rng(0)
    a = rng.random((CALIBRATION_ITEMS, CALIBRATION_ITEMS))
    a = a @ a.T + CALIBRATION_ITEMS * np.eye(CALIBRATION_ITEMS)
    best = float("inf")
    for _ in range(3):  # the quickest of three: other work on the machine only ever slows one down
        started = time.perf_counter()
        np.linalg.inv(a)
        best = min(best, time.perf_counter() - started)
    return max(best, 1e-4) / CALIBRATION_ITEMS**3


def free_memory_bytes(cgroup: Path = Path("/sys/fs/cgroup"), meminfo: Path = Path("/proc/meminfo")) -> float:
    """Memory this process may still take: the kernel's MemAvailable, bounded by a cgroup v2 (container) limit
    less the cgroup's use other than its inactive file cache (page cache the kernel reclaims before it fails an
    allocation: counting it, as ``memory.current`` does, would size to whatever files were read lately)."""
    free = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        used = float((cgroup / "memory.current").read_text().strip())
        if limit != "max":
            free = min(free, float(limit) - used + min(_inactive_file(cgroup), used))
    except (OSError, ValueError):
        pass
    return max(free, 0.0)


def _inactive_file(cgroup: Path) -> float:
    """The cgroup's inactive file cache in bytes (``memory.stat``), 0 when unknown."""
    try:
        for line in (cgroup / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "inactive_file":
                return float(value)
    except (OSError, ValueError):
        pass
    return 0.0
