"""Candidate models, one algorithm per module, all on the contract in :mod:`shopsense.models.base`."""

from shopsense.models.base import Recommender
from shopsense.models.ease import EASE, EASEConfig
from shopsense.models.itemknn import ItemKNN, ItemKNNConfig
from shopsense.models.popular import Popular, PopularConfig

MODELS: dict[str, type[Recommender]] = {"popular": Popular, "item_knn": ItemKNN, "ease": EASE}
"""Model classes by the name used in configuration."""

__all__ = ["EASE", "MODELS", "EASEConfig", "ItemKNN", "ItemKNNConfig", "Popular", "PopularConfig", "Recommender"]
