"""The journal's behaviour, run once per backend (SQLite and PostgreSQL) through the `backend` fixture."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import defer, reactor

from switch.iso.masking import mask_message
from switch.journal import (
    CardData,
    CardDataRefused,
    Direction,
    DuplicateIdempotencyKey,
    EventDraft,
    InvalidRecord,
    Journal,
    JournalClosed,
    Kind,
    NewTransaction,
    PanDecryptionFailed,
    SafDraft,
    SafItemNotFound,
    SafKind,
    SafState,
    SafStateError,
    Status,
    TransactionExists,
    TransactionNotFound,
    TransitionRefused,
    UnknownEvent,
    VersionConflict,
    generate_key,
    open_journal,
)
from tests.journal.conftest import raw_connect, sample

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
    first = await journal.append_message(
        txn_id=txn.txn_id, direction=Direction.OUT, connector="bank_a", mti="0200", fields=mask_message(request)
    )
    second = await journal.append_message(
        txn_id=txn.txn_id, direction="in", connector="bank_a", mti="0210", fields=response
    )
    assert second > first
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


# Store-and-forward


def reversal(connector: str = "bank_a", **overrides: Any) -> SafDraft:
    values: dict[str, Any] = {
        "connector": connector,
        "kind": SafKind.REVERSAL,
        "mti": "0400",
        "fields": {"3": "000000", "4": "000000001250", "11": "000200"},
        "max_attempts": 3,
    }
    values.update(overrides)
    return SafDraft(**values)


async def transactions(journal: Journal, count: int) -> list[str]:
    created = [await journal.create_transaction(sale(order_id=f"o-{n}")) for n in range(count)]
    return [txn.txn_id for txn in created]


@pytest_twisted.ensureDeferred
async def test_saf_ready_keeps_order_only_within_one_payment(journal: Journal) -> None:
    t1, t2, t3 = await transactions(journal, 3)
    capture = await journal.create_transaction(sale(kind=Kind.CAPTURE, parent_txn_id=t1, order_id="o-0"))
    s1 = await journal.saf_enqueue(t1, reversal("bank_a"))
    s2 = await journal.saf_enqueue(t2, reversal("bank_a"))
    s3 = await journal.saf_enqueue(t1, reversal("bank_a", kind=SafKind.VOID))
    s4 = await journal.saf_enqueue(capture.txn_id, reversal("bank_a"))
    await journal.saf_enqueue(t3, reversal("bank_b"))
    now = datetime.now(timezone.utc)

    async def ready(limit: int = 10, due_by: datetime = now) -> list[int]:
        return [i.saf_id for i in await journal.saf_ready("bank_a", due_by=due_by, limit=limit)]

    assert await ready() == [s1.saf_id, s2.saf_id]  # s3 (same txn) and s4 (its capture) wait for s1
    assert await ready(limit=1) == [s1.saf_id]
    assert (await journal.saf_head("bank_a")).saf_id == s1.saf_id
    assert await journal.saf_head("bank_c") is None

    done = await journal.saf_complete(s1.saf_id, response_code="00")
    assert (done.state, done.response_code, done.attempts) == (SafState.DONE, "00", 1)
    assert await ready() == [s2.saf_id, s3.saf_id]  # the capture's item still waits for the void
    later = now + timedelta(seconds=60)
    await journal.saf_record_attempt(s2.saf_id, next_due_at=later, error="no answer")
    assert await ready() == [s3.saf_id]
    assert await ready(due_by=later) == [s2.saf_id, s3.saf_id]
    await journal.saf_complete(s3.saf_id, response_code="00")
    assert await ready() == [s4.saf_id]
    queued = await journal.saf_list(connector="bank_a", states={SafState.QUEUED})
    assert [i.saf_id for i in queued] == [s2.saf_id, s4.saf_id]
    assert isinstance(await failure_of(journal.saf_ready("bank_a", due_by=now, limit=0)), InvalidRecord)


@pytest_twisted.ensureDeferred
async def test_saf_enqueue_is_idempotent_per_transaction_and_kind(journal: Journal) -> None:
    (t1,) = await transactions(journal, 1)
    first = await journal.saf_enqueue(t1, reversal())
    again = await journal.saf_enqueue(t1, reversal(fields={"11": "000999"}))
    assert again.saf_id == first.saf_id and again.fields["11"] == "000200"
    advice = await journal.saf_enqueue(t1, reversal(kind=SafKind.ADVICE, mti="0220"))
    assert advice.saf_id != first.saf_id
    await journal.saf_complete(first.saf_id, response_code="00")
    later = await journal.saf_enqueue(t1, reversal())
    assert later.saf_id not in (first.saf_id, advice.saf_id)


@pytest_twisted.ensureDeferred
async def test_saf_attempts_then_dead_letter(journal: Journal, clock: Any) -> None:
    t1, t2 = await transactions(journal, 2)
    item = await journal.saf_enqueue(t1, reversal())
    await journal.saf_enqueue(t2, reversal())
    due = datetime.now(timezone.utc) + timedelta(seconds=60)

    after_one = await journal.saf_record_attempt(item.saf_id, next_due_at=due, error="no response in 60 s")
    assert (after_one.state, after_one.attempts, after_one.last_error) == (SafState.QUEUED, 1, "no response in 60 s")
    assert after_one.next_due_at == due and after_one.last_attempt_at is not None
    ready = await journal.saf_ready("bank_a", due_by=datetime.now(timezone.utc), limit=10)
    assert [i.txn_id for i in ready] == [t2]  # the item waiting for its retry holds up no other payment
    after_two = await journal.saf_record_attempt(item.saf_id, next_due_at=due, response_code="91")
    assert (after_two.attempts, after_two.last_response_code) == (2, "91")
    dead = await journal.saf_record_attempt(item.saf_id, next_due_at=due, response_code="96")
    assert (dead.state, dead.attempts) == (SafState.DEAD, 3)
    assert (await journal.saf_get(item.saf_id)).state == SafState.DEAD
    assert isinstance(await failure_of(journal.saf_get(999_999)), SafItemNotFound)
    assert dead.state_reason == "no final answer after 3 attempts; last: response code 96"

    assert (await journal.saf_head("bank_a")).txn_id == t2
    assert [i.saf_id for i in await journal.saf_list()] == [item.saf_id]
    notices = await journal.events_after(["m1"])
    assert [(e.type, e.txn_id, e.payload["attempts"]) for e in notices] == [("saf.dead_letter", t1, 3)]
    stale = await failure_of(journal.saf_record_attempt(item.saf_id, next_due_at=due))
    assert isinstance(stale, SafStateError) and "dead" in str(stale)


@pytest_twisted.ensureDeferred
async def test_saf_operator_retry_and_drop(journal: Journal) -> None:
    t1, t2 = await transactions(journal, 2)
    item = await journal.saf_enqueue(t1, reversal(max_attempts=1))
    due = datetime.now(timezone.utc)
    assert (await journal.saf_record_attempt(item.saf_id, next_due_at=due)).state == SafState.DEAD

    retried = await journal.saf_retry(item.saf_id, operator="alice")
    assert (retried.state, retried.attempts, retried.operator) == (SafState.QUEUED, 0, "alice")
    assert (await journal.saf_head("bank_a")).saf_id == item.saf_id
    assert isinstance(await failure_of(journal.saf_retry(item.saf_id, operator="alice")), SafStateError)

    assert isinstance(await failure_of(journal.saf_drop(item.saf_id, operator="bob", reason="")), InvalidRecord)
    dropped = await journal.saf_drop(item.saf_id, operator="bob", reason="bank confirmed no original on file")
    assert (dropped.state, dropped.operator, dropped.state_reason) == (
        SafState.DROPPED,
        "bob",
        "bank confirmed no original on file",
    )
    assert [i.saf_id for i in await journal.saf_list(states={SafState.DROPPED})] == [item.saf_id]
    assert await journal.saf_head("bank_a") is None
    assert isinstance(await failure_of(journal.saf_complete(item.saf_id, response_code="00")), SafStateError)

    other = await journal.saf_enqueue(t2, reversal())
    late_dead = await journal.saf_drop(other.saf_id, operator="bob", reason="duplicate")
    assert late_dead.state == SafState.DROPPED


@pytest_twisted.ensureDeferred
async def test_saf_card_is_sealed_and_fields_guarded(journal: Journal) -> None:
    (t1,) = await transactions(journal, 1)
    item = await journal.saf_enqueue(t1, reversal(card=CardData(AMEX, "2607")))
    assert item.card is not None and item.card.context == f"saf:{t1}"
    assert journal.reveal_card(item.card) == CardData(AMEX, "2607")
    for fields in ({"2": AMEX}, {"cvv2": "1234"}, {"45": "B4111^X"}):
        error = await failure_of(journal.saf_enqueue(t1, reversal(kind=SafKind.VOID, fields=fields)))
        assert isinstance(error, CardDataRefused)


@pytest_twisted.ensureDeferred
async def test_saf_stats_feed_the_metrics(journal: Journal, clock: Any, registry: Any) -> None:
    t1, t2, t3 = await transactions(journal, 3)
    await journal.saf_enqueue(t1, reversal("bank_a"))
    clock.advance(30)
    await journal.saf_enqueue(t2, reversal("bank_a"))
    dead = await journal.saf_enqueue(t3, reversal("bank_b", max_attempts=1))
    await journal.saf_record_attempt(dead.saf_id, next_due_at=datetime.now(timezone.utc))
    clock.advance(10)

    stats = {s.connector: s for s in await journal.refresh_saf_metrics()}
    assert (stats["bank_a"].depth, stats["bank_a"].dead_letters) == (2, 0)
    assert (stats["bank_b"].depth, stats["bank_b"].dead_letters) == (0, 1)
    assert sample(registry, "kswitch_saf_depth", connector="bank_a") == 2
    assert 39 <= sample(registry, "kswitch_saf_oldest_age_seconds", connector="bank_a") < 45
    assert sample(registry, "kswitch_saf_dead_letters", connector="bank_b") == 1

    for item in await journal.saf_list(connector="bank_a", states={SafState.QUEUED}):
        await journal.saf_complete(item.saf_id, response_code="00")
    await journal.saf_drop(dead.saf_id, operator="ops", reason="settled by phone")
    assert await journal.refresh_saf_metrics() == []
    assert sample(registry, "kswitch_saf_depth", connector="bank_a") == 0
    assert sample(registry, "kswitch_saf_oldest_age_seconds", connector="bank_a") == 0
    assert sample(registry, "kswitch_saf_dead_letters", connector="bank_b") == 0


# Events


@pytest_twisted.ensureDeferred
async def test_events_come_back_in_order_per_merchant_set(journal: Journal) -> None:
    appended = []
    for n in range(9):
        merchant = ("m1", "m2", "m3")[n % 3]
        appended.append(await journal.append_event(merchant, EventDraft("payment.completed", {"n": n})))
    ids = [e.event_id for e in appended]
    assert ids == sorted(ids) and len(set(ids)) == 9

    wanted = await journal.events_after(["m1", "m2"])
    assert [e.payload["n"] for e in wanted] == [0, 1, 3, 4, 6, 7]
    after = await journal.events_after(["m1", "m2"], wanted[2].event_id)
    assert [e.payload["n"] for e in after] == [4, 6, 7]
    assert [e.payload["n"] for e in await journal.events_after(["m3"], 0, limit=2)] == [2, 5]
    assert isinstance(await failure_of(journal.events_after([])), InvalidRecord)
    assert isinstance(await failure_of(journal.events_after("m1")), InvalidRecord)


@pytest_twisted.ensureDeferred
async def test_event_acknowledgements_per_client(journal: Journal) -> None:
    txn = await journal.create_transaction(sale(), event=EventDraft("payment.created", {"amount": 1250}))
    late = await journal.append_event("m1", EventDraft("payment.late_response", {"rc": "00"}), txn_id=txn.txn_id)
    await journal.append_event("m2", EventDraft("payment.completed"))

    pending = await journal.unacknowledged_events("hooks", ["m1"])
    assert [(e.type, e.txn_id) for e in pending] == [("payment.created", txn.txn_id), ("payment.late_response", txn.txn_id)]
    assert await journal.acknowledge_events("hooks", [pending[0].event_id]) == 1
    assert await journal.acknowledge_events("hooks", [pending[0].event_id]) == 0
    assert [e.event_id for e in await journal.unacknowledged_events("hooks", ["m1", "m2"])][0] == late.event_id
    assert len(await journal.unacknowledged_events("other-client", ["m1"])) == 2
    unknown = await failure_of(journal.acknowledge_events("hooks", [late.event_id, 10_000]))
    assert isinstance(unknown, UnknownEvent) and unknown.event_ids == [10_000]
    assert isinstance(await failure_of(journal.acknowledge_events("hooks", ["1"])), InvalidRecord)
    assert [e.event_id for e in await journal.unacknowledged_events("hooks", ["m1"])] == [late.event_id]


@pytest.mark.parametrize("payload", [{"amount": 12.5}, {"when": object()}, {"cvv": "123"}])
@pytest_twisted.ensureDeferred
async def test_event_payloads_are_checked(journal: Journal, payload: dict[str, Any]) -> None:
    assert isinstance(await failure_of(journal.append_event("m1", EventDraft("payment.failed", payload))), InvalidRecord)


def test_event_types_are_dotted_names() -> None:
    with pytest.raises(InvalidRecord):
        EventDraft("Payment Completed")


# Group commit


@pytest_twisted.ensureDeferred
async def test_group_commit_batches_concurrent_writes(journal: Journal, registry: Any, backend: str) -> None:
    count = 200
    await defer.gatherResults([journal.create_transaction(sale(order_id=f"o-{n}")) for n in range(count)])
    commits = sample(registry, "kswitch_journal_commits_total", backend=backend)
    batched = sample(registry, "kswitch_journal_batch_size_sum", backend=backend)
    assert batched == count
    assert commits < count / 4, f"{count} concurrent writes took {commits} commits"
    assert sample(registry, "kswitch_journal_writes_total", backend=backend, outcome="committed") == count
    assert sample(registry, "kswitch_journal_commit_seconds_count", backend=backend) == commits
    assert sample(registry, "kswitch_journal_queue_depth", backend=backend) == 0


@pytest_twisted.ensureDeferred
async def test_deferreds_fire_only_after_commit(journal: Journal, config: Any) -> None:
    observer = raw_connect(config)
    seen: list[bool] = []

    def visible_elsewhere(txn: Any) -> Any:
        row = observer.execute(f"SELECT status FROM transactions WHERE txn_id = '{txn.txn_id}'").fetchone()
        seen.append(row is not None)
        return txn

    try:
        writes = [journal.create_transaction(sale(order_id=f"o-{n}")) for n in range(50)]
        for write in writes:
            write.addCallback(visible_elsewhere)
        await defer.gatherResults(writes)
    finally:
        observer.close()
    assert seen == [True] * 50


@pytest_twisted.ensureDeferred
async def test_a_failing_write_does_not_sink_its_batch(journal: Journal, registry: Any, backend: str) -> None:
    existing = await journal.create_transaction(sale(txn_id="taken"))
    results = await defer.DeferredList(
        [journal.create_transaction(sale(order_id=f"ok-{n}")) for n in range(10)]
        + [journal.create_transaction(sale(txn_id="taken"))]
        + [journal.transition(existing.txn_id, expected_from={Status.APPROVED}, to=Status.CAPTURED)]
        + [journal.create_transaction(sale(order_id=f"ok-{n}")) for n in range(10, 20)],
        consumeErrors=True,
    )
    oks = [ok for ok, _ in results]
    assert oks == [True] * 10 + [False, False] + [True] * 10
    assert results[10][1].check(TransactionExists) and results[11][1].check(TransitionRefused)
    assert len(await journal.in_flight()) == 21
    assert sample(registry, "kswitch_journal_writes_total", backend=backend, outcome="refused") == 2


@pytest_twisted.ensureDeferred
async def test_closed_journal_refuses_work_and_reopens_with_data(config: Any, registry: Any) -> None:
    first = await open_journal(config, reactor, registry=registry)
    txn = await first.create_transaction(sale())
    pending = [first.create_transaction(sale(order_id=f"o-{n}")) for n in range(20)]
    await first.close()
    assert len(await defer.gatherResults(pending)) == 20
    assert isinstance(await failure_of(first.create_transaction(sale())), JournalClosed)
    assert isinstance(await failure_of(first.get_transaction(txn.txn_id)), JournalClosed)

    second = await open_journal(config, reactor, registry=registry)
    try:
        assert (await second.get_transaction(txn.txn_id)).masked_pan == "411111******1111"
        assert len(await second.in_flight()) == 21
    finally:
        await second.close()


# Key rotation


@pytest_twisted.ensureDeferred
async def test_key_rotation_rewrap_and_retirement(config: Any, registry: Any, key_files: Any) -> None:
    k1 = key_files.ring.read_text().strip().partition(":")[2]
    first = await open_journal(config, reactor, registry=registry)
    try:
        old = await first.create_transaction(sale())
        await first.saf_enqueue(old.txn_id, reversal(card=CardData(AMEX, "2607")))
    finally:
        await first.close()

    k2 = generate_key()
    key_files.write_ring(("k1", k1), ("k2", k2))
    second = await open_journal(config, reactor, registry=registry)
    try:
        assert second.reveal_card((await second.get_transaction(old.txn_id)).card).pan == VISA
        fresh = await second.create_transaction(sale(order_id="o-2"))
        assert fresh.card is not None and fresh.card.key_id == "k2"
        assert await second.key_usage() == {"k1": 2, "k2": 1}
        assert await second.rewrap_cards(batch=1) == 2
        assert await second.key_usage() == {"k2": 3}
    finally:
        await second.close()

    key_files.write_ring(("k2", k2))
    third = await open_journal(config, reactor, registry=registry)
    try:
        assert third.reveal_card((await third.get_transaction(old.txn_id)).card) == CardData(VISA, "2712")
        assert third.reveal_card((await third.saf_head("bank_a")).card) == CardData(AMEX, "2607")
    finally:
        await third.close()

    key_files.write_ring(("k2", generate_key()))
    fourth = await open_journal(config, reactor, registry=registry)
    try:
        stored = (await fourth.get_transaction(old.txn_id)).card
        with pytest.raises(PanDecryptionFailed, match="key id 'k2'"):
            fourth.reveal_card(stored)
    finally:
        await fourth.close()


# Connection loss


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_lost_postgres_connections_are_replaced(journal: Journal, config: Any) -> None:
    txn = await journal.create_transaction(sale())
    backend_pid = "SELECT pg_backend_pid() AS pid"
    writer_pid = await journal._writer.submit(lambda db: db.one(backend_pid)["pid"])
    reader_pids = set()
    for _ in range(20):
        reader_pids.add(await journal._readers.read(lambda db: db.one(backend_pid)["pid"]))
    killer = raw_connect(config)
    try:
        for pid in {writer_pid, *reader_pids}:
            killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        killer.close()

    approved = await journal.transition(txn.txn_id, expected_from={Status.PENDING}, to=Status.APPROVED)
    assert approved.status == Status.APPROVED
    for _ in range(5):
        assert (await journal.get_transaction(txn.txn_id)).status == Status.APPROVED


# Several switch processes on one journal


@pytest_twisted.ensureDeferred
async def test_two_switch_processes_share_one_journal(config: Any, registry: Any) -> None:
    first = await open_journal(config, reactor, registry=registry)
    second = await open_journal(config, reactor, registry=CollectorRegistry())
    try:
        writes = [
            journal.append_event("m1", EventDraft("payment.completed", {"n": n}))
            for n in range(100)
            for journal in (first, second)
        ]
        all_written = defer.gatherResults(writes)
        seen: list[int] = []
        while True:
            finished = all_written.called
            page = await first.events_after(["m1"], seen[-1] if seen else 0)
            seen += [event.event_id for event in page]
            if finished and not page:
                break
        appended = await all_written
        assert seen == sorted(event.event_id for event in appended), "a reader paging by id skipped an event"

        body = b"\x02" * 32
        created = await defer.DeferredList(
            [j.create_transaction(sale(idempotency_key="shared", request_hash=body)) for j in (first, second)],
            consumeErrors=True,
        )
        assert sorted(ok for ok, _ in created) == [False, True]
        assert next(value for ok, value in created if not ok).check(DuplicateIdempotencyKey)
        txn = next(value for ok, value in created if ok)

        items = await defer.gatherResults([j.saf_enqueue(txn.txn_id, reversal()) for j in (first, second)])
        assert items[0].saf_id == items[1].saf_id

        moved = await defer.DeferredList(
            [j.transition(txn.txn_id, expected_from={Status.PENDING}, to=s) for j, s in
             ((first, Status.APPROVED), (second, Status.TIMEOUT))],
            consumeErrors=True,
        )  # fmt: skip
        assert sorted(ok for ok, _ in moved) == [False, True]
    finally:
        await first.close()
        await second.close()
