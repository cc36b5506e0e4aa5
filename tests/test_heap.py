"""The process's heap (`switch.heap`): the C heap's free pages handed back on the reactor's clock."""

from __future__ import annotations

import ctypes
import os
import platform

import pytest
from structlog.testing import capture_logs
from twisted.internet.task import Clock

from switch.heap import HeapTrim
from switch.libc import c_heap_trim

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")


def test_the_trim_runs_every_interval_from_start_to_stop():
    clock, calls = Clock(), []
    trim = HeapTrim(clock, lambda: calls.append(clock.seconds()), interval=10.0)
    clock.advance(30)
    assert calls == []  # not before the switch has started
    with capture_logs() as logs:
        trim.start()
    assert logs == [{"event": "heap_trim", "interval": 10.0, "log_level": "info"}]
    clock.advance(9.5)
    assert calls == []  # not at once: start-up has just frozen its heap
    clock.pump([0.5, 10, 10])
    assert calls == [40.0, 50.0, 60.0]
    trim.stop()
    clock.advance(100)
    assert calls == [40.0, 50.0, 60.0] and not clock.getDelayedCalls()
    trim.stop()  # a second stop (SIGINT twice) changes nothing


def test_without_a_trim_call_the_switch_says_so_and_runs_on():
    clock = Clock()
    trim = HeapTrim(clock, None)
    with capture_logs() as logs:
        trim.start()
    assert logs == [{"event": "heap_trim", "interval": None, "log_level": "info"}]
    assert not clock.getDelayedCalls()
    trim.stop()


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@glibc
def test_the_pages_a_burst_left_free_in_the_c_heap_go_back_to_the_system():
    """What a burst freed below memory still in use stays resident until trimmed."""
    trim = c_heap_trim()
    assert trim is not None
    trim()
    burst = [ctypes.create_string_buffer(64 * 1024) for _ in range(512)]  # 32 MB, under the mmap threshold
    for buffer in burst:
        ctypes.memset(buffer, 1, len(buffer))  # touched: resident
    pinned = ctypes.create_string_buffer(64 * 1024)  # still in use above them: the heap's top cannot shrink
    during = _resident_bytes()
    del burst
    before = _resident_bytes()
    assert trim() in (0, 1)
    after = _resident_bytes()
    assert before - after > 16 * 1024 * 1024, (during, before, after)
    assert pinned.raw[:1] == b"\0"

