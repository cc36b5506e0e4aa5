"""The journal's writer process: group commit (`switch.journal.batch`) in a process of its own.

Why a process: in a closed loop the whole switch settles into a convoy in which every payment waits
for the same batch, and a writer thread can only start a batch when the reactor lets go of the GIL,
so the batch's time adds to the reactor's instead of overlapping it (`switch.journal.process`).

`switch.journal.process.ProcessWriter` starts ``python -m switch.journal.writerproc``. What it sends
on the child's standard input, and what comes back on file descriptor 3, is a stream of frames: a
4-byte big-endian length and a pickle. In: ``("start", backend, prepare, shared, max_batch,
log_format, log_level, nice)`` first (``nice``: how much the child lowers its own CPU priority,
`switch.journal.config.WRITER_NICE`), then ``("share", key, value)`` and ``("units", [uid, ...], pickled
[unit, ...])``: the units of a frame in a pickle of their own, so a frame this process cannot read fails
its own writes, named by their uids, and nothing else.
Out: ``("started", ok, result)``, then for each batch ``("batch", [(uid, ok, value), ...], committed,
seconds)`` once it is durable (or failed). The end of
standard input means stop: what was read is committed, the connection closed, the process exits.
So the parent dying (even by SIGKILL) ends the child after its last batch, never in the middle of one.
Standard error is the parent's: the child's log lines go where the switch's go.
"""

from __future__ import annotations

import functools
import os
import pickle
import select
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from switch.journal import lease
from switch.journal.batch import Committer, Outcome
from switch.journal.db import run
from switch.journal.errors import JournalError, StorageError
from switch.journal.frames import RESULTS_FD, Frames, frame
from switch.libc import TRIM_INTERVAL, c_heap_trim

_READ = 1 << 16
"""Bytes read from the pipe at a time: what a pipe holds by default. A larger request costs every read an mmap,
an mremap and a munmap (glibc maps a buffer that large, and Python shrinks it to what came): with 1 MiB, under
strace, each of the writer's reads came with those three calls."""


class _Inbox:
    """The units the switch sent, read from standard input as they come; shares are applied on arrival.

    ``trim`` (`switch.libc.c_heap_trim`) hands the C heap's free pages back once the process has waited
    ``trim_interval`` seconds since the first units after the last trim, while it waits for more: a burst
    journalled (10,000 payments sent to a slow bank at once) left about 0.4 MB resident in it otherwise
    (`bench/hold.sh`), and an idle writer has nothing else to do."""

    def __init__(self, fd: int, shared: dict[Any, Any], trim: Callable[[], object] | None = None,
                 trim_interval: float = TRIM_INTERVAL) -> None:
        self._fd = fd
        self._shared = shared
        self._frames = Frames()
        self._units: deque[tuple[int, Callable[[Any], Any]]] = deque()
        self.ended = False
        self._trim = trim
        self._trim_interval = trim_interval
        self._trim_due: float | None = None  # when the C heap's free pages go back, once there was work

    def first(self) -> Any:
        """The start message (block until it came)."""
        while True:
            messages = self._read(block=True)
            if messages:
                start = messages[0]
                self._shared.update(start[3])
                for message in messages[1:]:
                    self._take_in(message)
                return start
            if self.ended:
                raise SystemExit(0)

    def take(self, most: int) -> list[tuple[int, Callable[[Any], Any]]]:
        """Up to ``most`` units in the order sent: waits for the first, then takes what has arrived."""
        while not self._units and not self.ended:
            self._read_in(block=True)
        if not self.ended:
            self._read_in(block=False)
        units = self._units
        if self._trim is not None and self._trim_due is None:
            self._trim_due = time.monotonic() + self._trim_interval
        return [units.popleft() for _ in range(min(most, len(units)))]

    def _read_in(self, block: bool) -> None:
        for message in self._read(block):
            self._take_in(message)

    def _wait(self) -> float | None:
        """How long a blocking read may wait: until the heap's trim is due, if one is."""
        if self._trim is None or self._trim_due is None:
            return None
        left = self._trim_due - time.monotonic()
        if left > 0:
            return left
        self._trim()
        self._trim_due = None
        return None

    def _take_in(self, message: Any) -> None:
        if message[0] == "units":
            self._units.extend(zip(message[1], _units(message[2], len(message[1]))))
        elif message[0] == "share":
            self._shared[message[1]] = message[2]

    def _read(self, block: bool) -> list[Any]:
        messages: list[Any] = []
        while True:
            ready, _, _ = select.select([self._fd], [], [], self._wait() if block and not messages else 0)
            if not ready:
                if block and not messages and self._trim_due is not None:
                    continue  # the wait was for the trim: it is done, wait on
                return messages
            data = os.read(self._fd, _READ)
            if not data:
                self.ended = True
                return messages
            messages.extend(self._frames.feed(data))
            if messages:
                block = False


