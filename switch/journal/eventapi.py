"""The journal's event API: notifications for merchants, read and acknowledged by clients."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from twisted.internet import defer

from switch.domain.events import Event
from switch.journal import events
from switch.journal.base import JournalBase, fails_as_deferred
from switch.journal.errors import InvalidRecord
from switch.journal.guard import dump_fields
from switch.journal.models import EventDraft, require_id
from switch.journal.units import Call


class EventApi(JournalBase):
    @fails_as_deferred
    def append_event(self, merchant_id: str, event: EventDraft, *, txn_id: str | None = None) -> defer.Deferred[Event]:
        """Append a notification on its own; prefer passing ``event=`` to a state change for atomicity."""
        require_id("merchant_id", merchant_id)
        payload = dump_fields("payload", event.payload)
        now = self._now()
        return self._writer.submit(
            Call(events.append, merchant_id=merchant_id, txn_id=txn_id, type=event.type, payload=payload, now=now)
        )

    @fails_as_deferred
    def events_after(
        self, merchant_ids: Sequence[str], after_event_id: int = 0, *, limit: int = 500
    ) -> defer.Deferred[list[Event]]:
        """Events of these merchants with ids above ``after_event_id``, in id order."""
        merchants = _merchants(merchant_ids)
        return self._readers.read(lambda db: events.after(db, merchants, after_event_id, limit))

    @fails_as_deferred
    def unacknowledged_events(
        self, client_id: str, merchant_ids: Sequence[str], after_event_id: int = 0, *, limit: int = 500
    ) -> defer.Deferred[list[Event]]:
        """Events of these merchants the client has not acknowledged, in id order."""
        merchants = _merchants(merchant_ids)
        return self._readers.read(
            lambda db: events.unacknowledged(db, client_id, merchants, after_event_id, limit)
        )

    @fails_as_deferred
    def acknowledge_events(self, client_id: str, event_ids: Iterable[int]) -> defer.Deferred[int]:
        """Record that the client has the events; fires with how many were newly acknowledged."""
        require_id("client_id", client_id)
        ids = sorted({_event_id(event_id) for event_id in event_ids})
        if not ids:
            return defer.succeed(0)
        now = self._now()
        return self._writer.submit(Call(events.acknowledge, client_id, ids, now))


def _merchants(merchant_ids: Sequence[str]) -> list[str]:
    if isinstance(merchant_ids, str):
        raise InvalidRecord("merchant_ids must be a list of merchant ids, not one string")
    merchants = sorted({require_id("merchant_id", merchant) for merchant in merchant_ids})
    if not merchants:
        raise InvalidRecord("give at least one merchant id")
    return merchants


def _event_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRecord(f"event ids are positive ints, got {type(value).__name__}")
    return value
