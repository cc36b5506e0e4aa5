"""The operation table: op name → (parse, handle).

The protocol knows nothing about individual ops. Lifecycle ops (capture, void,
refund) and notifications (subscribe, ack) are added by registering another
`Operation` on the registry handed to `ApiFactory`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import structlog
from twisted.internet.defer import Deferred, maybeDeferred

from switch.domain.answering import Answerable
from switch.domain.merchant import MerchantConfig
from switch.domain.model import AuthorizeRequest, HelloRequest, PingRequest, StatusRequest
from switch.gateway.answers import FINAL_STATUSES, transaction_answer
from switch.gateway.config import ApiConfig, ClientConfig
from switch.gateway.errors import ApiError, ErrorCode
from switch.gateway.service import IPaymentService
from switch.gateway.session import Session
from switch.gateway.validate import invalid, parse_authorize, parse_hello, parse_ping, parse_status

PROTOCOL_VERSION = 1

log = structlog.get_logger("kswitch.api")


class Request(Protocol):
    def log_fields(self) -> dict[str, object]:
        """Fields safe to log (masked card data only) describing the request."""
        ...


R = TypeVar("R", bound=Request)
Answer = dict[str, Any]


@dataclass(frozen=True)
class OpContext:
    """What a handler may use: the service, the configuration of the moment and the caller's session."""

    service: IPaymentService
    config: ApiConfig
    session: Session

    @property
    def client(self) -> ClientConfig | None:
        """The authenticated client, looked up afresh so a configuration reload takes effect at once."""
        name = self.session.client_name
        return None if name is None else self.config.clients.get(name)

    def authenticated_client(self) -> ClientConfig:
        client = self.client
        if client is None:
            raise ApiError(ErrorCode.UNAUTHENTICATED, "say hello first: this op needs an authenticated connection")
        return client

    def merchant(self, merchant_id: str, field: str = "merchant_id") -> MerchantConfig:
        """The merchant if this client may use it; unknown and not-allowed look the same to the client."""
        if merchant_id not in self.authenticated_client().merchant_ids:
            raise ApiError(ErrorCode.FORBIDDEN, f"this client may not use merchant {merchant_id!r}", field=field)
        return self.config.merchants[merchant_id]


@dataclass(frozen=True)
class Operation(Generic[R]):
    """``parse`` turns the request object into ``R`` or raises `ApiError`; ``handle`` answers it.

    ``handle`` returns the answer fields (without ``id`` and ``ok``), directly or
    through a Deferred. An op that waits on a bank has ``handle_to`` instead: it tells the request's
    exchange (`switch.domain.answering.Answerable`) itself, so no Deferred is kept for the wait. An op
    with ``requires_hello`` False may be used before the connection has authenticated.

    ``present``, if given, turns what the handler gave into the answer fields, with the request, when it
    comes: for an op that waits on a bank, the protocol calls it from the request's exchange instead of
    each request in flight holding a callback of its own.
    """

    name: str
    parse: Callable[[Mapping[str, Any]], R]
    handle: Callable[[R, OpContext], Answer | Deferred[Answer]] | None = None
    requires_hello: bool = True
    present: Callable[[Any, R], Answer] | None = None
    handle_to: Callable[[R, OpContext, Answerable[Any]], None] | None = None

    def __post_init__(self) -> None:
        if (self.handle is None) == (self.handle_to is None):
            raise ValueError(f"operation {self.name!r}: give exactly one of handle and handle_to")


class OperationRegistry:
    def __init__(self, operations: tuple[Operation[Any], ...] = ()) -> None:
        self._operations: dict[str, Operation[Any]] = {}
        for operation in operations:
            self.register(operation)

    def register(self, operation: Operation[Any]) -> None:
        if operation.name in self._operations:
            raise ValueError(f"operation {operation.name!r} is already registered")
        self._operations[operation.name] = operation

    def get(self, name: str) -> Operation[Any] | None:
        return self._operations.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._operations))


