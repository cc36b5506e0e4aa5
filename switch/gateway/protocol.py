"""The line protocol and its factory: framing, dispatch through the op table, answers, limits.

Each connection is isolated: a bad line gets an error answer and the connection
carries on; only an over-long line (the framing is lost), repeated failed hellos or
one of the timeouts of `ApiLimits` (no hello, a line that never ends, an idle
authenticated connection) close it, with the reason logged, and even then answers
still owed for earlier requests are written first. Requests are dispatched in the
order they arrive and answered whenever their Deferred fires, so a slow bank never
holds up a quick ``status``.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY, CollectorRegistry
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime, ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from switch.domain.errors import NOT_RECORDED_MESSAGE, DomainError, NotRecorded
from switch.gateway.answers import STATUSES
from switch.gateway.config import ApiConfig
from switch.gateway.errors import ApiError, ErrorCode, from_domain
from switch.gateway.flow import BacklogGate
from switch.gateway.metrics import ApiMetrics
from switch.gateway.ops import OpContext, Operation, OperationRegistry, Request, default_operations
from switch.gateway.service import IPaymentService
from switch.gateway.session import Session, describe_address
from switch.gateway.wire import RequestId, decode_line, encode, failure, op_name, request_id, request_object, success
from switch.net import turnwrites

log = structlog.get_logger("kswitch.api")

# Timers fire at the deadline computed from float seconds; allow for rounding.
_SLACK = 1e-6
INTERNAL_MESSAGE = (
    "the switch failed to process this request and has logged why; for authorize the outcome is unknown: "
    "ask status or repeat the request with the same idempotency_key"
)


@dataclass(slots=True)  # one per request in flight: no per-instance __dict__
class _Exchange:
    """One request from the moment its line is read until its answer is written. The parsed request is
    kept for its log fields, taken when the answer is logged: a payment holds its request anyway.
    ``present`` is its operation's (`Operation.present`), kept here rather than as a callback per request."""

    started: float
    request_id: RequestId | None = None
    op: str = "invalid"
    request: Request | None = None
    present: Callable[[Any, Any], dict[str, Any]] | None = None
    protocol: ApiProtocol | None = None

    def callback(self, result: Any) -> None:
        """The operation's outcome. An op that tells its exchange (`Operation.handle_to`) needs no Deferred; for
        one that returns a Deferred, the exchange is itself its one callback (`__call__`), an entry with no
        arguments rather than a bound method and an argument tuple per request in flight."""
        assert self.protocol is not None
        self.protocol._answered(result, self)

    __call__ = callback

    def errback(self, fail: BaseException | object) -> None:
        self(fail if isinstance(fail, Failure) else Failure(fail))


