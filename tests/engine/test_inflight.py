"""The in-flight payment keeps the request as sent, compactly: what the plugin and the reversal get back."""

from __future__ import annotations

import gc
import sys

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred

from switch.engine import sent
from switch.engine.inflight import InFlightPayment, payments_to
from switch.journal.ids import new_txn


def _payment(message: dict[str, str]) -> InFlightPayment:
    return InFlightPayment("T1", None, message, None, Deferred())  # type: ignore[arg-type]


def test_a_payment_held_keeps_its_bank_and_outcomes_in_its_class() -> None:
    """One of every payment held at a slow bank (issue 13's memory target): 80 bytes, where slots of its own
    for the bank and the outcomes took 96."""
    bank, outcomes = object(), object()
    payments = payments_to(bank, outcomes)  # type: ignore[arg-type]
    payment = payments("T1", None, _build("4111111111111111", 1, 1), None, Deferred())  # type: ignore[arg-type]
    assert payment.bank is bank and payment.outcomes is outcomes
    assert isinstance(payment, InFlightPayment)
    assert sys.getsizeof(payment) <= 80


def test_a_payment_held_keeps_its_id_as_the_number_it_spells() -> None:
    """A payment held keeps `new_txn`'s number (48 bytes) and spells its id when its outcome comes."""
    text, number = new_txn()
    payment = InFlightPayment(number, None, _build("4111111111111111", 1, 1), None, Deferred())  # type: ignore[arg-type]
    assert sys.getsizeof(payment._txn) <= 48 < sys.getsizeof(text)
    assert payment.txn_id == text
    assert payment.txn_id is payment.txn_id  # spelled once, when its outcome comes
    assert _payment({"t": "0200"}).txn_id == "T1"  # an id new_txn did not make is kept as it is


def _build(pan: str, amount: int, stan: int, acceptor: str = "SHOP 1") -> dict[str, str]:
    """As a dialect builds messages: constants are the same objects in each, per-payment values new ones."""
    return {"t": "0200", "2": pan, "3": "000000", "4": f"{amount:012d}", "11": f"{stan:06d}",
            "37": f"3334{stan:08d}", "43": acceptor}


def test_the_message_as_sent_comes_back_whole() -> None:
    first = _build("4111111111111111", 1250, 1)
    second = _build("4111111111111111", 999, 2)
    a, b = _payment(first), _payment(second)
    assert a.message == first and b.message == second
    assert list(a.message) == list(first)  # field order as built
    other = _payment({"t": "0100", "2": "4111111111111111", "14": "3012"})
    assert other.message == {"t": "0100", "2": "4111111111111111", "14": "3012"}


def test_a_payment_keeps_only_the_values_that_differ_from_messages_built_alike() -> None:
    acceptor = "ANOTHER SHOP " + "X" * 3  # not interned: its own object, as a config string is
    payments = [_payment({**_build("4000000000000002", 100 + n, 10 + n, acceptor), "49": "840"}) for n in range(3)]
    # card number, amount, STAN and RRN; the MTI, processing code and acceptor are the first message's objects
    assert [len(p._kept) for p in payments[1:]] == [4, 4]
    assert payments[1]._layout is payments[2]._layout  # one layout object for every payment with that pattern
    assert payments[2].message == {**_build("4000000000000002", 102, 12, acceptor), "49": "840"}


def test_no_card_number_outlives_its_payment_in_the_shapes() -> None:
    pan = "".join(["4999", "9900", "0000", "0019"])  # a string of its own, as one read from a request is
    payment = _payment({"t": "0200", "2": pan, "14": "3012", "4": "000000000100"})
    del payment
    gc.collect()
    assert [r for r in gc.get_referrers(pan) if r is not globals() and not isinstance(r, type(gc))] == []


def test_one_field_as_sent_is_read_without_the_whole_message() -> None:
    payment = _payment({"t": "0200", "11": "000001", "37": "333411000001"})
    assert payment.sent("37") == "333411000001"
    assert payment.sent("t") == "0200"
    assert payment.sent("38") is None


_fields = st.dictionaries(st.sampled_from(["t", "2", "3", "4", "11", "14", "37", "41", "43", "49"]),
                          st.sampled_from(["0200", "000000", "840", "SHOP", "4111111111111111", "x"]), min_size=1)


@given(st.lists(_fields, min_size=1, max_size=6))
def test_any_messages_packed_come_back_as_they_were(messages: list[dict[str, str]]) -> None:
    """Property: whatever a shape's base and layouts hold from earlier messages, a packed message unpacks to itself,
    and each field read alone is the field."""
    packed = [(m, sent.pack(m)) for m in messages]
    for message, (layout, kept) in packed:
        assert sent.unpack(layout, kept) == message and list(sent.unpack(layout, kept)) == list(message)
        for number in ("t", "2", "11", "99"):
            assert sent.field(layout, kept, number) == message.get(number)


def test_past_its_bound_of_layouts_a_shape_keeps_messages_whole_and_they_still_come_back() -> None:
    names = ["t", "3", "22", "25", "32", "49", "41", "42"]
    base = {n: f"base-{n}-{'y' * 3}" for n in names}  # strings of their own, as a config's are
    sent.pack(base)
    messages = []
    for pattern in range(1, 100):  # 99 patterns of which positions differ from the base's objects
        messages.append({n: "".join(["new-", n]) if pattern >> i & 1 else base[n] for i, n in enumerate(names)})
    packed = [sent.pack(m) for m in messages]
    assert len(packed[0][0].shape.layouts) == sent._MAX_LAYOUTS
    assert all(sent.unpack(layout, kept) == m for m, (layout, kept) in zip(messages, packed))
    assert len(packed[-1][1]) == len(names)  # the last ones past the bound: kept whole
