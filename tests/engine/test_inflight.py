"""The in-flight payment keeps the request as sent, compactly: what the plugin and the reversal get back."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from switch.engine.inflight import InFlightPayment


def _payment(message: dict[str, str]) -> InFlightPayment:
    return InFlightPayment("T1", None, None, message, None, Deferred(), None)  # type: ignore[arg-type]


def test_the_message_as_sent_comes_back_whole_and_its_field_names_are_shared() -> None:
    first = {"t": "0200", "2": "4111111111111111", "4": "000000001250", "11": "000001", "37": "333411000001"}
    second = {**first, "4": "000000000999", "11": "000002", "37": "333411000002"}
    a, b = _payment(first), _payment(second)
    assert a.message == first and b.message == second
    assert list(a.message) == list(first)  # field order as built
    assert a._names is b._names  # one tuple of names for every message built alike
    other = _payment({"t": "0100", "2": "4111111111111111", "14": "3012"})
    assert other.message == {"t": "0100", "2": "4111111111111111", "14": "3012"} and other._names is not a._names


def test_one_field_as_sent_is_read_without_the_whole_message() -> None:
    payment = _payment({"t": "0200", "11": "000001", "37": "333411000001"})
    assert payment.sent("37") == "333411000001"
    assert payment.sent("38") is None