@implementer(IPushProducer)
class ApiProtocol(Protocol):
    """One client connection.

    It registers itself as the producer for its own transport, so when a client
    stops reading answers the switch stops reading its requests instead of
    buffering answers without bound.
    """

    factory: ApiFactory

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._in_flight: dict[RequestId, _Exchange] = {}
        self._connected = False
        self._closing = False
        self._paused = False
        self._held = False  # by the factory's `BacklogGate`: the journal has too many writes waiting
        self._hello_timer: IDelayedCall | None = None
        self._watchdog: IDelayedCall | None = None
        self._line_started: float | None = None
        self._last_activity = 0.0
        self.session = Session(peer="unknown", certificate_cn=self._certificate_cn)

    def connectionMade(self) -> None:
        self._connected = True
        self._last_activity = self.factory.reactor.seconds()
        self.session.peer = describe_address(self.transport.getPeer())
        turnwrites.no_delay(self.transport)  # an answer must not wait for the client's delayed acknowledgement
        self.factory.connection_made(self)
        self.transport.registerProducer(self, True)
        self._start_hello_timer()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._connected = False
        self._cancel_hello_timer()
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None
        self.factory.connection_lost(self)

    def pauseProducing(self) -> None:
        self._paused = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if not self._closing:
            self._paused = False
            if self._line_started is not None:  # the client may have been waiting for us to read
                self._line_started = self.factory.reactor.seconds()
                self._watch()
            if not self._held:
                self.transport.resumeProducing()

    def hold(self) -> None:
        """Stop reading until `release` (the journal's backlog, `switch.gateway.flow`); lines already
        read wait in the buffer."""
        self._held = True
        self.transport.pauseProducing()

    def release(self) -> None:
        self._held = False
        if self._closing or not self._connected:
            return
        self._consume(self.factory.reactor.seconds(), ended=b"\n" in self._buffer)
        if not self._held and not self._paused and not self._closing:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self._closing = True

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        now = self.factory.reactor.seconds()
        self._buffer.extend(data)
        if ended := b"\n" in data:
            self._last_activity = now
        if not self._held:
            self._consume(now, ended)

    def _consume(self, now: float, ended: bool) -> None:
        """Answer every whole line in the buffer, unless the gate closes first: then the rest waits."""
        limit = self.factory.config.limits.max_line_bytes
        gate = self.factory.gate
        if ended:  # only new data is searched for a newline: a slowly growing line is not scanned again
            *lines, self._buffer = self._buffer.split(b"\n")
            for index, line in enumerate(lines):
                if self._closing:
                    return
                if gate is not None and gate.closed():
                    self._buffer = bytearray(b"\n".join(lines[index:])) + b"\n" + self._buffer
                    gate.hold(self)
                    return
                if len(line.rstrip(b"\r")) > limit:
                    self._line_too_long(limit)
                    return
                self._line_received(line, now)
        if self._closing:
            return
        if len(self._buffer) > limit + 1:
            self._line_too_long(limit)
            return
        if not self._buffer:
            self._line_started = None
        elif ended or self._line_started is None:
            self._line_started = now
        self._watch()

    def _line_received(self, line: bytearray, now: float) -> None:
        """``now`` is when its read began: the lines of one read share it (a float each, otherwise, per request held)."""
        line = line.rstrip(b"\r")
        if not line.strip():
            return
        exchange = _Exchange(started=now)
        try:
            operation, request, ctx = self._prepare(line, exchange)
        except ApiError as error:
            self._answer(exchange, failure(exchange.request_id, error), error)
            return
        except DomainError as refused:
            error = from_domain(refused)
            self._answer(exchange, failure(exchange.request_id, error), error)
            return
        except Exception:
            error = self._internal_error(exchange, traceback.format_exc())
            self._answer(exchange, failure(exchange.request_id, error), error)
            return
        assert exchange.request_id is not None
        self._in_flight[exchange.request_id] = exchange
        self.factory.metrics.in_flight.inc()
        exchange.protocol = self
        if operation.handle_to is not None:
            try:
                operation.handle_to(request, ctx, exchange)
            except Exception:
                exchange.errback(Failure())
        else:
            assert operation.handle is not None
            maybeDeferred(operation.handle, request, ctx).addBoth(exchange)
        if self.session.client_name is not None:
            self._cancel_hello_timer()
        elif self._hello_timer is None:  # a failed hello de-authenticated the connection
            self._start_hello_timer()

    def _prepare(self, line: bytearray, exchange: _Exchange) -> tuple[Operation[Any], Any, OpContext]:
        obj = request_object(decode_line(line))
        exchange.request_id = request_id(obj)
        operation = self.factory.operations.get(op_name(obj))
        if operation is None:
            exchange.op = "unknown"
            expected = ", ".join(self.factory.operations)
            raise ApiError(ErrorCode.UNKNOWN_OP, f"unknown operation; expected one of: {expected}", field="op")
        exchange.op = operation.name
        ctx = OpContext(self.factory.service, self.factory.config, self.session)
        if operation.requires_hello:
            ctx.authenticated_client()
        limit = self.factory.config.limits.max_in_flight
        if len(self._in_flight) >= limit:
            raise ApiError(ErrorCode.BUSY, f"this connection already has {limit} requests in flight; wait for answers")
        if exchange.request_id in self._in_flight:
            raise ApiError(
                ErrorCode.INVALID_REQUEST,
                "an earlier request with this id is still in flight; ids must be unique among pending requests",
                field="id",
            )
        request = operation.parse(obj)
        exchange.request = request
        exchange.present = operation.present
        return operation, request, ctx

    def _answered(self, result: Any, exchange: _Exchange) -> None:
        try:
            if exchange.present is not None and not isinstance(result, Failure):
                try:
                    result = exchange.present(result, exchange.request)
                except Exception:
                    result = Failure()
            if isinstance(result, Failure):
                self._failed(result, exchange)
            else:
                self._succeeded(result, exchange)
        except Exception:
            log.error("api_answer_failed", traceback=traceback.format_exc())

    def _succeeded(self, fields: dict[str, Any], exchange: _Exchange) -> None:
        self._settle(exchange)
        self._answer(exchange, success(exchange.request_id, fields))

    def _failed(self, reason: Failure, exchange: _Exchange) -> None:
        self._settle(exchange)
        if reason.check(ApiError):
            error = reason.value
        elif reason.check(DomainError):
            error = from_domain(reason.value)
        elif reason.check(NotRecorded):
            log.warning("api_not_recorded", op=exchange.op, peer=self.session.peer, error=str(reason.value))
            error = ApiError(ErrorCode.BUSY, NOT_RECORDED_MESSAGE)
        else:
            error = self._internal_error(exchange, reason.getTraceback())
        self._answer(exchange, failure(exchange.request_id, error), error)

    def _settle(self, exchange: _Exchange) -> None:
        del self._in_flight[exchange.request_id]
        self.factory.metrics.in_flight.dec()
        self._last_activity = self.factory.reactor.seconds()
        if not self._in_flight:
            self._watch()

    def _internal_error(self, exchange: _Exchange, details: str) -> ApiError:
        log.error("api_internal_error", op=exchange.op, peer=self.session.peer, traceback=details)
        return ApiError(ErrorCode.INTERNAL, INTERNAL_MESSAGE)

    def _answer(self, exchange: _Exchange, answer: dict[str, Any], error: ApiError | None = None) -> None:
        try:
            data = encode(answer)
        except (TypeError, ValueError) as e:
            error = self._internal_error(exchange, f"answer is not JSON-serialisable: {e}")
            answer = failure(exchange.request_id, error)
            data = encode(answer)
        delivered = self._connected
        if delivered:
            turnwrites.write(self.transport, data)  # with the turn's other answers to this client
        self._record(exchange, answer, error, delivered)
        if self.session.close_requested:
            self._close_when_idle()
        elif self._closing and not self._in_flight and self._connected:
            turnwrites.lose_connection(self.transport)

    def _record(self, exchange: _Exchange, answer: dict[str, Any], error: ApiError | None, delivered: bool) -> None:
        metrics = self.factory.metrics
        duration = max(0.0, self.factory.reactor.seconds() - exchange.started)
        status = "error" if error else answer.get("status") if answer.get("status") in STATUSES else "ok"
        metrics.child(metrics.requests, exchange.op, status).inc()
        metrics.child(metrics.duration, exchange.op).observe(duration)
        fields: dict[str, object] = {
            "request_id": exchange.request_id,
            "op": exchange.op,
            "status": status,
            "client": self.session.client_name,
            "merchant": answer.get("merchant_id"),
            "txn_id": answer.get("txn_id"),
            "response_code": answer.get("response_code"),
            "reason": answer.get("reason"),
            "connector": answer.get("connector"),
            "peer": self.session.peer,
            "duration_ms": round(duration * 1000, 3),
        }
        if exchange.request is not None:
            fields.update((key, value) for key, value in exchange.request.log_fields().items() if value is not None)
        if error:
            metrics.child(metrics.errors, error.code.value).inc()
            fields.update(error_code=error.code.value, error_field=error.field)
        if not delivered:
            self._undeliverable(exchange, answer)
            fields["delivered"] = False
        log.info("api_request", **fields)

    def _undeliverable(self, exchange: _Exchange, answer: dict[str, Any]) -> None:
        self.factory.metrics.undeliverable.labels(exchange.op).inc()
        txn_id = answer.get("txn_id")
        client = self.session.client_name
        if exchange.op == "authorize" and isinstance(txn_id, str) and isinstance(client, str):
            try:
                self.factory.service.answer_undeliverable(txn_id, client)
            except Exception:
                log.exception("api_undeliverable_hook_failed", txn_id=txn_id)

    def _line_too_long(self, limit: int) -> None:
        self._buffer = bytearray()
        error = ApiError(ErrorCode.TOO_LARGE, f"a line may hold at most {limit} bytes; closing the connection")
        exchange = _Exchange(started=self.factory.reactor.seconds())
        self._answer(exchange, failure(None, error), error)
        self._close_when_idle()

    def _hello_timed_out(self) -> None:
        self._hello_timer = None
        if self.session.client_name is None and not self._closing:
            timeout = self.factory.config.limits.hello_timeout
            error = ApiError(ErrorCode.UNAUTHENTICATED, f"no successful hello within {timeout:g} seconds; closing")
            self._close_for("hello_timeout", error)

    def _watch(self) -> None:
        """Arm the one timer enforcing ``line_timeout`` and ``idle_timeout`` no later than the next deadline.

        Activity only moves deadlines later, so the timer is not re-armed on every line:
        firing early just re-arms it (see `_watchdog_fired`).
        """
        deadline = self._next_deadline()
        if deadline is None or self._closing or not self._connected:
            return
        if self._watchdog is not None and self._watchdog.active():
            if self._watchdog.getTime() <= deadline + _SLACK:
                return
            self._watchdog.cancel()
        delay = max(0.0, deadline - self.factory.reactor.seconds())
        self._watchdog = self.factory.reactor.callLater(delay, self._watchdog_fired)

    def _next_deadline(self) -> float | None:
        return min((deadline for deadline, _ in self._deadlines()), default=None)

    def _deadlines(self) -> list[tuple[float, str]]:
        limits = self.factory.config.limits
        deadlines = []
        if self._line_started is not None and limits.line_timeout and not self._paused and not self._held:
            deadlines.append((self._line_started + limits.line_timeout, "line_timeout"))
        if limits.idle_timeout and self.session.client_name is not None and not self._in_flight:
            deadlines.append((self._last_activity + limits.idle_timeout, "idle_timeout"))
        return deadlines

    def _watchdog_fired(self) -> None:
        self._watchdog = None
        if self._closing:
            return
        now = self.factory.reactor.seconds()
        passed = {reason for deadline, reason in self._deadlines() if deadline <= now + _SLACK}
        if "line_timeout" in passed:
            timeout = self.factory.config.limits.line_timeout
            message = f"a request line must end within {timeout:g} seconds of its first byte; closing"
            self._close_for("line_timeout", ApiError(ErrorCode.INVALID_REQUEST, message))
        elif "idle_timeout" in passed:
            self._close_for("idle_timeout")
        else:
            self._watch()

    def _close_for(self, reason: str, error: ApiError | None = None) -> None:
        """Close the connection on the server's initiative, logging why; ``error`` is answered first (id null)."""
        log.warning(
            "api_connection_closed_by_server", reason=reason, peer=self.session.peer, client=self.session.client_name
        )
        if error is not None:
            exchange = _Exchange(started=self.factory.reactor.seconds())
            self._answer(exchange, failure(None, error), error)
        self._close_when_idle()

    def _close_when_idle(self) -> None:
        """Stop reading, and close once every request already read has been answered."""
        if not self._closing:
            self._closing = True
            self._buffer = bytearray()
            self.transport.pauseProducing()
        if not self._in_flight and self._connected:
            turnwrites.lose_connection(self.transport)

    def _start_hello_timer(self) -> None:
        hello_timeout = self.factory.config.limits.hello_timeout
        if hello_timeout:
            self._hello_timer = self.factory.reactor.callLater(hello_timeout, self._hello_timed_out)

    def _cancel_hello_timer(self) -> None:
        if self._hello_timer is not None and self._hello_timer.active():
            self._hello_timer.cancel()
        self._hello_timer = None

    def _certificate_cn(self) -> str | None:
        if not self._connected or not ISSLTransport.providedBy(self.transport):
            return None
        certificate = self.transport.getPeerCertificate()
        if certificate is None:
            return None
        names = certificate.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else None


