"""One module per dashboard page, each with ``router = APIRouter()``; :func:`shopsense.dashboard.app.mount_dashboard`
includes them (see :mod:`shopsense.dashboard.app` for the contract a page follows)."""
