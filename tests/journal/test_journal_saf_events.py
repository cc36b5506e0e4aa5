"""The journal's store-and-forward queue and event log, run once per backend (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import pytest_twisted

from switch.journal import (
    CardData,
    CardDataRefused,
    EventDraft,
    InvalidRecord,
    Journal,
    Kind,
    SafAcknowledged,
    SafDraft,
    SafItemNotFound,
    SafKind,
    SafState,
    SafStateError,
    Status,
    TransitionRefused,
    UnknownEvent,
)
from tests.journal.conftest import sample
from tests.journal.test_journal import AMEX, failure_of, sale
from tests.journal.test_operations import approved, child

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
async def test_an_acknowledged_item_is_completed_with_its_outcome_or_not_at_all(journal: Journal) -> None:
    """The item and the outcome it settles share one commit: a refused outcome leaves the item queued."""
    (payment,) = await transactions(journal, 1)
    timed_out = await journal.transition(payment, expected_from={Status.PENDING}, to=Status.TIMEOUT,
                                         saf=reversal())
    [item] = await journal.saf_items(timed_out.txn_id)
    refused = journal.transition(payment, expected_from={Status.PENDING}, to=Status.REVERSED,
                                 acknowledged=SafAcknowledged(item.saf_id, "00"))
    assert isinstance(await failure_of(refused), TransitionRefused)
    assert [i.state for i in await journal.saf_items(payment)] == [SafState.QUEUED], "completed without its outcome"

    reversed_ = await journal.transition(payment, expected_from={Status.TIMEOUT}, to=Status.REVERSED,
                                         acknowledged=SafAcknowledged(item.saf_id, "00"))
    [done] = await journal.saf_items(payment)
    assert (reversed_.status, done.state, done.response_code) == (Status.REVERSED, SafState.DONE, "00")

    preauth = await approved(journal, Kind.AUTHORIZATION, 5000)
    _, capture = await journal.begin_operation(preauth, child(preauth, Kind.CAPTURE, 4000), allowed=(Status.APPROVED,))
    await journal.finish_operation(capture.txn_id, to=Status.TIMEOUT, saf=reversal(kind=SafKind.ADVICE, mti="0220"))
    [advice] = await journal.saf_items(capture.txn_id)
    parent, done_capture = await journal.finish_operation(capture.txn_id, expected_from={Status.TIMEOUT},
                                                          to=Status.APPROVED,
                                                          acknowledged=SafAcknowledged(advice.saf_id, "00"))
    assert (parent.amount_captured, done_capture.status) == (4000, Status.APPROVED)
    assert (await journal.saf_items(capture.txn_id))[0].state is SafState.DONE
    assert isinstance(await failure_of(journal.transition(  # an item completed already is not completed again
        payment, expected_from={Status.REVERSED}, to=Status.REVERSED, acknowledged=SafAcknowledged(item.saf_id, "00"))),
        SafStateError)


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


