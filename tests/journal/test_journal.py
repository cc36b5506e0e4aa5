"""The journal's behaviour, run once per backend (SQLite and PostgreSQL) through the `backend` fixture."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from switch.iso.masking import mask_message
from switch.journal import (
    CardData,
    CardDataRefused,
    Direction,
    DuplicateIdempotencyKey,
    EventDraft,
    InvalidRecord,
    Journal,
    Kind,
    NewTransaction,
    SafDraft,
    SafKind,
    SafState,
    Status,
    TransactionExists,
    TransactionNotFound,
    TransitionRefused,
    VersionConflict,
)

VISA = "4111111111111111"
MASTERCARD = "5555555555554444"
AMEX = "378282246310005"


def sale(**overrides: Any) -> NewTransaction:
    values: dict[str, Any] = {
        "kind": Kind.SALE,
        "merchant_id": "m1",
        "connector": "bank_a",
        "amount": 1250,
        "currency": "EUR",
        "order_id": "order-1",
        "card": CardData(VISA, "2712"),
        "retain_card": True,
        "stan": "000123",
        "transmission_datetime": "1123113400",
    }
    values.update(overrides)
    return NewTransaction(**values)


async def failure_of(d: defer.Deferred[Any]) -> BaseException:
    try:
        await d
    except BaseException as exc:  # noqa: BLE001 - the test inspects whatever came back
        return exc
    raise AssertionError("expected the Deferred to fail")


# Transactions


@pytest_twisted.ensureDeferred
async def test_create_then_read_back(journal: Journal) -> None:
    created = await journal.create_transaction(sale())
    assert len(created.txn_id) == 26
    got = await journal.get_transaction(created.txn_id)
    assert got == created
    assert (got.status, got.version, got.amount, got.currency) == (Status.PENDING, 1, 1250, "EUR")
    assert got.masked_pan == "411111******1111"
    assert got.pan_hash == journal.vault.pan_hash(VISA)
    assert got.card is not None and got.card.key_id == "k1"
    assert journal.reveal_card(got.card) == CardData(VISA, "2712")
    assert (got.stan, got.transmission_datetime) == ("000123", "1123113400")
    assert abs((got.created_at - datetime.now(timezone.utc)).total_seconds()) < 5
    history = await journal.transitions(created.txn_id)
    assert [(t.from_status, t.to_status) for t in history] == [(None, Status.PENDING)]


@pytest_twisted.ensureDeferred
async def test_card_kept_only_when_asked(journal: Journal) -> None:
    txn = await journal.create_transaction(sale(retain_card=False))
    assert txn.card is None
    assert txn.masked_pan == "411111******1111"
    assert txn.pan_hash == journal.vault.pan_hash(VISA)


@pytest_twisted.ensureDeferred
async def test_txn_ids_are_unique_and_parents_must_exist(journal: Journal) -> None:
    await journal.create_transaction(sale(txn_id="fixed-1"))
    assert isinstance(await failure_of(journal.create_transaction(sale(txn_id="fixed-1"))), TransactionExists)
    missing = await failure_of(journal.create_transaction(sale(kind=Kind.REFUND, parent_txn_id="nope")))
    assert isinstance(missing, TransactionNotFound)
    assert isinstance(await failure_of(journal.get_transaction("nope")), TransactionNotFound)


@pytest_twisted.ensureDeferred
async def test_merchant_references_may_be_free_form(journal: Journal) -> None:
    txn = await journal.create_transaction(sale(order_id="ORD/2026 #17", idempotency_key="a b/c=d", request_hash=b"h"))
    assert [t.txn_id for t in await journal.find_by_order("m1", "ORD/2026 #17")] == [txn.txn_id]
    assert await journal.find_by_idempotency_key("m1", "a b/c=d") == txn


@pytest.mark.parametrize(
    "overrides",
    [
        {"amount": 12.5},
        {"amount": -1},
        {"amount": 10**12},
        {"currency": "eur"},
        {"currency": "978"},
        {"currency": "BGN"},
        {"kind": "loan"},
        {"order_id": "line\nbreak"},
        {"merchant_id": "m 1"},
    ],
)
def test_bad_transactions_refused_before_the_database(overrides: dict[str, Any]) -> None:
    with pytest.raises(InvalidRecord):
        sale(**overrides)


@pytest_twisted.ensureDeferred
async def test_transition_is_compare_and_set(journal: Journal) -> None:
    txn = await journal.create_transaction(sale())
    approved = await journal.transition(
        txn.txn_id,
        expected_from={Status.PENDING},
        to=Status.APPROVED,
        response_code="00",
        auth_code="A1B2C3",
        rrn="123456789012",
        amount_authorized=1250,
        amount_captured=1250,
        sent_at=datetime(2025, 11, 23, 11, 34, tzinfo=timezone.utc),
    )
    assert (approved.status, approved.version, approved.auth_code) == (Status.APPROVED, 2, "A1B2C3")
    assert (approved.amount_authorized, approved.amount_captured, approved.amount_refunded) == (1250, 1250, 0)
    assert approved.sent_at == datetime(2025, 11, 23, 11, 34, tzinfo=timezone.utc)

    refused = await failure_of(journal.transition(txn.txn_id, expected_from={Status.PENDING}, to=Status.TIMEOUT))
    assert isinstance(refused, TransitionRefused)
    assert refused.current == "approved" and refused.expected == {"pending"}
    assert "is 'approved', expected one of [pending]" in str(refused)

    partially = await journal.transition(
        txn.txn_id, expected_from=Status.APPROVED, to=Status.PARTIALLY_REFUNDED, amount_refunded=250, reason="customer"
    )
    assert partially.amount_refunded == 250
    history = await journal.transitions(txn.txn_id)
    assert [(t.from_status, t.to_status) for t in history] == [
        (None, Status.PENDING),
        (Status.PENDING, Status.APPROVED),
        (Status.APPROVED, Status.PARTIALLY_REFUNDED),
    ]
    assert history[1].changes["auth_code"] == "A1B2C3"
    assert history[2].reason == "customer"
    assert (await journal.get_transaction(txn.txn_id)).status == Status.PARTIALLY_REFUNDED


@pytest_twisted.ensureDeferred
async def test_transition_expected_version(journal: Journal) -> None:
    txn = await journal.create_transaction(sale())
    await journal.transition(txn.txn_id, expected_from={Status.PENDING}, to=Status.PENDING, stan="000124")
    stale = await failure_of(
        journal.transition(txn.txn_id, expected_from={Status.PENDING}, to=Status.APPROVED, expected_version=1)
    )
    assert isinstance(stale, VersionConflict) and stale.current_version == 2
    done = await journal.transition(txn.txn_id, expected_from={Status.PENDING}, to=Status.APPROVED, expected_version=2)
    assert done.version == 3


@pytest.mark.parametrize(
    "changes",
    [{"status": "approved"}, {"amount_captured": 1.5}, {"response_code": "x"}, {"sent_at": "yesterday"}, {"reason": ""}],
)
@pytest_twisted.ensureDeferred
async def test_transition_refuses_bad_changes(journal: Journal, changes: dict[str, Any]) -> None:
    txn = await journal.create_transaction(sale())
    error = await failure_of(journal.transition(txn.txn_id, expected_from={Status.PENDING}, to=Status.APPROVED, **changes))
    assert isinstance(error, InvalidRecord)
    assert (await journal.get_transaction(txn.txn_id)).version == 1


@pytest_twisted.ensureDeferred
async def test_racing_transitions_only_one_wins(journal: Journal) -> None:
    txn = await journal.create_transaction(sale())
    results = await defer.DeferredList(
        [
            journal.transition(txn.txn_id, expected_from={Status.PENDING}, to=Status.APPROVED, response_code="00"),
            journal.transition(txn.txn_id, expected_from={Status.PENDING}, to=Status.TIMEOUT),
        ],
        consumeErrors=True,
    )
    outcomes = sorted(ok for ok, _ in results)
    assert outcomes == [False, True]
    loser = next(value for ok, value in results if not ok)
    assert loser.check(TransitionRefused)


@pytest_twisted.ensureDeferred
async def test_state_change_with_event_and_saf_is_atomic(journal: Journal) -> None:
    txn = await journal.create_transaction(sale())
    draft = SafDraft(
        connector="bank_a",
        kind=SafKind.REVERSAL,
        mti="0400",
        fields={"3": "000000", "4": "000000001250", "11": "000124", "90": "0200000123112311340000000012345"},
        card=CardData(VISA, "2712"),
    )
    event = EventDraft("payment.reversal_pending", {"txn_id": txn.txn_id, "amount": 1250})
    moved = await journal.transition(
        txn.txn_id, expected_from={Status.PENDING}, to=Status.REVERSAL_PENDING, saf=draft, event=event
    )
    assert moved.status == Status.REVERSAL_PENDING
    head = await journal.saf_head("bank_a")
    assert head is not None and head.txn_id == txn.txn_id and head.fields["90"].startswith("0200")
    assert head.card is not None and journal.reveal_card(head.card).pan == VISA
    assert [e.type for e in await journal.events_after(["m1"])] == ["payment.reversal_pending"]

    other = await journal.create_transaction(sale(order_id="order-2"))
    await journal.transition(other.txn_id, expected_from={Status.PENDING}, to=Status.APPROVED)
    refused = await failure_of(
        journal.transition(other.txn_id, expected_from={Status.PENDING}, to=Status.REVERSAL_PENDING, saf=draft, event=event)
    )
    assert isinstance(refused, TransitionRefused)
    assert [i.txn_id for i in await journal.saf_list(states={SafState.QUEUED})] == [txn.txn_id]
    assert len(await journal.events_after(["m1"])) == 1


@pytest_twisted.ensureDeferred
async def test_forget_card_drops_the_ciphertext(journal: Journal) -> None:
    txn = await journal.create_transaction(sale())
    declined = await journal.transition(
        txn.txn_id, expected_from={Status.PENDING}, to=Status.DECLINED, response_code="05", forget_card=True
    )
    assert declined.card is None and declined.masked_pan == "411111******1111"
    history = await journal.transitions(txn.txn_id)
    assert history[-1].changes["card"] == "forgotten"


# Look-ups


@pytest_twisted.ensureDeferred
async def test_lookups(journal: Journal) -> None:
    auth = await journal.create_transaction(sale(kind=Kind.AUTHORIZATION, order_id="o-7", stan="000777"))
    await journal.transition(auth.txn_id, expected_from={Status.PENDING}, to=Status.APPROVED, amount_authorized=1250)
    capture = await journal.create_transaction(
        sale(kind=Kind.CAPTURE, order_id="o-7", parent_txn_id=auth.txn_id, card=None, retain_card=False, stan="000778")
    )
    other_card = await journal.create_transaction(sale(order_id="o-8", card=CardData(MASTERCARD, "2801")))
    other_merchant = await journal.create_transaction(sale(merchant_id="m2", order_id="o-7"))
    await journal.transition(other_card.txn_id, expected_from={Status.PENDING}, to=Status.REVERSAL_PENDING)

    assert [t.txn_id for t in await journal.find_by_order("m1", "o-7")] == [auth.txn_id, capture.txn_id]
    assert [t.txn_id for t in await journal.children(auth.txn_id)] == [capture.txn_id]
    an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    assert [t.txn_id for t in await journal.find_by_stan("bank_a", "000777", since=an_hour_ago)] == [auth.txn_id]
    same_card = await journal.find_by_pan(CardData(VISA), since=an_hour_ago)
    assert {t.txn_id for t in same_card} == {auth.txn_id, other_merchant.txn_id}
    assert [t.txn_id for t in await journal.find_by_pan(CardData(VISA), since=an_hour_ago, merchant_id="m2")] == [
        other_merchant.txn_id
    ]
    in_flight = {t.txn_id: t.status for t in await journal.in_flight()}
    assert in_flight == {
        capture.txn_id: Status.PENDING,
        other_card.txn_id: Status.REVERSAL_PENDING,
        other_merchant.txn_id: Status.PENDING,
    }


@pytest_twisted.ensureDeferred
async def test_idempotency_keys(journal: Journal, clock: Any) -> None:
    body = hashlib.sha256(b'{"amount":1250}').digest()
    first = await journal.create_transaction(sale(idempotency_key="idem-1", request_hash=body))
    assert (await journal.find_by_idempotency_key("m1", "idem-1")) == first

    replay = await failure_of(journal.create_transaction(sale(idempotency_key="idem-1", request_hash=body)))
    assert isinstance(replay, DuplicateIdempotencyKey)
    assert replay.same_request and replay.transaction.txn_id == first.txn_id
    conflict = await failure_of(
        journal.create_transaction(sale(idempotency_key="idem-1", request_hash=hashlib.sha256(b"other").digest()))
    )
    assert isinstance(conflict, DuplicateIdempotencyKey) and not conflict.same_request
    elsewhere = await journal.create_transaction(sale(merchant_id="m2", idempotency_key="idem-1", request_hash=body))
    assert (await journal.find_by_idempotency_key("m2", "idem-1")) == elsewhere

    clock.advance(timedelta(hours=23).total_seconds())
    assert (await journal.find_by_idempotency_key("m1", "idem-1")) == first
    clock.advance(timedelta(hours=1, seconds=1).total_seconds())
    assert (await journal.find_by_idempotency_key("m1", "idem-1")) is None
    rebound = await journal.create_transaction(sale(idempotency_key="idem-1", request_hash=body))
    assert (await journal.find_by_idempotency_key("m1", "idem-1")) == rebound
    assert (await journal.get_transaction(first.txn_id)).idempotency_key == "idem-1"
    clock.advance(timedelta(hours=25).total_seconds())
    assert await journal.purge_idempotency_keys() == 2
    assert (await journal.find_by_idempotency_key("m2", "idem-1")) is None


@pytest_twisted.ensureDeferred
async def test_idempotency_keys_are_purged_a_chunk_a_unit_until_none_is_left(journal: Journal, clock: Any) -> None:
    """A purge is many small writer units, not one DELETE the payments batched with it wait for; the keys
    still inside their time to live stay bound."""
    body = b"\x02" * 32
    for n in range(7):
        await journal.create_transaction(sale(idempotency_key=f"old-{n}", request_hash=body))
    clock.advance(timedelta(hours=25).total_seconds())
    kept = await journal.create_transaction(sale(idempotency_key="new", request_hash=body))
    assert await journal.purge_idempotency_keys(chunk=3) == 7
    assert [await journal.find_by_idempotency_key("m1", f"old-{n}") for n in range(7)] == [None] * 7
    assert (await journal.find_by_idempotency_key("m1", "new")) == kept
    assert await journal.purge_idempotency_keys(chunk=3) == 0


@pytest_twisted.ensureDeferred
async def test_simultaneous_duplicates_get_one_transaction(journal: Journal) -> None:
    body = b"\x01" * 32
    results = await defer.DeferredList(
        [journal.create_transaction(sale(idempotency_key="k", request_hash=body)) for _ in range(5)],
        consumeErrors=True,
    )
    winners = [value for ok, value in results if ok]
    losers = [value.value for ok, value in results if not ok]
    assert len(winners) == 1
    assert all(isinstance(e, DuplicateIdempotencyKey) and e.same_request for e in losers)
    assert {e.transaction.txn_id for e in losers} == {winners[0].txn_id}


# Messages


@pytest_twisted.ensureDeferred
async def test_messages_are_recorded_masked(journal: Journal) -> None:
    txn = await journal.create_transaction(sale())
    request = {"2": VISA, "3": "000000", "4": "000000001250", "11": "000123", "14": "2712", "49": "978"}
    response = {"3": "000000", "11": "000123", "38": "A1B2C3", "39": "00"}
    await journal.append_message(
        txn_id=txn.txn_id, direction=Direction.OUT, connector="bank_a", mti="0200", fields=mask_message(request)
    )
    await journal.append_message(txn_id=txn.txn_id, direction="in", connector="bank_a", mti="0210", fields=response)
    recorded = await journal.messages(txn.txn_id)
    assert [(m.direction, m.mti, m.stan, m.response_code) for m in recorded] == [
        (Direction.OUT, "0200", "000123", None),
        (Direction.IN, "0210", "000123", "00"),
    ]
    assert recorded[0].fields["2"] == "411111******1111"
    assert recorded[0].fields["14"] == "[4 masked]"


@pytest.mark.parametrize(
    "fields",
    [
        {"2": VISA},
        {"2": "411111 1111 1111 1111"},
        {"48": f"ref{VISA}x"},
        {"43": "card 4111-1111-1111-1111"},
        {"35": f"{VISA}=27121010000000000"},
        {"52": "1A2B3C4D5E6F7081"},
        {"cvv2": "737"},
        {"127": {"nested": {"CVC": "737"}}},
        {"4": 12.5},
    ],
)
@pytest_twisted.ensureDeferred
async def test_card_data_never_reaches_message_rows(journal: Journal, fields: dict[str, Any]) -> None:
    error = await failure_of(
        journal.append_message(txn_id=None, direction=Direction.OUT, connector="bank_a", mti="0200", fields=fields)
    )
    assert isinstance(error, InvalidRecord)
    assert VISA not in str(error) and "737" not in str(error)


@pytest_twisted.ensureDeferred
async def test_free_text_columns_refuse_a_pan_but_references_are_the_shops_own(journal: Journal) -> None:
    # The socket API refuses a reference that plausibly is a card number; the journal stores
    # references as given, so an order number that merely passes Luhn never fails here.
    txn = await journal.create_transaction(sale(order_id=AMEX))
    assert [t.txn_id for t in await journal.find_by_order(txn.merchant_id, AMEX)] == [txn.txn_id]
    in_reason = await failure_of(
        journal.transition(txn.txn_id, expected_from={Status.PENDING}, to=Status.FAILED, reason=f"bad card {AMEX}")
    )
    assert isinstance(in_reason, CardDataRefused)
    in_payload = await failure_of(journal.append_event("m1", EventDraft("payment.failed", {"note": MASTERCARD})))
    assert isinstance(in_payload, CardDataRefused)
    assert (await journal.get_transaction(txn.txn_id)).status == Status.PENDING
