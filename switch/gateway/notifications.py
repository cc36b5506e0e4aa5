"""Socket API ops ``subscribe`` and ``ack``, and the push lines a subscription produces.

A push is a line without ``id``, so a client tells it from an answer by that alone.
Subscriptions belong to connections, so they live where the connections are: an
`ApiFactory` that also ends a connection's subscription when the connection is lost.
The event log and delivery rules are `switch.engine.notify`'s; this module only adapts them
to the wire.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from switch.domain.events import Event
from switch.engine.notify import EventsNotFound, Notifier
from switch.gateway.errors import ApiError, ErrorCode
from switch.gateway.ops import Answer, OpContext, Operation
from switch.gateway.protocol import ApiFactory, ApiProtocol
from switch.gateway.session import Session
from switch.gateway.validate import ENVELOPE_FIELDS, IDENTIFIER, IDENTIFIER_EXPECTED, Fields, invalid, json_type
from switch.gateway.wire import encode
from switch.net import turnwrites

MAX_IDS = 500
MAX_EVENT_ID = 2**63 - 1
EVENT_ID = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)
EVENT_ID_EXPECTED = "an event id as a string of digits, as pushed"


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    merchant_ids: frozenset[str] | None

    def log_fields(self) -> dict[str, object]:
        return {"merchant_ids": sorted(self.merchant_ids) if self.merchant_ids is not None else None}


@dataclass(frozen=True, slots=True)
class AckRequest:
    """``field`` is the request field that named the events, for the error answer."""

    event_ids: tuple[int, ...]
    field: str

    def log_fields(self) -> dict[str, object]:
        return {"event_ids": [str(event_id) for event_id in self.event_ids]}


def parse_subscribe(obj: Mapping[str, Any]) -> SubscribeRequest:
    Fields(obj, already_read=ENVELOPE_FIELDS | {"merchant_ids"}).finish()
    raw = obj.get("merchant_ids")
    if raw is None:
        return SubscribeRequest(None)
    return SubscribeRequest(frozenset(_strings(raw, "merchant_ids", IDENTIFIER, f"merchant ids of {IDENTIFIER_EXPECTED}")))


def parse_ack(obj: Mapping[str, Any]) -> AckRequest:
    fields = Fields(obj, already_read=ENVELOPE_FIELDS | {"event_ids"})
    single = fields.optional_text("event_id", EVENT_ID, EVENT_ID_EXPECTED)
    fields.finish()
    many = obj.get("event_ids")
    if (single is None) == (many is None):
        raise invalid("event_id", "expected exactly one of event_id (a string) or event_ids (an array of strings)")
    if single is not None:
        return AckRequest((_event_id(single, "event_id"),), "event_id")
    texts = _strings(many, "event_ids", EVENT_ID, EVENT_ID_EXPECTED)
    return AckRequest(tuple(_event_id(text, "event_ids") for text in texts), "event_ids")


def _strings(value: Any, field: str, pattern: re.Pattern[str], expected: str) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_IDS:
        got = f"{len(value)} items" if isinstance(value, list) else json_type(value)
        raise invalid(field, f"expected an array of 1-{MAX_IDS} {expected}, got {got}")
    for position, item in enumerate(value, 1):
        if not isinstance(item, str) or not pattern.fullmatch(item):
            raise invalid(field, f"item {position}: expected {expected}")
    return value


def _event_id(text: str, field: str) -> int:
    value = int(text)
    if value > MAX_EVENT_ID:
        raise invalid(field, f"expected {EVENT_ID_EXPECTED}; {text} is larger than any event id")
    return value


def push_line(event: Event) -> dict[str, Any]:
    """The wire form of an event; ``status`` and ``reason`` are lifted from the payload when it has them."""
    line: dict[str, Any] = {
        "event": event.type,
        "event_id": str(event.event_id),
        "txn_id": event.txn_id,
        "merchant_id": event.merchant_id,
        "created_at": event.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    line.update((name, event.payload[name]) for name in ("status", "reason") if name in event.payload)
    line["data"] = dict(event.payload)
    return line


class NotifyingApiFactory(ApiFactory):
    """An `ApiFactory` whose connections may ``subscribe`` and ``ack``.

    Subclassing keeps the hook that ends a subscription with its connection out of
    `ApiProtocol`: the factory already hears of every connection made and lost.
    """

    def __init__(self, notifier: Notifier, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.notifier = notifier
        self.operations.register(Operation("subscribe", parse_subscribe, self._subscribe))
        self.operations.register(Operation("ack", parse_ack, self._ack))

    def connection_lost(self, protocol: ApiProtocol) -> None:
        super().connection_lost(protocol)
        self.notifier.unsubscribe(protocol)

    def _subscribe(self, request: SubscribeRequest, ctx: OpContext) -> Deferred[Answer]:
        client = ctx.authenticated_client()
        for merchant_id in sorted(request.merchant_ids or ()):
            if merchant_id not in client.merchant_ids:
                raise ApiError(ErrorCode.FORBIDDEN, f"this client may not see merchant {merchant_id!r}",
                               field="merchant_ids")
        wanted = request.merchant_ids or client.merchant_ids
        name = client.name
        protocol = self._connection(ctx.session)

        def scope() -> frozenset[str]:
            current = self.config.clients.get(name)
            if current is None or ctx.session.client_name != name:  # removed, or a failed hello de-authenticated
                return frozenset()
            return wanted & current.merchant_ids

        def send(event: Event) -> None:
            turnwrites.write(protocol.transport, encode(push_line(event)))  # in order with the answers

        subscribed = self.notifier.subscribe(protocol, name, scope, send)
        return subscribed.addCallback(
            lambda pending: {"subscribed": True, "merchant_ids": sorted(wanted), "pending": pending}
        )

    def _ack(self, request: AckRequest, ctx: OpContext) -> Deferred[Answer]:
        client = ctx.authenticated_client()

        def not_found(reason: Failure) -> None:
            reason.trap(EventsNotFound)
            ids = ", ".join(str(event_id) for event_id in reason.value.event_ids)
            raise ApiError(ErrorCode.NOT_FOUND, f"no event {ids} for your merchants", field=request.field)

        acknowledged = self.notifier.acknowledge(client.name, client.merchant_ids, request.event_ids)
        acknowledged.addCallbacks(
            lambda _: {"acknowledged": [str(event_id) for event_id in sorted(set(request.event_ids))]}, not_found
        )
        return acknowledged

    def _connection(self, session: Session) -> ApiProtocol:
        """The connection a request came in on; it is open, since the request is being handled."""
        for protocol in self.connections:
            if protocol.session is session:
                return protocol
        raise LookupError("no open connection has this session")
