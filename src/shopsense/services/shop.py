"""Shop: the one object through which every shell (CLI, API, dashboard) reaches the shop's state.

A process builds one ``Shop`` from its :class:`~shopsense.settings.Settings` and asks it for the
services it needs. It exists so that the shells hold no wiring of their own: which store URL, which
store options, where the keys and bundles live, and which service shares what with which. The
services keep their logic; ``Shop`` only builds them, once each, and closes what it opened.

The embedded store admits one process and its connection one thread at a time, so the store is
opened lazily (a command that only lists keys never opens it), at most once, and by one owner:

- batch work (CLI, dashboard jobs) calls :attr:`data`, :attr:`recommendations` and :attr:`marketing`
  directly, on the caller's thread;
- a server calls :meth:`serving`, whose writer thread owns the store from then on; every store
  access goes through it (``serving().marketing(...)``, ``serving().user_history(...)``), and the
  direct services refuse, instead of racing the writer on one connection.

Services that load heavy libraries (models, marketing) are imported on first use, so that a CLI
command that never needs them starts fast.
"""

from __future__ import annotations

import threading
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING

from shopsense.errors import ShopsenseError
from shopsense.services.data import DataService
from shopsense.services.keys import KeyRing
from shopsense.settings import Settings
from shopsense.store import Store, open_store

if TYPE_CHECKING:
    from shopsense.eval.harness import EvalConfig
    from shopsense.services.bundles import Bundles
    from shopsense.services.evaluation import EvaluationRun
    from shopsense.services.marketing import MarketingService
    from shopsense.services.recommendation import RecommendationService
    from shopsense.services.serving import ServingService

KEYS_FILE = "keys.json"
"""The API key file, beside the store in ``data_dir`` (not in it: the CLI revokes keys while a server runs)."""
MODELS_FOLDER = "models"
"""Where trained bundles live under ``data_dir``."""


class Shop:
    """Every service of one shop's data directory, built from ``settings`` once per process.

    ``server=True`` opens the store with the server's options (``serve.store_threads``,
    ``serve.store_checkpoint_mb``) instead of the ingest ones (``ingest.memory_limit``,
    ``ingest.threads``). Use as a context manager, or call :meth:`close`::

        with Shop(settings) as shop:
            shop.data.import_file(path, mapping)
            shop.recommendations.train("default")
    """

    def __init__(self, settings: Settings, *, server: bool = False) -> None:
        self.settings = settings
        self._data = DataService(settings, self._open_for_server if server else None)
        self._serving: ServingService | None = None
        self._lock = threading.Lock()

    # -- the store and the services over it -------------------------------------------------------

    @property
    def store(self) -> Store:
        """The configured store, opened on first use and kept open until :meth:`close`."""
        self._direct("store")
        return self._data.store

    @property
    def data(self) -> DataService:
        """Imports, stats and exports."""
        self._direct("data")
        return self._data

    @property
    def recommendations(self) -> RecommendationService:
        """Training, per-user and batch recommendations, similar items (on the caller's thread)."""
        self._direct("recommendations")
        return self._recommendations

    @property
    def marketing(self) -> MarketingService:
        """Profiles, segments, clusters, audiences and campaigns (on the caller's thread)."""
        self._direct("marketing")
        return self._marketing

    @cached_property
    def _recommendations(self) -> RecommendationService:
        # One instance: it keeps the pipelines it loaded, so a second request does not unpickle again.
        from shopsense.services.recommendation import RecommendationService  # loads the model libraries

        return RecommendationService(self._data)

    @cached_property
    def _marketing(self) -> MarketingService:
        from shopsense.services.marketing import MarketingService

        return MarketingService(self.settings, self._data.store)

    def evaluation(self, dataset: str, config: EvalConfig, *, tune: bool = True) -> EvaluationRun:
        """An offline evaluation run over every stored event, weighted by the settings' event types.

        Raises:
            ShopsenseError: the store has no events.
        """
        from shopsense.services.evaluation import EvaluationRun  # the harness loads scipy.stats

        store = self.store
        events = store.scan_events()
        if events.num_rows == 0:
            raise ShopsenseError("the store has no events: import some first")
        weighted = config.model_copy(update={"weights": self.settings.event_types.weights})
        return EvaluationRun(dataset, events, weighted, catalog=store.scan_items(), tune=tune)

    def serving(self) -> ServingService:
        """The online service (store writer thread, live histories, served bundle), built on the first
        call and the same object after; from then on it owns the store."""
        serving = self._serving
        if serving is None:
            with self._lock:
                if self._serving is None:
                    from shopsense.services.serving import ServingService

                    self._serving = ServingService(self.settings, self._data.store)
                serving = self._serving
        return serving

    def _direct(self, name: str) -> None:
        if self._serving is not None:
            raise RuntimeError(
                f"Shop.{name} would use the store beside the serving writer thread that owns it: "
                "go through Shop.serving() in a server"
            )

    # -- files beside the store (no store needed) ---------------------------------------------------

    @cached_property
    def keys(self) -> KeyRing:
        """The API keys (``<data_dir>/keys.json``); one ring, so the server's cache of verified keys lasts."""
        return KeyRing(self.settings.data_dir / KEYS_FILE)

    @cached_property
    def bundles(self) -> Bundles:
        """The trained model bundles (``<data_dir>/models``): versions, pins, rollbacks."""
        from shopsense.services.bundles import Bundles  # unpickling bundles needs the model libraries

        return Bundles(self.settings.data_dir / MODELS_FOLDER)

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the online service (its writer finishes queued writes first), then close the store.
        The shop can be used again afterwards: it reopens what it needs."""
        with self._lock:
            serving, self._serving = self._serving, None
        try:
            if serving is not None:
                serving.close()
        finally:
            self.__dict__.pop("_marketing", None)  # it holds the store being closed
            self.__dict__.pop("_recommendations", None)  # its pipelines read that store's catalogue
            self._data.close()

    def __enter__(self) -> Shop:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _open_for_server(self) -> Store:
        serve = self.settings.serve
        return open_store(
            self.settings.resolved_store_url, threads=serve.store_threads, checkpoint_mb=serve.store_checkpoint_mb
        )
