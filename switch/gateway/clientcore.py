"""What both Python clients of the socket API share: requests, answers, errors, operations.

`switch.gateway.client.BlockingClient` and `switch.gateway.twisted_client.KSwitchClient`
build requests and read answers here, so the two cannot drift apart. Standard library only.
"""

from __future__ import annotations

import json
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
