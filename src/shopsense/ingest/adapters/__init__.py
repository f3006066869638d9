"""Built-in adapters for public retail datasets: each turns its files into import steps.

An adapter only writes SQL that renames and reshapes the dataset's own columns into
shopsense fields; validation, de-duplication and writing are the importer's, so a
dataset import obeys exactly the rules a user's own file does.
"""

from __future__ import annotations

from shopsense.ingest.adapters.base import Adapter, Step
from shopsense.ingest.adapters.instacart import Instacart
from shopsense.ingest.adapters.movielens import MovieLens1M, MovieLens100K
from shopsense.ingest.adapters.online_retail import OnlineRetail
from shopsense.ingest.adapters.sessions import Diginetica, YooChoose

ADAPTERS: dict[str, Adapter] = {
    adapter.name: adapter
    for adapter in (OnlineRetail(), Instacart(), MovieLens100K(), MovieLens1M(), YooChoose(), Diginetica())
}
"""Adapter by the name used on the command line (``shopsense import dataset NAME``)."""

__all__ = ["ADAPTERS", "Adapter", "Step"]
