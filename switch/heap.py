"""The process's heap: what `kswitch run` does so that its memory follows what it holds.

Two things neither the interpreter nor the C library does by itself for a process that runs for
months and takes bursts:

* Start-up builds objects that live as long as the process (configuration, compiled rules,
  modules, connections, pools), and every full collection of the cyclic garbage collector walked
  them: about 40 ms each under load, several a second. `freeze_startup_heap` takes them out of its
  sight once the switch runs.
* glibc keeps what a burst freed in its arenas (the tables of dicts a burst grew, read buffers,
  SQLite's scratch space), so the resident size stays at the burst's peak. `HeapTrim` hands the
  whole free pages back every `TRIM_INTERVAL` seconds (`switch.libc`, under a millisecond with
  10,000 payments held at a bank: 0.08 KB less per payment held, `bench/hold.sh`). Python's own
  allocator returns its arenas by itself once they are empty; this is about the C heap under it.

May use: nothing of the switch; wired by `switch.cli`.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import structlog
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from switch.libc import TRIM_INTERVAL

log = structlog.get_logger("kswitch.switch")

GEN0_THRESHOLD = 10_000
"""New container objects between collections of the youngest generation, once the switch runs."""


def freeze_startup_heap() -> None:
    """Take what start-up built out of the cyclic garbage collector's sight, once the switch runs,
    and let the youngest generation grow before it is collected.

    `gc.freeze` moves start-up's objects to a generation no collection scans (some 45 µs of every
    payment and its latency's worst moments went to walking them, perf_ratio's closed loop, measured
    with `gc.callbacks`). A payment leaves almost no cycles behind, so collecting the youngest
    generation every 700 new objects (CPython's default) mostly walked payments still in flight: every
    `GEN0_THRESHOLD` objects, the collector takes 0.05 s of a 10 s closed loop instead of 0.35 s. What
    payments create is collected as before."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, *gc.get_threshold()[1:])
    log.info("startup_heap_frozen", objects=gc.get_freeze_count(), gen0_threshold=GEN0_THRESHOLD)


class HeapTrim:
    """Calls ``trim`` every ``interval`` seconds on the reactor's clock, from `start` to `stop`."""

    def __init__(self, clock: IReactorTime, trim: Callable[[], object] | None, interval: float = TRIM_INTERVAL) -> None:
        self._interval = interval
        self._loop: LoopingCall | None = None
        if trim is not None:
            self._loop = LoopingCall(trim)
            self._loop.clock = clock

    def start(self) -> None:
        if self._loop is not None and not self._loop.running:
            self._loop.start(self._interval, now=False)
        log.info("heap_trim", interval=self._interval if self._loop is not None else None)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
