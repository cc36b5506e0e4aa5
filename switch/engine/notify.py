"""Notifications to the web tier: journal events pushed to subscribed connections until acknowledged.

The journal's event log is the single source: store-and-forward, late responses and
dead letters all append to it, inside the same database transaction as the state
change they announce, so nothing needs to call the notifier and nothing is lost in a
crash.  Each subscription reads its client's unacknowledged events after its own
cursor, on a short interval while anyone is subscribed; one indexed range read per
subscription per interval is cheap next to a hook in every writer, and it can never
miss an event appended by another process sharing the journal.

Delivery is at least once: an event stays unacknowledged in the journal until the
client acknowledges it, so a new subscription (after a reconnect or a restart)
starts with whatever is still unacknowledged.  Per subscription, events are pushed
in event id order, which includes the order per merchant.  A connection gets at most
``max_unacked`` events it has not acknowledged; then nothing more until it does, so a
client that stops reading or acknowledging costs the switch a bounded buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass, field

import structlog
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from switch.domain.events import Event
from switch.journal import Journal
from switch.observe.metrics import Counter, Gauge, MetricBundle

log = structlog.get_logger("kswitch.notify")


@dataclass(frozen=True)
class NotifyOptions:
    """``poll_interval``: seconds between journal reads while anyone is subscribed, which is
    the latency of a notification.  ``max_unacked``: events one connection may hold
    unacknowledged before the switch stops pushing to it."""

    poll_interval: float = 0.2
    max_unacked: int = 100

    def __post_init__(self) -> None:
        if self.poll_interval <= 0 or self.max_unacked < 1:
            raise ValueError("poll_interval must be positive and max_unacked at least 1")


class EventsNotFound(LookupError):
    """Acknowledged ids that do not exist or belong to merchants the client may not see; the two look alike."""

    def __init__(self, event_ids: Collection[int]) -> None:
        self.event_ids = sorted(event_ids)
        super().__init__(f"no such event id(s) for this client: {self.event_ids}")


class NotifyMetrics(MetricBundle):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.pushed = Counter("kswitch_notify_pushed_total", "Events pushed to subscribed connections, by event type",
                              ["event"], registry=registry)
        self.redelivered = Counter(
            "kswitch_notify_redelivered_total",
            "Pushes of an event already pushed to the same client earlier in this run, by event type",
            ["event"], registry=registry,
        )
        self.acked = Counter("kswitch_notify_acked_total", "Events newly acknowledged by clients", registry=registry)
        self.subscribers = Gauge("kswitch_notify_subscribers", "Connections subscribed to notifications",
                                 registry=registry)
        self.oldest_unacked = Gauge(
            "kswitch_notify_oldest_unacked_age_seconds",
            "Age of the oldest event pushed in this run and not yet acknowledged (0 when none)",
            registry=registry,
        )


Scope = Callable[[], frozenset[str]]
Send = Callable[[Event], None]


@dataclass(eq=False)
class _Subscription:
    """One connection's subscription; ``cursor`` is the highest event id read for it."""

    client_id: str
    scope: Scope
    send: Send
    cursor: int = 0
    in_flight: dict[int, Event] = field(default_factory=dict)
    acked_while_reading: set[int] = field(default_factory=set)
    reading: bool = False
    more: bool = False
    ended: bool = False


