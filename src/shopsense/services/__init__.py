"""The facade every shell calls; :class:`Shop` builds and holds the services of one data directory."""

from shopsense.services.shop import Shop

__all__ = ["Shop"]