def handle_ping(request: PingRequest, ctx: OpContext) -> Answer:
    return {"pong": True}


def handle_hello(request: HelloRequest, ctx: OpContext) -> Answer:
    """Authenticate the connection; a later hello re-authenticates it.

    Repeating hello as the same client with its credentials changes nothing: it suits
    clients whose connections outlive the code that opened them (PHP persistent
    sockets), which can always say hello without tracking it. A hello naming another
    client is refused and changes nothing (one connection, one client). A hello that
    fails de-authenticates the connection: whoever speaks on it now did not prove who
    they are, so it is treated as a fresh connection (hello timeout included).
    """
    session = ctx.session
    if session.client_name not in (None, request.client):
        raise invalid("client", f"this connection has said hello as {session.client_name!r}; open another one")
    client = ctx.config.authenticate(request.client, request.token)
    if client is None or not _certificate_matches(client, session):
        reason = "credentials" if client is None else "client certificate"
        session.hello_failed(ctx.config.limits.max_failed_hellos)
        log.warning("api_hello_refused", client_name=request.client, peer=session.peer, reason=reason,
                    deauthenticated=session.client_name is not None)
        session.client_name = None
        raise ApiError(ErrorCode.UNAUTHENTICATED, "unknown client or wrong token")
    session.client_name = client.name
    limits = ctx.config.limits
    return {
        "client": client.name,
        "merchant_ids": sorted(client.merchant_ids),
        "protocol": PROTOCOL_VERSION,
        "max_line_bytes": limits.max_line_bytes,
        "max_in_flight": limits.max_in_flight,
        "idle_timeout": limits.idle_timeout,
    }


def _certificate_matches(client: ClientConfig, session: Session) -> bool:
    return client.certificate_cn is None or client.certificate_cn == session.certificate_cn()


def handle_authorize(request: AuthorizeRequest, ctx: OpContext, answer_to: Answerable[Any]) -> None:
    merchant = ctx.merchant(request.merchant_id)
    if request.store_id not in merchant.stores:
        raise invalid("store_id", f"unknown store for merchant {merchant.id!r}")
    client = ctx.authenticated_client()
    ctx.service.authorize_to(request, client.name, answer_to)  # answered through `_authorize_answer`


def _authorize_answer(raw: dict[str, Any], request: AuthorizeRequest) -> Answer:
    """The answer with the request's own fields echoed, built when it comes (nothing kept per pending payment)."""
    return {
        **transaction_answer(raw, FINAL_STATUSES),
        "merchant_id": request.merchant_id,
        "store_id": request.store_id,
        "order_id": request.order_id,
        "amount": request.amount,
        "currency": request.currency.alpha,
        "masked_pan": request.instrument.masked_pan,
    }


def handle_status(request: StatusRequest, ctx: OpContext) -> Deferred[Answer]:
    client = ctx.authenticated_client()
    allowed = client.merchant_ids
    if request.txn_id is None:
        merchant = ctx.merchant(request.merchant_id or "")
        answered = maybeDeferred(ctx.service.status_by_order, merchant.id, request.order_id or "")
        return answered.addCallback(transaction_answer)

    def visible(raw: object) -> Answer:
        answer = transaction_answer(raw)
        if answer["merchant_id"] not in allowed:
            log.error("api_status_merchant_mismatch", txn_id=request.txn_id, client=client.name)
            raise ApiError(ErrorCode.NOT_FOUND, "no such transaction", field="txn_id")
        return answer

    return maybeDeferred(ctx.service.status, request.txn_id, allowed).addCallback(visible)


def default_operations() -> OperationRegistry:
    """A fresh registry with the ops of protocol version 1; callers may register more on it."""
    return OperationRegistry(
        (
            Operation("ping", parse_ping, handle_ping, requires_hello=False),
            Operation("hello", parse_hello, handle_hello, requires_hello=False),
            Operation("authorize", parse_authorize, handle_to=handle_authorize, present=_authorize_answer),
            Operation("status", parse_status, handle_status),
        )
    )
