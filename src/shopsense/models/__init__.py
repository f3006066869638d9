"""Candidate models, one algorithm per module, all on the contract in :mod:`shopsense.models.base`."""

from shopsense.models.base import NotFitted, Recommender
from shopsense.models.registry import MODELS, build_model, config_class

__all__ = ["MODELS", "NotFitted", "Recommender", "build_model", "config_class"]
