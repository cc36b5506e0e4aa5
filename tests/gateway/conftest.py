"""Shared fixtures: a fake payment service, a small configuration, a server on an ephemeral port
and a raw JSON-lines client, so tests speak to the API exactly as a web tier would."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from switch.domain.answering import Answerable
from switch.domain.errors import IdempotencyConflict, NotFound
from switch.domain.merchant import MerchantConfig, StoreConfig
from switch.domain.model import AuthorizeRequest
from switch.gateway.config import ApiConfig, ApiLimits, ClientConfig
from switch.gateway.listen import listen
from switch.gateway.protocol import ApiFactory
from switch.journal.errors import CommitOutcomeUnknown

PAN = "4111111111111111"
CVV = "123"
WEB1_TOKEN = "web-1-secret-token"
WEB2_TOKEN = "web-2-secret-token"
TIMEOUT = 10


def error_of(answer: dict) -> tuple[str, str | None]:
    """An error answer's code and field (the test fails on an ``ok`` answer)."""
    assert answer["ok"] is False, answer
    return answer["error"]["code"], answer["error"]["field"]


def authorize_request(**overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "op": "authorize",
        "merchant_id": "m1",
        "store_id": "s1",
        "order_id": "order-1",
        "amount": 1250,
        "currency": "USD",
        "capture": True,
        "instrument": {"type": "card", "pan": PAN, "expiry": "2812", "cvv": CVV},
    }
    request.update(overrides)
    return request


class FakePaymentService:
    """Stands in for the switch core. The order id chooses the behaviour:

    ``hold-*`` waits until `release` is called, ``boom-*`` raises an unexpected
    exception, ``decline-*`` declines, ``conflict-*`` raises IdempotencyConflict,
    ``unrecorded-*`` fails as a journal that cannot confirm its commit does,
    ``garbage-*`` answers something the spec does not allow; anything else is approved.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[AuthorizeRequest, str]] = []
        self.held: dict[str, tuple[Answerable[dict[str, Any]], dict[str, Any]]] = {}
        self.transactions: dict[str, dict[str, Any]] = {}
        self.undeliverable: list[tuple[str, str]] = []
        self.status_override: dict[str, Any] | None = None
        self._txn_ids = itertools.count(1)

    def authorize_to(self, request: AuthorizeRequest, client: str, answer_to: Answerable[dict[str, Any]]) -> None:
        self.calls.append((request, client))
        order = request.order_id
        if order.startswith("boom"):
            raise RuntimeError("kaboom: internal detail the client must not see")
        if order.startswith("conflict"):
            raise IdempotencyConflict("key reused for another request", field="idempotency_key")
        if order.startswith("unrecorded"):
            answer_to.errback(CommitOutcomeUnknown("the journal writer process ended during a batch: signal 9"))
            return
        if order.startswith("garbage"):
            answer_to.callback({"status": "maybe"})
            return
        txn_id = f"T{next(self._txn_ids):06d}"
        declined = order.startswith("decline")
        answer = {
            "txn_id": txn_id,
            "status": "declined" if declined else "approved",
            "reason": "insufficient_funds" if declined else "approved",
            "response_code": "51" if declined else "00",
            "auth_code": None if declined else "A1B2C3",
            "rrn": "000000000042",
            "stan": "000042",
            "connector": "bank_a",
            "masked_pan": request.instrument.masked_pan,
        }
        self.transactions[txn_id] = {
            **answer,
            "merchant_id": request.merchant_id,
            "store_id": request.store_id,
            "order_id": request.order_id,
            "amount": request.amount,
            "currency": request.currency.alpha,
        }
        if order.startswith("hold"):
            self.held[order] = (answer_to, answer)
            return
        answer_to.callback(answer)

    def release(self, order_id: str) -> None:
        held, answer = self.held.pop(order_id)
        held.callback(answer)

    def status(self, txn_id: str, merchant_ids: frozenset[str]) -> Deferred[dict[str, Any]]:
        if self.status_override is not None:
            return succeed(self.status_override)
        transaction = self.transactions.get(txn_id)
        if transaction is None or transaction["merchant_id"] not in merchant_ids:
            raise NotFound("no such transaction", field="txn_id")
        return succeed(transaction)

    def answer_undeliverable(self, txn_id: str, client: str) -> None:
        self.undeliverable.append((txn_id, client))


def make_config(limits: ApiLimits | None = None) -> ApiConfig:
    def merchant(merchant_id: str, *stores: str) -> MerchantConfig:
        return MerchantConfig.with_stores(
            [StoreConfig(store, f"T{store.upper():0>7}") for store in stores],
            id=merchant_id,
            name=f"Shop {merchant_id}",
            mcc="5999",
            city="Phnom Penh",
            country="KH",
            acquirer_merchant_id=f"{merchant_id.upper():0>15}",
        )

    return ApiConfig.build(
        clients=[
            ClientConfig("web-1", WEB1_TOKEN, frozenset({"m1"})),
            ClientConfig("web-2", WEB2_TOKEN, frozenset({"m2"})),
        ],
        merchants=[merchant("m1", "s1", "s1b"), merchant("m2", "s2"), merchant("m3", "s3")],
        limits=limits or ApiLimits(),
    )


class LineClient(Protocol):
    """A raw JSON-lines client: what a web developer would write by hand."""

    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []
        self.raw_lines: list[bytes] = []
        self._buffer = b""
        self._waiting: list[tuple[int, Deferred[list[dict[str, Any]]]]] = []
        self.closed: Deferred[None] = Deferred()
        self._taken = 0

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self.raw_lines.append(line)
            self.answers.append(json.loads(line))
        self._notify()

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(None)
        self._notify()

    def _notify(self) -> None:
        for entry in list(self._waiting):
            count, waiter = entry
            if len(self.answers) >= self._taken + count:
                self._waiting.remove(entry)
                taken = self.answers[self._taken : self._taken + count]
                self._taken += count
                waiter.callback(taken)
            elif self.closed.called:
                self._waiting.remove(entry)
                waiter.errback(AssertionError(f"connection closed; answers so far: {self.answers}"))

    def send(self, *requests: dict[str, Any] | bytes) -> None:
        for request in requests:
            line = request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n"
            self.transport.write(line)

    def next(self, count: int = 1) -> Deferred[list[dict[str, Any]]]:
        """The next ``count`` answers, in arrival order."""
        waiter: Deferred[list[dict[str, Any]]] = Deferred()
        self._waiting.append((count, waiter))
        self._notify()
        return waiter.addTimeout(TIMEOUT, reactor)

    def request(self, request: dict[str, Any] | bytes) -> Deferred[dict[str, Any]]:
        self.send(request)
        return self.next().addCallback(lambda answers: answers[0])

    def hello(self, client: str = "web-1", token: str = WEB1_TOKEN) -> Deferred[dict[str, Any]]:
        return self.request({"id": "hello", "op": "hello", "client": client, "token": token})

    def wait_closed(self) -> Deferred[None]:
        return self.closed.addTimeout(TIMEOUT, reactor) if not self.closed.called else succeed(None)

    def close(self) -> None:
        self.transport.loseConnection()


def synchronous_result(deferred: Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired (listening on TCP and Unix sockets is immediate),
    so servers can be started from inside a running test as well as from a fixture."""
    outcome: list[Any] = []
    deferred.addBoth(outcome.append)
    assert outcome, "expected the Deferred to have fired already"
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


