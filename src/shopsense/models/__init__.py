"""Candidate models, one algorithm per module, all on the contract in :mod:`shopsense.models.base`."""

from shopsense.models.base import NotFitted, Recommender, RecQuery, ScoredItems
from shopsense.models.registry import MODELS, build_model, config_class

__all__ = ["MODELS", "NotFitted", "RecQuery", "Recommender", "ScoredItems", "build_model", "config_class"]