class Notifier:
    """Owns the subscriptions of the running switch; the socket API provides their connections."""

    def __init__(
        self, clock: IReactorTime, journal: Journal, registry: CollectorRegistry, options: NotifyOptions | None = None
    ) -> None:
        self.clock = clock
        self.journal = journal
        self.options = options or NotifyOptions()
        self.metrics = NotifyMetrics.on(registry)
        self.metrics.oldest_unacked.set_function(self._oldest_unacked_age)
        self._subscriptions: dict[Hashable, _Subscription] = {}
        self._left_unacked: dict[str, dict[int, float]] = {}
        self._high_water: dict[tuple[str, str], int] = {}
        self._loop = LoopingCall(self._poll)
        self._loop.clock = clock

    # -- subscriptions ------------------------------------------------------------------

    def subscribe(self, key: Hashable, client_id: str, scope: Scope, send: Send) -> Deferred[int]:
        """Push to ``send`` every event of ``scope()``'s merchants that ``client_id`` has not
        acknowledged, then new ones.  Subscribing again under the same ``key`` starts over.

        ``scope`` is asked again before every read, so a configuration change that takes
        a merchant away from the client takes effect at once.  Fires with the number of
        events about to be pushed; they are pushed on the next reactor turn, after the
        caller has answered.
        """
        self.unsubscribe(key)
        subscription = _Subscription(client_id, scope, send)
        self._subscriptions[key] = subscription
        self.metrics.subscribers.set(len(self._subscriptions))
        if not self._loop.running:
            self._loop.start(self.options.poll_interval, now=False)
        return ensureDeferred(self._first_batch(key, subscription))

    async def _first_batch(self, key: Hashable, subscription: _Subscription) -> int:
        try:
            events = await self._read(subscription)
        except Exception:
            self._end(key, subscription)
            raise
        self.clock.callLater(0, self._deliver, subscription, events)
        log.info("notification_subscribed", client=subscription.client_id, merchants=sorted(subscription.scope()),
                 pending=len(events))
        return len(events)

    def unsubscribe(self, key: Hashable) -> None:
        """End ``key``'s subscription, if any; its unacknowledged events wait in the journal for the next one."""
        subscription = self._subscriptions.get(key)
        if subscription is not None:
            self._end(key, subscription)

    def _end(self, key: Hashable, subscription: _Subscription) -> None:
        if subscription.ended:
            return
        subscription.ended = True
        if self._subscriptions.get(key) is subscription:
            del self._subscriptions[key]
        self._left_unacked.setdefault(subscription.client_id, {}).update(
            (event_id, event.created_at.timestamp()) for event_id, event in subscription.in_flight.items()
        )
        self.metrics.subscribers.set(len(self._subscriptions))
        if not self._subscriptions and self._loop.running:
            self._loop.stop()
        log.info("notification_unsubscribed", client=subscription.client_id, unacked=len(subscription.in_flight))

    def stop(self) -> None:
        for key, subscription in list(self._subscriptions.items()):
            self._end(key, subscription)

    # -- delivery ---------------------------------------------------------------------

    def _poll(self) -> None:
        for subscription in list(self._subscriptions.values()):
            self._pump(subscription)

    def _pump(self, subscription: _Subscription) -> None:
        if subscription.reading or subscription.ended or self._room(subscription) <= 0:
            return
        reading = ensureDeferred(self._read(subscription))
        reading.addCallbacks(lambda events: self._deliver(subscription, events), self._read_failed,
                             errbackArgs=(subscription,))

    def _room(self, subscription: _Subscription) -> int:
        return self.options.max_unacked - len(subscription.in_flight)

    async def _read(self, subscription: _Subscription) -> list[Event]:
        """The next unacknowledged events after the cursor; ``reading`` stays set until they are delivered."""
        merchants = subscription.scope()
        room = self._room(subscription)
        if not merchants or room <= 0:
            return []
        subscription.reading = True
        try:
            events = await self.journal.unacknowledged_events(
                subscription.client_id, sorted(merchants), subscription.cursor, limit=room
            )
        except Exception:
            subscription.reading = False
            raise
        subscription.more = len(events) == room
        return events

    def _read_failed(self, reason: Failure, subscription: _Subscription) -> None:
        if not subscription.ended:
            log.error("notification_read_failed", client=subscription.client_id, error=reason.getErrorMessage())

    def _deliver(self, subscription: _Subscription, events: list[Event]) -> None:
        subscription.reading = False
        skip = subscription.acked_while_reading
        subscription.acked_while_reading = set()
        for event in events:
            if subscription.ended:
                return
            subscription.cursor = max(subscription.cursor, event.event_id)
            if event.event_id not in skip and event.merchant_id in subscription.scope():
                subscription.in_flight[event.event_id] = event
                self._push(subscription, event)

    def _push(self, subscription: _Subscription, event: Event) -> None:
        seen = (subscription.client_id, event.merchant_id)
        redelivery = event.event_id <= self._high_water.get(seen, 0)
        if not redelivery:
            self._high_water[seen] = event.event_id
        self.metrics.pushed.labels(event.type).inc()
        if redelivery:
            self.metrics.redelivered.labels(event.type).inc()
        subscription.send(event)
        log.info("notification_pushed", event_id=event.event_id, event_type=event.type, client=subscription.client_id,
                 merchant=event.merchant_id, txn_id=event.txn_id, redelivery=redelivery)

    # -- acknowledgements -----------------------------------------------------------------

    def acknowledge(self, client_id: str, merchants: frozenset[str], event_ids: Collection[int]) -> Deferred[int]:
        """Record that ``client_id`` has these events; fails with `EventsNotFound` if any is not one
        of ``merchants``' events.  Fires with how many were newly acknowledged."""
        return ensureDeferred(self._acknowledge(client_id, merchants, sorted(set(event_ids))))

    async def _acknowledge(self, client_id: str, merchants: frozenset[str], event_ids: list[int]) -> int:
        pushed = {i: e.merchant_id for s in self._of_client(client_id) for i, e in s.in_flight.items()}
        unchecked = [i for i in event_ids if pushed.get(i) not in merchants]
        visible = await gatherResults([self._visible(i, merchants) for i in unchecked]) if unchecked else []
        unknown = [i for i, ok in zip(unchecked, visible) if not ok]
        if unknown:
            raise EventsNotFound(unknown)
        added = await self.journal.acknowledge_events(client_id, event_ids)
        self.metrics.acked.inc(added)
        left = self._left_unacked.pop(client_id, {})
        for event_id in event_ids:
            left.pop(event_id, None)
        if left:
            self._left_unacked[client_id] = left
        for subscription in self._of_client(client_id):
            for event_id in event_ids:
                subscription.in_flight.pop(event_id, None)
                if subscription.reading:
                    subscription.acked_while_reading.add(event_id)
            if subscription.more:
                self._pump(subscription)
        log.info("notification_acked", client=client_id, event_ids=event_ids, newly=added)
        return added

    def _of_client(self, client_id: str) -> list[_Subscription]:
        return [s for s in self._subscriptions.values() if s.client_id == client_id]

    def _visible(self, event_id: int, merchants: frozenset[str]) -> Deferred[bool]:
        """Whether the event exists and belongs to one of ``merchants``, without a lookup by id in the journal API."""
        if not merchants:
            return succeed(False)
        found = self.journal.events_after(sorted(merchants), event_id - 1, limit=1)
        return found.addCallback(lambda events: bool(events) and events[0].event_id == event_id)

    # -- metrics --------------------------------------------------------------------------

    def _oldest_unacked_age(self) -> float:
        """Includes events left unacknowledged by ended subscriptions: a web tier that went away is the case to see."""
        created = [e.created_at.timestamp() for s in self._subscriptions.values() for e in s.in_flight.values()]
        created += [t for left in self._left_unacked.values() for t in left.values()]
        return max(0.0, self.clock.seconds() - min(created)) if created else 0.0
