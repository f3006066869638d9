"""Model classes by the name used in configuration, and construction from plain parameters."""

from __future__ import annotations

from typing import Any, get_type_hints

from pydantic import BaseModel

from shopsense.models.als import ALS
from shopsense.models.base import Recommender
from shopsense.models.bpr import BPR
from shopsense.models.content import Content
from shopsense.models.ease import EASE
from shopsense.models.hybrid import Hybrid
from shopsense.models.itemknn import ItemKNN
from shopsense.models.popular import Popular
from shopsense.models.repeat import RepeatBuy
from shopsense.models.sasrec import SASRec
from shopsense.models.userknn import UserKNN

MODELS: dict[str, type[Recommender]] = {
    "popular": Popular,
    "repeat_buy": RepeatBuy,
    "item_knn": ItemKNN,
    "user_knn": UserKNN,
    "ease": EASE,
    "als": ALS,
    "bpr": BPR,
    "content": Content,
    "sasrec": SASRec,
    "hybrid": Hybrid,
}


def config_class(name: str) -> type[BaseModel]:
    """The typed config of a registered model."""
    config: type[BaseModel] = get_type_hints(model_class(name))["config"]
    return config


def model_class(name: str) -> type[Recommender]:
    """A registered model class, with the list of names when the name is unknown."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(name: str, params: dict[str, Any] | None = None) -> Recommender:
    """A model from its name and config parameters (validated by its config class)."""
    config = config_class(name).model_validate(params or {})
    return model_class(name)(config)  # type: ignore[call-arg]
