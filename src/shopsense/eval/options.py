"""What a user may set on an evaluation run: model parameters (``ease.max_items=4000`` or a TOML file) and a
time budget (``10m``), checked against the models' typed configs before any data is read.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shopsense.models.registry import MODEL_PATHS, config_class

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``1.5h`` (ValueError naming the text otherwise)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"budget {text!r} is not a duration: write e.g. 90s, 10m or 1.5h")
    return float(match.group(1)) * _UNITS[match.group(2) or ""]


def parse_params(assignments: Iterable[str], file: Path | None = None) -> dict[str, dict[str, Any]]:
    """Per-model parameters from ``MODEL.PARAM=VALUE`` assignments over those of a TOML file (``[MODEL]`` tables).

    Values are read as TOML literals (``4000``, ``0.5``, ``true``, ``["purchase"]``), else as text, and typed
    by the model's config: an unknown model or parameter, or a value the config refuses, raises ValueError
    naming it and what is valid.
    """
    params: dict[str, dict[str, Any]] = {}
    if file is not None:
        try:
            values = tomllib.loads(file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ValueError(f"--params {file}: {error}") from error
        for model, table in values.items():
            if not isinstance(table, dict):
                raise ValueError(f"--params {file}: {model!r} must be a table ([{model}]) of its parameters")
            params.setdefault(_model(model, f"--params {file}"), {}).update(table)
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        model, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ValueError(f"--param {assignment!r}: write MODEL.PARAM=VALUE, e.g. ease.max_items=4000")
        params.setdefault(_model(model, f"--param {assignment}"), {})[name.strip()] = _literal(raw.strip())
    for model, values in params.items():
        check_params(model, values)
    return params


def check_params(model: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` validated by the model's config; ValueError naming an unknown parameter and the valid ones."""
    config = config_class(model)
    unknown = sorted(set(values) - set(config.model_fields))
    if unknown:
        valid = ", ".join(sorted(config.model_fields))
        raise ValueError(f"{model} has no parameter {', '.join(map(repr, unknown))}; valid: {valid}")
    try:
        config.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(f"{model}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ValueError(problems) from error
    return values


def _model(name: str, where: str) -> str:
    if name not in MODEL_PATHS:
        raise ValueError(f"{where}: unknown model {name!r}; known: {', '.join(sorted(MODEL_PATHS))}")
    return name


def _literal(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
