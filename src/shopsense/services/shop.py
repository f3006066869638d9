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
  direct services refuse, instead of racing the writer on one connection;
- long work (training, profile builds, audiences) goes to :attr:`jobs`, which runs it on store handles
  of its own (:meth:`~shopsense.store.base.Store.handle`), so it never waits in, or holds up, the
  writer's queue; the writer's short marketing reads run on a reader handle likewise.

Services that load heavy libraries (models, marketing) are imported on first use, so that a CLI
command that never needs them starts fast.

What several server processes over one PostgreSQL store must agree on (API keys, which bundle is
served, who is alive) lives in that database instead of beside the store
(:mod:`shopsense.services.coordination`); with the embedded store it stays in ``data_dir``.
"""

from __future__ import annotations

import threading
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any

from shopsense.errors import ShopsenseError
from shopsense.services.data import DataService
from shopsense.services.keys import KeyFile, KeyRing
from shopsense.settings import Settings
from shopsense.store import Store, open_store
from shopsense.store.base import ReplicaFeed, is_server_url

if TYPE_CHECKING:
    from shopsense.eval.harness import EvalConfig
    from shopsense.services.bundles import Bundles
    from shopsense.services.coordination import Replicas
    from shopsense.services.erasure import Erasure
    from shopsense.services.evaluation import EvaluationRun
    from shopsense.services.jobs import JobRunner
    from shopsense.services.marketing import MarketingService
    from shopsense.services.recommendation import RecommendationService
    from shopsense.services.serving import ServingService

KEYS_FILE = "keys.json"
"""The API key file of the embedded store, beside it in ``data_dir`` (not in it: the CLI revokes keys
while a server runs)."""


class Shop:
    """Every service of one shop's data directory, built from ``settings`` once per process.

    ``server=True`` opens the store with the server's options (``serve.store_threads``,
    ``serve.store_checkpoint_mb``) instead of the ingest ones (``ingest.memory_limit``,
    ``ingest.threads``). Use as a context manager, or call :meth:`close`::

        with Shop(settings) as shop:
            shop.data.import_file(path, mapping)
            shop.recommendations.train("default")
    """

    def __init__(self, settings: Settings, *, server: bool = False, read_only: bool = False) -> None:
        """``read_only``: open the store to read only, so that commands that only read (stats, export,
        segment, recommend, evaluate) run beside each other on the embedded store; they may not write (the
        store refuses)."""
        self.settings = settings
        self._data = DataService(settings, self._open_for_server if server else None, read_only=read_only)
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

        return RecommendationService(self._data, self.bundles)

    @cached_property
    def _marketing(self) -> MarketingService:
        from shopsense.services.marketing import MarketingService

        return MarketingService(self.settings, self._data.store)

    @cached_property
    def jobs(self) -> JobRunner:
        """Long work as jobs (training, profile builds, audiences), each on a store handle of its own, so it
        holds up neither requests nor the serving writer; allowed in a server, unlike the direct services."""
        from shopsense.services.jobs import SILENT_S, JobRunner

        store = self._data.store
        # A store other processes share holds their live jobs too: only silent ones are abandoned.
        return JobRunner(self.settings, store.handle, silent_s=SILENT_S if isinstance(store, ReplicaFeed) else 0.0)

    def evaluation(self, dataset: str, config: EvalConfig, **options: Any) -> EvaluationRun:
        """An offline evaluation over every stored event, weighted by the settings' event types (see
        :func:`~shopsense.services.evaluation.store_evaluation`): the events are read now, so the store
        may be closed before the run's models are fitted."""
        from shopsense.services.evaluation import store_evaluation

        return store_evaluation(self.store, self.settings.event_types.weights, dataset, config, **options)

    def erase(self, user_id: str, *, retrain: bool = False) -> Erasure:
        """Erase a user everywhere (store, stored bundles' answers; see :mod:`shopsense.services.erasure`);
        with ``retrain``, train the served pipeline at once on what is left, so no served model learnt from
        the user. In a server, the serving writer erases (and memory forgets) instead; it never retrains.
        """
        from shopsense.services.erasure import erase_user

        if self._serving is not None:
            return self._serving.erase_user(user_id)
        store = self.store
        erased = erase_user(user_id, self.bundles, lambda erase: erase(store))
        if retrain:
            try:
                version = self.recommendations.train(self.settings.serve.pipeline).bundle.version
                erased.models["forgotten_at"] = f"retrained ({version})"
            except ShopsenseError as exc:  # erased all the same; the next training forgets
                erased.models["retrain_error"] = str(exc)
        return erased

    def serving(self) -> ServingService:
        """The online service (store writer thread, live histories, served bundle), built on the first
        call and the same object after; from then on it owns the store."""
        serving = self._serving
        if serving is None:
            with self._lock:
                if self._serving is None:
                    from shopsense.services.serving import ServingService

                    serving = ServingService(self.settings, self._data.store)
                    serving.bundles = self.bundles  # the shop's pins: with a shared store, the database's
                    serving.reload()  # what they name, if not the newest it loaded
                    self._serving = serving
                serving = self._serving
        return serving

    def _direct(self, name: str) -> None:
        if self._serving is not None:
            raise RuntimeError(
                f"Shop.{name} would use the store beside the serving writer thread that owns it: "
                "go through Shop.serving() in a server"
            )

    # -- what servers share: beside the embedded store (no store needed), or in a shared database ---------

    @cached_property
    def keys(self) -> KeyRing:
        """The API keys: ``<data_dir>/keys.json``, or the ``api_keys`` table of a PostgreSQL store; one
        ring, so the server's cache of verified keys lasts."""
        url = self._shared_url()
        if url is None:
            return KeyRing(KeyFile(self.settings.data_dir / KEYS_FILE))
        from shopsense.services.coordination import KeyTable

        return KeyRing(KeyTable(url))

    @cached_property
    def bundles(self) -> Bundles:
        """The trained model bundles (``<data_dir>/models``, which every server reads): versions, and pins
        and rollbacks (beside them, or in the ``bundle_pins`` table of a PostgreSQL store)."""
        from shopsense.services.bundles import Bundles  # unpickling bundles needs the model libraries

        self._shared_url()  # a fresh shared database gets its bundle_pins table before it is read
        return Bundles.of(self.settings)

    @cached_property
    def replicas(self) -> Replicas:
        """This process among the servers of the store: a heartbeat row each in the ``replicas`` table of a
        PostgreSQL store; alone with the embedded one."""
        from shopsense.services.coordination import ReplicaTable, SoloReplica

        url = self._shared_url()
        return SoloReplica() if url is None else ReplicaTable(url)

    def _shared_url(self) -> str | None:
        """The store's URL when it is a database several processes share, its schema made (the store is
        opened once: a fresh database gets its tables, an outdated one is refused); None for the embedded store."""
        url = self.settings.resolved_store_url
        if not is_server_url(url):
            return None
        _ = self._data.store
        return url

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the online service (its writer finishes queued writes first), then close the store.
        The shop can be used again afterwards: it reopens what it needs."""
        with self._lock:
            serving, self._serving = self._serving, None
        jobs = self.__dict__.pop("jobs", None)
        try:
            if jobs is not None:  # its handles are on the store closed below (a DuckDB cursor dies with it)
                jobs.close()
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
