"""Versioned model bundles: what ``shopsense train`` writes and ``shopsense serve`` loads.

A bundle is a folder ``<data_dir>/models/<pipeline>/<version>/`` holding ``bundle.json`` (the
pipeline config, the data range and counts it was trained on, its validation metrics) and
``model.pkl`` (the fitted pipeline) and, when precomputed, ``answers.arrow`` (active users' default
answers, :mod:`shopsense.services.answers`). Versions sort by creation time. Folders are written under
a temporary name and renamed, so a reader sees a whole bundle or none.

Which version is served is a :class:`PinLog`'s decision, the newest wins:

- :class:`PinFile` (the embedded store): the newest bundle unless a version is pinned (``PINNED``
  beside the versions), which is also how a rollback works: pin the one before. A new training run
  does not override a pin;
- ``PinTable`` (:mod:`shopsense.services.coordination`, a PostgreSQL store): the ``bundle_pins`` log,
  where training records its promotion too, so every replica serves the version its newest row
  names (the newest bundle when that row names none). A new training run overrides an older pin.
"""

from __future__ import annotations

import json
import logging
import pickle
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from shopsense.durable import sync, write_synced
from shopsense.errors import ConfigError
from shopsense.pipeline import Pipeline
from shopsense.services.answers import ANSWERS_FILE, Answers, purge_answers, write_answers
from shopsense.settings import Settings
from shopsense.store.base import erased_since, is_server_url

MODELS_FOLDER = "models"
"""Where trained bundles live under ``data_dir``."""
_FORMAT = b"shopsense-pipeline-1\n"
_PIN = "PINNED"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleInfo:
    """A bundle's manifest (``bundle.json``)."""

    pipeline: str
    version: str
    created_at: str
    data_from: str | None
    data_to: str | None
    events: int
    users: int
    items: int
    metrics: dict[str, Any]
    config: dict[str, Any]
    answers_k: int = 0
    """Items per precomputed answer (0: none were precomputed)."""
    answers_users: int = 0
    read_at: str | None = None
    """When training read its events (ISO 8601, UTC); None in bundles written before it was recorded."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def erased_users(self, tombstones: Mapping[str, datetime]) -> set[str]:
        """The tombstones this bundle must honour: users erased after its training read the events (all of
        them for a bundle that does not say when that was)."""
        return erased_since(tombstones, None if self.read_at is None else datetime.fromisoformat(self.read_at))


@dataclass(frozen=True)
class Purged:
    """What :meth:`Bundles.purge_user` did: the answer rows removed, and the bundles
    (``pipeline/version``) whose answers could not be purged."""

    removed: int = 0
    failed: list[str] = field(default_factory=list)


class PinAction(StrEnum):
    """Why a version became the one served."""

    PROMOTE = "promote"
    """Training made it (newest)."""
    PIN = "pin"
    LATEST = "latest"
    """Unpinned: serve the newest again (the decision names no version)."""
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Pin:
    """The newest decision about a pipeline: the version to serve (None: the newest) and why."""

    version: str | None
    action: PinAction


class PinLog(Protocol):
    """Where the decisions about which version to serve are kept."""

    def newest(self, pipeline: str) -> Pin | None:
        """The decision in force; None when none was ever recorded (serve the newest)."""
        ...

    def record(self, pipeline: str, version: str | None, action: PinAction) -> None: ...


class PinFile:
    """The ``PINNED`` file beside a pipeline's versions: it keeps a pin only, so a promotion records
    nothing (the newest is served whenever nothing is pinned)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def newest(self, pipeline: str) -> Pin | None:
        pin = self.root / pipeline / _PIN
        return Pin(pin.read_text().strip(), PinAction.PIN) if pin.exists() else None

    def record(self, pipeline: str, version: str | None, action: PinAction) -> None:
        pin = self.root / pipeline / _PIN
        if action is PinAction.LATEST:
            pin.unlink(missing_ok=True)
        elif action is not PinAction.PROMOTE and version is not None:
            write_synced(pin, version.encode())