def _send(message: object) -> None:
    _write(frame(message))


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(RESULTS_FD, view)
        view = view[written:]


def _send_batch(outcomes: list[Outcome], uids: list[int], committed: bool, seconds: float) -> None:
    """A batch's results as they are, failures as their exception (a traceback does not cross), in one pickle:
    only if that fails is each result pickled alone to find the one that cannot go."""
    results = [(uid, ok, value if ok else value.value) for uid, (ok, value) in zip(uids, outcomes)]
    try:
        data = frame(("batch", results, committed, seconds))
    except Exception:
        data = frame(("batch", [_portable(result) for result in results], committed, seconds))
    _write(data)


def _portable(result: tuple[int, bool, Any]) -> tuple[int, bool, Any]:
    uid, ok, item = result
    try:
        pickle.dumps(item)
    except Exception as exc:  # never the batch's fault: this unit alone answers with a journal error
        return uid, False, JournalError(f"the writer could not send back a {type(item).__name__}: {exc}")
    return result


def _units(payload: bytes, count: int) -> list[Callable[[Any], Any]]:
    """A frame's units as sent. If this process cannot read them (code the switch has and it has not: it
    never happens to one installation), every write of the frame fails, and its batch is replayed without
    them."""
    try:
        units: list[Callable[[Any], Any]] = pickle.loads(payload)
    except Exception as exc:
        error = StorageError(f"the journal writer process cannot read this write: {type(exc).__name__}: {exc}")
        return [functools.partial(_refuse, error)] * count
    return units


def _refuse(error: Exception, db: Any) -> None:
    raise error


def serve(backend: Any, prepare: Callable[[Any], Any], shared: dict[Any, Any], max_batch: int,
          inbox: _Inbox) -> None:
    """Open, prepare, then commit batches until standard input ends."""
    committer = Committer(backend.open_writer, backend.name, shared, fence=lease.fence)
    try:
        result = run(committer.open(), prepare)
    except Exception as exc:
        committer.close()
        _send(("started", False, exc))
        return
    _send(("started", True, result))
    try:
        while True:
            units = inbox.take(max_batch)
            if not units:
                return
            began = time.monotonic()
            outcomes, committed = committer.commit([unit for _, unit in units])
            _send_batch(outcomes, [uid for uid, _ in units], committed, time.monotonic() - began)
    finally:
        committer.close()


def main() -> None:
    from switch.observe import logs

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the switch stops us: by closing our input
        signal.signal(signum, signal.SIG_IGN)
    shared: dict[Any, Any] = {}
    inbox = _Inbox(sys.stdin.fileno(), shared, c_heap_trim())
    _, backend, prepare, _, max_batch, log_format, log_level, nice = inbox.first()
    os.nice(nice)
    logs.configure(log_format, level=log_level)
    serve(backend, prepare, shared, max_batch, inbox)


if __name__ == "__main__":
    main()
