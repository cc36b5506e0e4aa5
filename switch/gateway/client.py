"""Client library for the kswitch socket API (``specs/socket-api.md``).

Two clients share the request building and answer handling:

* `KSwitchClient` for Twisted code: pipelined, every method returns a Deferred.
  It lives in `switch.gateway.twisted_client` and is imported from there on first use,
  so this module itself needs nothing but the standard library.
* `BlockingClient` for plain synchronous Python (scripts, ``kpay``, PHP-style
  request handlers): the ``socket`` module only, one request at a time.

Both raise `KSwitchError` for an ``ok: false`` answer, and its subclass
`KSwitchConnectionError` when the switch could not be reached or the connection
broke; after a broken ``authorize`` the outcome is unknown, so repeat it with the
same ``idempotency_key`` (or ask ``status``) rather than sending a new payment.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Answer = dict[str, Any]

DEFAULT_CONNECT = "tcp:127.0.0.1:7583"
MAX_ANSWER_BYTES = 1024 * 1024


class KSwitchError(Exception):
    """An error answer (``code`` as in the spec), or a client-side failure (see `KSwitchConnectionError`)."""

    def __init__(self, code: str, field: str | None, message: str) -> None:
        super().__init__(f"{code}{f' ({field})' if field else ''}: {message}")
        self.code = code
        self.field = field
        self.message = message


class KSwitchConnectionError(KSwitchError):
    """No answer: ``connect_failed``, ``connection_lost``, ``timeout`` or ``protocol_error``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, None, message)