class Bundles:
    """The bundles of every pipeline under one models folder, served as ``pins`` decide (the
    ``PINNED`` files there unless told otherwise)."""

    def __init__(self, root: Path, pins: PinLog | None = None) -> None:
        self.root = root
        self.pins = pins or PinFile(root)

    @classmethod
    def of(cls, settings: Settings) -> Bundles:
        """The bundles of a data directory with the pins its store keeps: the ``PINNED`` files, or the
        ``bundle_pins`` table of a PostgreSQL store, so that every process training or serving over one
        database (CLI, jobs, replicas) records and follows the same decisions."""
        root = settings.data_dir / MODELS_FOLDER
        url = settings.resolved_store_url
        if not is_server_url(url):
            return cls(root)
        from shopsense.services.coordination import PinTable  # imports the database driver

        return cls(root, PinTable(url))

    def write(self, fitted: Pipeline, manifest: dict[str, Any], answers: pa.Table | None = None) -> BundleInfo:
        """Save a fitted pipeline (and its precomputed answers) as a new version; durable (fsynced) before it returns.

        ``manifest`` says ``answers_k`` when ``answers`` is given.
        """
        now = datetime.now(UTC)
        version = now.strftime("%Y%m%dT%H%M%S") + f"-{secrets.token_hex(3)}"
        info = BundleInfo(
            pipeline=fitted.config.name,
            version=version,
            created_at=now.isoformat(timespec="seconds"),
            config=fitted.config.model_dump(mode="json"),
            **manifest,
        )
        folder = self.root / info.pipeline / version
        partial = folder.with_name(f".{version}.partial")
        partial.mkdir(parents=True)
        write_synced(partial / "model.pkl", _FORMAT + pickle.dumps(fitted, protocol=5))
        if answers is not None:
            write_answers(answers, partial / ANSWERS_FILE)
            sync(partial / ANSWERS_FILE)
        write_synced(partial / "bundle.json", json.dumps(info.to_dict(), indent=2, default=str).encode())
        partial.rename(folder)
        return info

    def versions(self, pipeline: str) -> list[BundleInfo]:
        """Every complete bundle of a pipeline, newest first."""
        folder = self.root / pipeline
        if not folder.is_dir():
            return []
        found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return [self._info(p) for p in sorted(found, key=lambda p: p.name, reverse=True)]

    def current(self, pipeline: str) -> BundleInfo | None:
        """The version the newest decision names, else the newest; None when nothing is trained."""
        version = self.chosen(pipeline)
        return None if version is None else self._info(self.root / pipeline / version)

    def chosen(self, pipeline: str) -> str | None:
        """The version :meth:`current` describes, found without reading any manifest: cheap enough
        for a replica to ask every second whether it serves the right one."""
        pin = self.pins.newest(pipeline)
        if pin is not None and pin.version is not None:
            return pin.version
        folder = self.root / pipeline
        names = (
            [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")] if folder.is_dir() else []
        )
        return max(names, default=None)

    def pinned(self, pipeline: str) -> str | None:
        """The version pinned or rolled back to (not one merely promoted by training), if any."""
        pin = self.pins.newest(pipeline)
        return pin.version if pin is not None and pin.action in (PinAction.PIN, PinAction.ROLLBACK) else None

    def promote(self, info: BundleInfo) -> None:
        """Record that a newly trained bundle is the one to serve."""
        self.pins.record(info.pipeline, info.version, PinAction.PROMOTE)

    def pin(self, pipeline: str, version: str | None) -> BundleInfo | None:
        """Serve ``version`` from now on (None: follow the newest again)."""
        if version is None:
            self.pins.record(pipeline, None, PinAction.LATEST)
            return self.current(pipeline)
        return self._choose(pipeline, version, PinAction.PIN)

    def rollback(self, pipeline: str) -> BundleInfo:
        """Pin the version older than the one served now."""
        current = self.current(pipeline)
        older = [v for v in self.versions(pipeline) if current is not None and v.version < current.version]
        if not older:
            raise ConfigError(f"pipeline {pipeline!r} has no version older than the one served to roll back to")
        return self._choose(pipeline, older[0].version, PinAction.ROLLBACK)

    def _choose(self, pipeline: str, version: str, action: PinAction) -> BundleInfo:
        if not (self.root / pipeline / version / "bundle.json").exists():
            known = ", ".join(v.version for v in self.versions(pipeline)) or "none"
            raise ConfigError(f"pipeline {pipeline!r} has no bundle {version!r} (known: {known})")
        self.pins.record(pipeline, version, action)
        return self._info(self.root / pipeline / version)

    def load(self, info: BundleInfo) -> Pipeline:
        """The fitted pipeline of a bundle."""
        path = self.root / info.pipeline / info.version / "model.pkl"
        blob = path.read_bytes()
        if not blob.startswith(_FORMAT):
            raise ConfigError(f"{path} is not a shopsense pipeline bundle")
        fitted = pickle.loads(blob[len(_FORMAT) :])
        assert isinstance(fitted, Pipeline)
        return fitted

    def answers(self, info: BundleInfo) -> Answers | None:
        """The bundle's precomputed answers, memory-mapped; None when it has none."""
        path = self.root / info.pipeline / info.version / ANSWERS_FILE
        return Answers.load(path, info.answers_k) if info.answers_k and path.exists() else None

    def purge_user(self, user_id: str) -> Purged:
        """Remove an erased user's precomputed answers from every stored bundle of every pipeline (each
        file rewritten atomically, under a lock, :func:`~shopsense.services.answers.purge_answers`).

        A bundle whose answers cannot be read or rewritten (unreadable, read-only, corrupt) is logged and
        reported, and the others are purged all the same: the store has erased the user already, so a
        retry would find nothing to erase. A bundle being written meanwhile (a training that read the
        user's events before the erasure) is not reached here: it is checked against the store's
        tombstones when it is loaded instead.
        """
        removed, failed = 0, []
        for path in sorted(self.root.glob(f"[!.]*/[!.]*/{ANSWERS_FILE}")):
            try:
                removed += purge_answers(path, user_id)
            except (OSError, pa.ArrowException) as exc:
                bundle = f"{path.parent.parent.name}/{path.parent.name}"
                log.error("bundle %s: an erased user's precomputed answers could not be removed: %s", bundle, exc)
                failed.append(bundle)
        return Purged(removed, failed)

    def trained_on(self, first: datetime, last: datetime) -> list[str]:
        """The stored bundles (``pipeline/version``) whose training data range overlaps ``first``..``last``
        (the times of a user's events): those that may have learnt from that user."""
        found = []
        for folder in sorted(self.root.glob("[!.]*/[!.]*/bundle.json")):
            try:
                info = self._info(folder.parent)
            except ConfigError:
                continue
            starts = datetime.fromisoformat(info.data_from) if info.data_from else first
            ends = datetime.fromisoformat(info.data_to) if info.data_to else last
            if info.events and starts <= last and first <= ends:
                found.append(f"{info.pipeline}/{info.version}")
        return found

    def _info(self, folder: Path) -> BundleInfo:
        try:
            return BundleInfo(**json.loads((folder / "bundle.json").read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"{folder} is not a readable model bundle: {exc}") from exc
