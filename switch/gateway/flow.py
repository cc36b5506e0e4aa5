"""Admission by the journal's backlog: connections stop reading requests while too many writes wait.

Why: a burst of requests (10,000 sent at once) was read, parsed and turned into journal writes all
in the reactor's first turns; every one waited in the writer's queue with its rows, messages and
coroutine until its turn, and the memory they took, freed after, stayed with the process as
partly used allocator arenas: 8 KB a payment held at a slow bank where the same payments sent in
steps of 500 took under 4. A connection now stops between two lines once the journal has `high`
writes waiting, leaves the rest where the kernel and the client keep it (TCP flow control), and
reads on once the writer is down to `low`. Under normal load the backlog is a few batches and
nothing is held.

May use: nothing of the switch; the journal's backlog and its "a batch was delivered" signal are
passed in as plain callables by the application.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Holdable(Protocol):
    """A connection the gate can stop and restart (`switch.gateway.protocol.ApiProtocol`)."""

    def hold(self) -> None: ...

    def release(self) -> None: ...


class BacklogGate:
    """Closed while ``backlog()`` is at least ``high``; what it held is released at ``low`` or below."""

    def __init__(self, backlog: Callable[[], int], high: int, low: int) -> None:
        if not 0 <= low < high:
            raise ValueError(f"need 0 <= low < high, got low {low} and high {high}")
        self._backlog = backlog
        self.high = high
        self.low = low
        self._held: list[Holdable] = []

    @classmethod
    def for_batches(cls, backlog: Callable[[], int], max_batch: int) -> BacklogGate:
        """Closed at half a batch's worth of journal work waiting, writes and reads; open again at a quarter.

        The gate stops only new requests: the outcomes and answers of payments already in flight still
        queue behind it, so the writer's next batch is never short of work. More waiting only holds more of
        a burst's payments parsed and queued at once, and the allocator keeps their memory after: 0.7 KB a
        payment held at a slow bank with four batches' worth, 0.1 KB with one (`bench/hold.sh`)."""
        high = max(1, max_batch // 2)
        return cls(backlog, high=high, low=high // 2)

    def closed(self) -> bool:
        """Asked before each request line: one queue-size read."""
        return self._backlog() >= self.high

    def hold(self, connection: Holdable) -> None:
        if connection not in self._held:
            self._held.append(connection)
            connection.hold()

    @property
    def holding(self) -> int:
        return len(self._held)

    def drained(self) -> None:
        """After each journal batch: release every held connection once the backlog is down to `low`,
        in the order they were held (each reads what it holds; one may be held again at once)."""
        if self._held and self._backlog() <= self.low:
            held, self._held = self._held, []
            for connection in held:
                connection.release()
