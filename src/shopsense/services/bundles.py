"""Versioned model bundles: what ``shopsense train`` writes and ``shopsense serve`` loads.

A bundle is a folder ``<data_dir>/models/<pipeline>/<version>/`` holding ``bundle.json`` (the
pipeline config, the data range and counts it was trained on, its validation metrics) and
``model.pkl`` (the fitted pipeline) and, when precomputed, ``answers.arrow`` (active users' default
answers, :mod:`shopsense.services.answers`). Versions sort by creation time. The served version is the
newest unless a version is pinned (``PINNED`` beside the versions), which is also how a rollback
works: pin the one before. Folders are written under a temporary name and renamed, so a reader
sees a whole bundle or none.
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from shopsense.durable import sync
from shopsense.errors import ConfigError
from shopsense.pipeline import Pipeline
from shopsense.services.answers import ANSWERS_FILE, Answers, write_answers

_FORMAT = b"shopsense-pipeline-1\n"
_PIN = "PINNED"


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Bundles:
    """The bundles of every pipeline under one models folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

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
        _write_synced(partial / "model.pkl", _FORMAT + pickle.dumps(fitted, protocol=5))
        if answers is not None:
            write_answers(answers, partial / ANSWERS_FILE)
            sync(partial / ANSWERS_FILE)
        _write_synced(partial / "bundle.json", json.dumps(info.to_dict(), indent=2, default=str).encode())
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
        """The pinned version if one is pinned, else the newest; None when nothing is trained."""
        pinned = self.pinned(pipeline)
        if pinned is not None:
            return self._info(self.root / pipeline / pinned)
        versions = self.versions(pipeline)
        return versions[0] if versions else None

    def pinned(self, pipeline: str) -> str | None:
        pin = self.root / pipeline / _PIN
        return pin.read_text().strip() if pin.exists() else None

    def pin(self, pipeline: str, version: str | None) -> BundleInfo | None:
        """Serve ``version`` from now on (None: follow the newest again)."""
        pin = self.root / pipeline / _PIN
        if version is None:
            pin.unlink(missing_ok=True)
            return self.current(pipeline)
        if not (self.root / pipeline / version / "bundle.json").exists():
            known = ", ".join(v.version for v in self.versions(pipeline)) or "none"
            raise ConfigError(f"pipeline {pipeline!r} has no bundle {version!r} (known: {known})")
        _write_synced(pin, version.encode())
        return self.current(pipeline)

    def rollback(self, pipeline: str) -> BundleInfo:
        """Pin the version older than the one served now."""
        current = self.current(pipeline)
        older = [v for v in self.versions(pipeline) if current is not None and v.version < current.version]
        if not older:
            raise ConfigError(f"pipeline {pipeline!r} has no version older than the one served to roll back to")
        info = self.pin(pipeline, older[0].version)
        assert info is not None
        return info

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

    def _info(self, folder: Path) -> BundleInfo:
        try:
            return BundleInfo(**json.loads((folder / "bundle.json").read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"{folder} is not a readable model bundle: {exc}") from exc


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
