"""The adapter contract: dataset files in, a list of import steps out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shopsense.domain import RecordKind
from shopsense.errors import InputError
from shopsense.ingest.mapping import Mapping
from shopsense.ingest.validate import lit


@dataclass(frozen=True)
class Step:
    """One import: SQL whose columns are field names, and the rows it leaves out on purpose.

    ``exclusions`` maps a reason to SQL counting the rows that reason excludes, so every
    row of the dataset is either imported, rejected with a reason, or counted as excluded.
    """

    kind: RecordKind
    label: str
    sql: str
    mapping: Mapping
    exclusions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """What importing a dataset takes: tables staged once (name -> SQL), then steps in order."""

    label: str
    steps: list[Step]
    tables: dict[str, str] = field(default_factory=dict)


class Adapter(Protocol):
    """A public dataset that ``shopsense import dataset NAME`` knows how to read."""

    name: str
    folder: str  # folder name under ../shared/datasets
    summary: str

    def plan(self, paths: list[Path]) -> Plan:
        """Import plan for the given files or folder (items and users before events)."""
        ...


def find_files(paths: list[Path], names: list[str], adapter: str) -> list[Path]:
    """Expand folders into the adapter's standard file names; plain files pass through."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = [path / n for n in names if (path / n).is_file()]
            if not found:
                raise InputError(str(path), f"{adapter}: none of {', '.join(names)} is in this folder")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise InputError(str(path), "no such file or folder")
    return out


def csv(path: Path, **options: object) -> str:
    """``read_csv`` over ``path`` with every column as text (the importer parses and checks)."""
    extra = "".join(f", {k}={lit(v)}" for k, v in options.items())
    return f"read_csv({lit(str(path))}, all_varchar=true, header=true, strict_mode=true{extra})"