class Server:
    """A listening API with its fake service and a fresh metrics registry."""

    def __init__(
        self,
        limits: ApiLimits | None = None,
        descriptions: tuple[str, ...] = ("tcp:0:interface=127.0.0.1",),
        config: ApiConfig | None = None,
    ) -> None:
        self.service = FakePaymentService()
        self.registry = CollectorRegistry()
        self.factory = ApiFactory(self.service, config or make_config(limits), reactor, registry=self.registry)
        self.ports = synchronous_result(listen(reactor, list(descriptions), self.factory))
        self.clients: list[LineClient] = []

    @property
    def port(self) -> int:
        return self.ports[0].getHost().port

    def connect(self, endpoint: IStreamClientEndpoint | None = None) -> Deferred[LineClient]:
        """A raw client on ``endpoint``, by default TCP to the first listening port."""
        endpoint = endpoint or TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        return connectProtocol(endpoint, LineClient()).addCallback(self._track)

    def _track(self, client: LineClient) -> LineClient:
        self.clients.append(client)
        return client

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def stop(self) -> None:
        for client in self.clients:
            if client.transport is not None and not client.closed.called:
                client.close()
        for port in self.ports:
            pytest_twisted.blockon(port.stopListening())
        for client in self.clients:
            pytest_twisted.blockon(client.closed)


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.stop()


@pytest.fixture
def make_server() -> Iterator[Any]:
    servers: list[Server] = []

    def start(**kwargs: Any) -> Server:
        servers.append(Server(**kwargs))
        return servers[-1]

    yield start
    for running in servers:
        running.stop()
