"""Storage behind narrow protocols; ``open_store(url)`` picks the backend."""

from shopsense.store.base import (
    CatalogStore,
    EventStore,
    Store,
    StoreSummary,
    UserStore,
    WriteResult,
    open_store,
    register_backend,
)

__all__ = [
    "CatalogStore",
    "EventStore",
    "Store",
    "StoreSummary",
    "UserStore",
    "WriteResult",
    "open_store",
    "register_backend",
]
