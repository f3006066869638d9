"""The web dashboard: the same app as the API serves it at ``/`` (see :mod:`shopsense.dashboard.app`).

A UI layer only: no SQL, no model or ranking code. Every page reaches the shop's state through
:mod:`shopsense.services`, the way the API's routes do (``shopsense.api.deps``).
"""

from shopsense.dashboard.app import mount_dashboard

__all__ = ["mount_dashboard"]
