"""What the C library does for a process that runs for months and takes bursts: hand back its heap's free pages.

glibc keeps what a burst freed in its arenas (the tables of dicts a burst grew, read buffers, SQLite's scratch
space), so a process's resident size stays at its burst's peak. Both of the switch's processes take the same
bursts: the reactor (`switch.heap.HeapTrim`, on its clock) and the journal's writer process
(`switch.journal.writerproc`, when it has been idle since its work), each every `TRIM_INTERVAL` seconds.

May use: nothing of the switch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

TRIM_INTERVAL = 10.0
"""Seconds between two hand-backs of the C heap's free pages."""


def c_heap_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)``: every whole free page of every arena back to the system. None where the
    C library has no such call (musl, macOS): there the trim is simply not done."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)
