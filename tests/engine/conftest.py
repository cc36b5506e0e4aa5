"""A Notifier on a deterministic clock over an in-memory event log with the journal's semantics.

The end-to-end tests run the real journal; here reads and acknowledgements answer at
once (or when a test releases them), so interleavings can be chosen exactly.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timezone
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from switch.domain.events import Event
from switch.engine.notify import Notifier, NotifyOptions
from switch.journal.errors import UnknownEvent


class EventLog:
    """``events_after``, ``unacknowledged_events`` and ``acknowledge_events`` as `switch.journal.Journal` has them."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.events: list[Event] = []
        self.acks: set[tuple[str, int]] = set()
        self.hold_reads = False
        self.held: list[tuple[Deferred[list[Event]], list[Event]]] = []
        self.fail_reads = 0

    def append(self, merchant_id: str, type: str = "payment.reversed", **payload: Any) -> Event:
        event = Event(
            event_id=len(self.events) + 1, merchant_id=merchant_id, txn_id=f"T{len(self.events) + 1}", type=type,
            payload={"txn_id": f"T{len(self.events) + 1}", **payload},
            created_at=datetime.fromtimestamp(self.clock.seconds(), timezone.utc),
        )
        self.events.append(event)
        return event

    def events_after(self, merchant_ids: Sequence[str], after_event_id: int = 0, *, limit: int = 500) -> Deferred:
        found = [e for e in self.events if e.merchant_id in merchant_ids and e.event_id > after_event_id]
        return succeed(found[:limit])

    def unacknowledged_events(
        self, client_id: str, merchant_ids: Sequence[str], after_event_id: int = 0, *, limit: int = 500
    ) -> Deferred:
        if self.fail_reads:
            self.fail_reads -= 1
            return fail(RuntimeError("database went away"))
        found = [e for e in self.events
                 if e.merchant_id in merchant_ids and e.event_id > after_event_id and (client_id, e.event_id) not in self.acks]
        if self.hold_reads:
            held: Deferred[list[Event]] = Deferred()
            self.held.append((held, found[:limit]))
            return held
        return succeed(found[:limit])

    def release_reads(self) -> None:
        held, self.held = self.held, []
        for d, events in held:
            d.callback(events)

    def acknowledge_events(self, client_id: str, event_ids: Collection[int]) -> Deferred:
        missing = set(event_ids) - {e.event_id for e in self.events}
        if missing:
            return fail(UnknownEvent(missing))
        new = {(client_id, i) for i in event_ids} - self.acks
        self.acks |= new
        return succeed(len(new))


class Connection:
    """What the socket API gives the notifier for one subscribed connection."""

    def __init__(self, client_id: str = "web-1", merchants: Collection[str] = ("M1", "M2")) -> None:
        self.client_id = client_id
        self.merchants = set(merchants)
        self.pushed: list[Event] = []

    def scope(self) -> frozenset[str]:
        return frozenset(self.merchants)

    def send(self, event: Event) -> None:
        self.pushed.append(event)

    def ids(self) -> list[int]:
        return [e.event_id for e in self.pushed]

    def subscribe(self, notifier: Notifier) -> Deferred[int]:
        return notifier.subscribe(self, self.client_id, self.scope, self.send)


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock


@pytest.fixture
def log(clock: Clock) -> EventLog:
    return EventLog(clock)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def make_notifier(clock: Clock, log: EventLog, registry: CollectorRegistry, **options: Any) -> Notifier:
    return Notifier(clock, log, registry, NotifyOptions(**options))  # type: ignore[arg-type]


@pytest.fixture
def notifier(clock: Clock, log: EventLog, registry: CollectorRegistry) -> Notifier:
    return make_notifier(clock, log, registry, max_unacked=3)


def result(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired (the failure is raised)."""
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    assert outcome, "the Deferred has not fired"
    if hasattr(outcome[0], "raiseException"):
        outcome[0].raiseException()
    return outcome[0]
