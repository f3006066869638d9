"""The C allocator under a long-running server: few arenas, and freed pages handed back to the system.

The server's native code (DuckDB's scans, joins and appends, Arrow's buffers, numpy) allocates through
glibc's ``malloc``. glibc gives every thread that allocates while another does an arena of its own, up
to eight per core, and keeps the pages freed inside an arena for reuse by that arena only. A server
runs a dozen such threads (request workers, the store's writer and reader, jobs), so memory freed by one
query sits idle in its arena while the next query, on another thread, takes fresh pages: RSS climbed
for as long as the soak benchmark ran (``benchmarks/soak.py``) although nothing was kept. Two calls
bound it: fewer arenas (:func:`limit_arenas`, before the threads start) and a periodic
``malloc_trim`` (:class:`Trimmer`), which returns the free pages of every arena to the system.

Elsewhere than glibc (musl, macOS) both are no-ops: they report that they did nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import threading
import tracemalloc
from functools import cache

log = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""``mallopt``'s parameter number for the arena limit (glibc's malloc.h)."""


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes, libc.malloc_trim.argtypes = [ctypes.c_int, ctypes.c_int], [ctypes.c_size_t]
    except (OSError, AttributeError, TypeError):  # no libc by that name, or one without these (not glibc)
        return None
    return libc


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def heap() -> dict[str, int]:
    """glibc's own count over every arena: bytes handed out and not freed (``malloc_in_use``: what the
    process's native code holds) and bytes freed but kept by the allocator (``malloc_free``); empty
    elsewhere than glibc. RSS growing while ``malloc_in_use`` does not is the allocator keeping memory,
    not a leak."""
    libc = _libc()
    mallinfo2 = getattr(libc, "mallinfo2", None)
    if mallinfo2 is None:
        return {}
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {"malloc_in_use": int(info.uordblks + info.hblkhd), "malloc_free": int(info.fordblks)}


def python_heap() -> dict[str, int]:
    """Python's own allocations, which glibc's count misses: its object allocator takes memory from the
    system in arenas of its own. ``python_blocks`` (objects and buffers alive in that allocator; 0 under
    ``PYTHONMALLOC=malloc``, which bypasses it) is always there and cheap; ``python_traced_bytes``
    (their bytes, numpy's arrays included) only while :mod:`tracemalloc` runs (``PYTHONTRACEMALLOC=1``:
    it slows allocation, so it is for finding a leak, not for every server)."""
    found = {"python_blocks": sys.getallocatedblocks()}
    if tracemalloc.is_tracing():
        found["python_traced_bytes"] = tracemalloc.get_traced_memory()[0]
    return found


def limit_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas at ``count`` (0 keeps glibc's default); whether the cap was set. Arenas
    made before the call stay, so call it before the server starts its threads."""
    libc = _libc()
    if count <= 0 or libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, count))


def trim() -> bool:
    """Hand the free pages of every arena back to the system; whether any were."""
    libc = _libc()
    return libc is not None and bool(libc.malloc_trim(0))


class Trimmer:
    """Calls :func:`trim` every ``seconds`` on a thread of its own until :meth:`stop` (``seconds`` 0: never).

    A trim walks every arena under its lock for a few milliseconds; a request allocating meanwhile waits
    that long, so it runs seldom (the setting ``serve.trim_seconds``) rather than after each request."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="malloc-trim")

    def start(self) -> None:
        if self.seconds > 0 and _libc() is not None:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                trim()
            except Exception:  # the server must outlive a failed trim; the next one is tried
                log.exception("malloc_trim failed; retrying in %.0fs", self.seconds)
