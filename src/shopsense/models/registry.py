"""Model classes by the name used in configuration, and construction from plain parameters.

Each name maps to where its class lives ("module:Class"), imported the first time the class is
asked for: checking or listing names imports nothing, and torch (SASRec) or scikit-learn
(content, the kNN models) load only with the models that use them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module
from typing import Any, get_type_hints

from pydantic import BaseModel

from shopsense.models.base import Recommender

MODEL_PATHS: dict[str, str] = {
    "popular": "shopsense.models.popular:Popular",
    "repeat_buy": "shopsense.models.repeat:RepeatBuy",
    "item_knn": "shopsense.models.itemknn:ItemKNN",
    "user_knn": "shopsense.models.userknn:UserKNN",
    "ease": "shopsense.models.ease:EASE",
    "als": "shopsense.models.als:ALS",
    "bpr": "shopsense.models.bpr:BPR",
    "content": "shopsense.models.content:Content",
    "sasrec": "shopsense.models.sasrec:SASRec",
    "hybrid": "shopsense.models.hybrid:Hybrid",
}
"""Registered model names and where each class lives."""


class _Registry(Mapping[str, type[Recommender]]):
    """Names to model classes; a class's module is imported when the class is looked up, not before."""

    def __init__(self, paths: Mapping[str, str]) -> None:
        self._paths = paths

    def __getitem__(self, name: str) -> type[Recommender]:
        module, _, attribute = self._paths[name].partition(":")
        cls: type[Recommender] = getattr(import_module(module), attribute)
        return cls

    def __contains__(self, name: object) -> bool:  # Mapping's own would import the class
        return name in self._paths

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._paths!r})"


MODELS: Mapping[str, type[Recommender]] = _Registry(MODEL_PATHS)
"""Registered model classes by name (read-only; each imported on first lookup)."""


def config_class(name: str) -> type[BaseModel]:
    """The typed config of a registered model."""
    config: type[BaseModel] = get_type_hints(model_class(name))["config"]
    return config


def model_class(name: str) -> type[Recommender]:
    """A registered model class, with the list of names when the name is unknown.

    Importing a class needs none of its optional extras: a neural model says what to install when it is fitted.
    """
    if name not in MODEL_PATHS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODEL_PATHS))}")
    return MODELS[name]


def build_model(name: str, params: dict[str, Any] | None = None) -> Recommender:
    """A model from its name and config parameters (validated by its config class)."""
    config = config_class(name).model_validate(params or {})
    return model_class(name)(config)  # type: ignore[call-arg]