class _Refusal(Protocol):
    """Answers ``busy`` and hangs up; used when the listener is at its connection limit."""

    def connectionMade(self) -> None:
        error = ApiError(ErrorCode.BUSY, "the switch has too many client connections; try again later")
        self.transport.write(encode(failure(None, error)))
        self.transport.loseConnection()


class ApiFactory(Factory):
    """Builds `ApiProtocol` connections sharing one service, configuration and op table.

    Assign a new `ApiConfig` to ``config`` to reload clients, merchants and limits;
    open connections pick it up with their next request.
    """

    protocol = ApiProtocol

    def __init__(
        self,
        service: IPaymentService,
        config: ApiConfig,
        reactor: IReactorTime | None = None,
        registry: CollectorRegistry | None = None,
        operations: OperationRegistry | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.service = service
        self.config = config
        self.reactor = reactor
        self.metrics = ApiMetrics.on(registry if registry is not None else REGISTRY)
        self.operations = operations if operations is not None else default_operations()
        self.connections: set[ApiProtocol] = set()
        self.gate: BacklogGate | None = None
        """Set by the application (`use_gate`): stops reading requests while the journal is far behind."""

    def use_gate(self, gate: BacklogGate) -> None:
        self.gate = gate
        self.metrics.held.set_function(lambda: gate.holding)

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        if len(self.connections) >= self.config.limits.max_connections:
            log.warning("api_connection_refused", peer=describe_address(addr), reason="max_connections")
            self.metrics.errors.labels(ErrorCode.BUSY.value).inc()
            return _Refusal()
        return super().buildProtocol(addr)

    def connection_made(self, protocol: ApiProtocol) -> None:
        self.connections.add(protocol)
        self.metrics.connections.inc()

    def connection_lost(self, protocol: ApiProtocol) -> None:
        self.connections.discard(protocol)
        self.metrics.connections.dec()