def authorize_fields(
    *,
    merchant_id: str,
    store_id: str,
    order_id: str,
    amount: int,
    currency: str,
    pan: str,
    expiry: str,
    cvv: str | None = None,
    capture: bool = True,
    bank: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """The fields of an ``authorize`` request; optional ones left out when not given."""
    instrument: dict[str, Any] = {"type": "card", "pan": pan, "expiry": expiry}
    if cvv is not None:
        instrument["cvv"] = cvv
    fields: dict[str, Any] = {
        "merchant_id": merchant_id,
        "store_id": store_id,
        "order_id": order_id,
        "amount": amount,
        "currency": currency,
        "capture": capture,
        "instrument": instrument,
    }
    optional = {"bank": bank, "idempotency_key": idempotency_key}
    fields.update((key, value) for key, value in optional.items() if value is not None)
    return fields


def lifecycle_fields(
    txn_id: str, *, amount: int | None = None, idempotency_key: str | None = None
) -> dict[str, Any]:
    """The fields of a ``capture``, ``void`` or ``refund`` request; optional ones left out when not given."""
    fields: dict[str, Any] = {"txn_id": txn_id}
    optional = {"amount": amount, "idempotency_key": idempotency_key}
    fields.update((key, value) for key, value in optional.items() if value is not None)
    return fields


def encode_request(request_id: int, op: str, fields: dict[str, Any]) -> bytes:
    return json.dumps({"id": request_id, "op": op, **fields}, separators=(",", ":")).encode() + b"\n"


def decode_answer(line: bytes) -> Answer:
    try:
        answer = json.loads(line)
    except ValueError:
        raise KSwitchConnectionError("protocol_error", "the switch sent a line that is not JSON") from None
    if not isinstance(answer, dict):
        raise KSwitchConnectionError("protocol_error", "the switch sent a line that is not a JSON object")
    return answer


def connection_error(answer: Answer) -> KSwitchError | None:
    """The error of an answer about the whole connection (``id`` null), such as ``too_large``.

    Other lines whose id was not sent by this client (events of later protocol
    versions) are not errors: the spec tells clients to ignore them.
    """
    if answer.get("id") is None and answer.get("ok") is False:
        try:
            answer_fields(answer)
        except KSwitchError as e:
            return e
    return None


def answer_fields(answer: Answer) -> Answer:
    """The answer without ``id`` and ``ok``, or `KSwitchError` when it is an error answer."""
    if answer.get("ok") is not True:
        error = answer.get("error") or {}
        raise KSwitchError(str(error.get("code", "unknown")), error.get("field"), str(error.get("message", "")))
    return {key: value for key, value in answer.items() if key not in ("id", "ok")}


class Operations(Generic[T]):
    """The named operations in terms of ``call``, shared by the blocking and the Twisted client."""

    call: Callable[..., T]

    def ping(self) -> T:
        return self.call("ping")

    def hello(self, client: str, token: str) -> T:
        return self.call("hello", client=client, token=token)

    def status(self, txn_id: str) -> T:
        return self.call("status", txn_id=txn_id)

    def status_by_order(self, merchant_id: str, order_id: str) -> T:
        """The order's latest payment (``status`` by ``merchant_id`` and ``order_id``)."""
        return self.call("status", merchant_id=merchant_id, order_id=order_id)

    def capture(self, txn_id: str, *, amount: int | None = None, idempotency_key: str | None = None) -> T:
        """Complete a pre-authorization; ``amount`` defaults to all that was authorized."""
        return self.call("capture", **lifecycle_fields(txn_id, amount=amount, idempotency_key=idempotency_key))

    def void(self, txn_id: str, *, idempotency_key: str | None = None) -> T:
        """Cancel an approved payment not yet settled (a reversal through store-and-forward)."""
        return self.call("void", **lifecycle_fields(txn_id, idempotency_key=idempotency_key))

    def refund(self, txn_id: str, *, amount: int | None = None, idempotency_key: str | None = None) -> T:
        """Give back captured money; ``amount`` defaults to all that is left to refund."""
        return self.call("refund", **lifecycle_fields(txn_id, amount=amount, idempotency_key=idempotency_key))

    def authorize(
        self,
        *,
        merchant_id: str,
        store_id: str,
        order_id: str,
        amount: int,
        currency: str,
        pan: str,
        expiry: str,
        cvv: str | None = None,
        capture: bool = True,
        bank: str | None = None,
        idempotency_key: str | None = None,
    ) -> T:
        """``capture=True`` is a sale; ``capture=False`` a pre-authorization."""
        return self.call(
            "authorize",
            **authorize_fields(
                merchant_id=merchant_id,
                store_id=store_id,
                order_id=order_id,
                amount=amount,
                currency=currency,
                pan=pan,
                expiry=expiry,
                cvv=cvv,
                capture=capture,
                bank=bank,
                idempotency_key=idempotency_key,
            ),
        )


def parse_connect(description: str) -> tuple[str, int] | str:
    """``tcp:HOST:PORT`` → (host, port); ``unix:PATH`` → path. IPv6 hosts go in brackets: ``tcp:[::1]:7583``."""
    kind, _, rest = description.partition(":")
    if kind == "unix" and rest:
        return rest
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return host, int(port)
    raise ValueError(f"expected tcp:HOST:PORT or unix:PATH, got {description!r}")


class BlockingClient(Operations[Answer]):
    """Synchronous client; connects on first use and says hello when given ``client`` and ``token``.

    After a timeout or a broken connection the socket is closed, and the next
    call connects again (and says hello again). So does a call after the connection
    has been unused for the ``idle_timeout`` the switch announced in its hello answer,
    since the switch has closed it meanwhile.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        unix_path: str | None = None,
        client: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._target: tuple[str, int] | str
        if unix_path is not None and host is None and port is None:
            self._target = unix_path
        elif unix_path is None and host is not None and port is not None:
            self._target = (host, port)
        else:
            raise ValueError("give either host and port, or unix_path")
        self._credentials = (client, token) if client is not None and token is not None else None
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._socket: socket.socket | None = None
        self._reader: Any = None
        self._idle_timeout = 0.0
        self._last_used = 0.0

    @classmethod
    def from_description(cls, description: str = DEFAULT_CONNECT, **options: Any) -> BlockingClient:
        target = parse_connect(description)
        if isinstance(target, str):
            return cls(unix_path=target, **options)
        return cls(*target, **options)

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._socket is not None:
            self._reader.close()
            self._socket.close()
        self._socket = self._reader = None

    def call(self, op: str, **fields: Any) -> Answer:
        """Send any op and wait for its answer fields; raises `KSwitchError`."""
        if self._socket is not None and self._idle_timeout and time.monotonic() - self._last_used >= self._idle_timeout:
            self.close()
        if self._socket is None:
            self._connect()
        return answer_fields(self._exchange(op, fields))

    def _open(self) -> socket.socket:
        if not isinstance(self._target, str):
            return socket.create_connection(self._target, timeout=self._timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self._timeout)
            sock.connect(self._target)
        except OSError:
            sock.close()
            raise
        return sock

    def _connect(self) -> None:
        try:
            sock = self._open()
        except OSError as e:
            message = f"cannot connect to {self._describe()}: {_reason(e)}"
            raise KSwitchConnectionError("connect_failed", message) from None
        self._socket, self._reader = sock, sock.makefile("rb")
        if self._credentials is not None:
            client, token = self._credentials
            try:
                hello = answer_fields(self._exchange("hello", {"client": client, "token": token}))
            except KSwitchError:
                self.close()
                raise
            idle = hello.get("idle_timeout")
            self._idle_timeout = float(idle) if isinstance(idle, int | float) and not isinstance(idle, bool) else 0.0

    def _exchange(self, op: str, fields: dict[str, Any]) -> Answer:
        assert self._socket is not None
        request_id = next(self._ids)
        try:
            self._socket.sendall(encode_request(request_id, op, fields))
            while True:
                line = self._reader.readline(MAX_ANSWER_BYTES + 1)
                if len(line) > MAX_ANSWER_BYTES:
                    message = f"the switch sent an answer over {MAX_ANSWER_BYTES} bytes"
                    raise KSwitchConnectionError("protocol_error", message)
                if not line.endswith(b"\n"):
                    raise KSwitchConnectionError("connection_lost", f"the switch closed the connection during {op}")
                answer = decode_answer(line)
                if answer.get("id") == request_id:
                    self._last_used = time.monotonic()
                    return answer
                error = connection_error(answer)
                if error is not None:
                    raise error
        except TimeoutError:
            self.close()
            message = f"no answer to {op} within {self._timeout:g} s; the outcome is unknown"
            raise KSwitchConnectionError("timeout", message) from None
        except OSError as e:
            self.close()
            message = f"connection to {self._describe()} broke: {_reason(e)}"
            raise KSwitchConnectionError("connection_lost", message) from None
        except KSwitchError:
            self.close()
            raise

    def _describe(self) -> str:
        if isinstance(self._target, str):
            return f"unix:{self._target}"
        host, port = self._target
        return f"tcp:{host}:{port}"


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def __getattr__(name: str) -> Any:
    """Load the Twisted client only when asked for, keeping ``kpay`` free of dependencies."""
    if name in ("KSwitchClient", "KSwitchProtocol"):
        from switch.gateway import twisted_client

        return getattr(twisted_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
