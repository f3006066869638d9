"""The server's allocator settings: fewer glibc arenas and a periodic trim (see benchmarks/soak.py)."""

from __future__ import annotations

import platform
import threading

import pytest

from shopsense.services import allocator

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and malloc_trim are glibc's")


@glibc
def test_arenas_are_capped_only_when_asked() -> None:
    assert allocator.limit_arenas(0) is False, "0 keeps glibc's default"
    assert allocator.limit_arenas(2) is True


def _rss() -> int:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) * 1024


@glibc
def test_a_trim_hands_freed_memory_back() -> None:
    """Freed heap memory below a live chunk cannot shrink the heap from its top: only a trim returns it."""
    chunks = [bytearray(60_000) for _ in range(2000)]  # under the mmap threshold: on the heap, 120 MB
    pinned = chunks[-1]
    del chunks
    before = _rss()
    assert allocator.trim() is True
    assert before - _rss() > 60_000_000, "most of the 120 MB freed went back to the system"
    del pinned


def test_the_trimmer_trims_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    trimmed = threading.Event()
    calls: list[int] = []

    def counting() -> bool:
        calls.append(1)
        trimmed.set()
        return True

    monkeypatch.setattr(allocator, "trim", counting)
    monkeypatch.setattr(allocator, "_libc", lambda: object())
    trimmer = allocator.Trimmer(0.01)
    trimmer.start()
    assert trimmed.wait(5), "it trims on its own thread"
    trimmer.stop()
    stopped_at = len(calls)
    threading.Event().wait(0.05)
    assert len(calls) == stopped_at, "no trim after stop"


def test_a_trimmer_of_zero_seconds_never_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "trim", lambda: pytest.fail("trimmed"))
    trimmer = allocator.Trimmer(0)
    trimmer.start()
    trimmer.stop()
    assert not trimmer._thread.is_alive()


@glibc
def test_the_heap_count_sees_memory_held_by_native_code() -> None:
    before = allocator.heap()["malloc_in_use"]
    held = bytearray(50_000_000)  # one allocation, by C code (CPython's bytearray), kept alive
    # other threads of the test session allocate and free meanwhile: a tenth of slack
    assert allocator.heap()["malloc_in_use"] - before >= 45_000_000
    del held


def test_python_heap_counts_live_objects_and_their_bytes_while_traced() -> None:
    import tracemalloc

    assert "python_traced_bytes" not in allocator.python_heap() or tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        before = allocator.python_heap()
        held = [object() for _ in range(100_000)] + [b"x" * 10_000_000]
        after = allocator.python_heap()
        # other threads of the test session free objects meanwhile: a tenth of slack
        assert after["python_blocks"] - before["python_blocks"] >= 90_000
        assert after["python_traced_bytes"] - before["python_traced_bytes"] >= 9_000_000
        del held
    finally:
        tracemalloc.stop()
    assert "python_traced_bytes" not in allocator.python_heap()
