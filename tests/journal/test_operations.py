"""Operations on a payment (capture, refund, void): reservation before sending and settlement
of the parent's totals in the same database transaction as the operation's outcome.
Run once per backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import defer, reactor

from switch.journal import (
    CardData,
    DuplicateIdempotencyKey,
    Journal,
    Kind,
    NewTransaction,
    ReservationRefused,
    SafDraft,
    SafKind,
    SafState,
    Status,
    StorageError,
    TransactionNotFound,
    open_journal,
)
from tests.journal.conftest import raw_connect
from tests.journal.test_journal import failure_of, sale

VISA = "4111111111111111"
APPROVED_SALE = (Status.APPROVED, Status.CAPTURED, Status.PARTIALLY_REFUNDED)


async def approved(journal: Journal, kind: Kind = Kind.SALE, amount: int = 1250) -> str:
    txn = await journal.create_transaction(sale(kind=kind, amount=amount))
    changes: dict[str, Any] = {"amount_authorized": amount}
    if kind is Kind.SALE:
        changes["amount_captured"] = amount
    await journal.transition(txn.txn_id, expected_from=(Status.PENDING,), to=Status.APPROVED, **changes)
    return txn.txn_id


def child(parent: str, kind: Kind, amount: int, **extra: Any) -> NewTransaction:
    return NewTransaction(kind=kind, parent_txn_id=parent, merchant_id="m1", connector="bank_a", amount=amount,
                          currency="EUR", order_id="order-1", card=CardData(VISA, "2712"), retain_card=True,
                          stan="000200", **extra)


REQUEST = ("0200", {"3": "200000", "4": "000000000500", "11": "000200"})


@pytest_twisted.ensureDeferred
async def test_capture_reserves_then_settles_parent_in_the_same_commit(journal: Journal, config) -> None:
    parent_id = await approved(journal, Kind.AUTHORIZATION, 5000)
    parent, capture = await journal.begin_operation(parent_id, child(parent_id, Kind.CAPTURE, 4000),
                                                    allowed=(Status.APPROVED,), request=("0220", {"11": "000200"}))
    assert (parent.status, parent.amount_capture_pending, parent.amount_captured) == (Status.APPROVED, 4000, 0)
    assert capture.status is Status.PENDING and capture.card is not None  # kept for a repeat
    assert [m.mti for m in await journal.messages(capture.txn_id)] == ["0220"]
    second = await failure_of(journal.begin_operation(parent_id, child(parent_id, Kind.CAPTURE, 1000),
                                                      allowed=(Status.APPROVED,)))
    assert isinstance(second, ReservationRefused) and second.parent.amount_capture_pending == 4000
    parent, capture = await journal.finish_operation(capture.txn_id, to=Status.APPROVED, response_code="00",
                                                     forget_card=True)
    assert (parent.status, parent.amount_captured, parent.amount_capture_pending) == (Status.CAPTURED, 4000, 0)
    assert capture.status is Status.APPROVED and capture.card is None
    conn = raw_connect(config)
    try:
        row = conn.execute("SELECT status, amount_captured, amount_capture_pending FROM transactions "
                           "WHERE txn_id = '" + parent_id + "'").fetchone()
    finally:
        conn.close()
    assert tuple(row) == ("captured", 4000, 0)


@pytest_twisted.ensureDeferred
async def test_concurrent_refunds_never_reserve_more_than_captured(journal: Journal) -> None:
    parent_id = await approved(journal, amount=1000)
    attempts = [journal.begin_operation(parent_id, child(parent_id, Kind.REFUND, 600), allowed=APPROVED_SALE,
                                        request=REQUEST) for _ in range(2)]
    results = await defer.DeferredList(attempts, consumeErrors=True)
    ok = [r for good, r in results if good]
    refused = [r.value for good, r in results if not good]
    assert len(ok) == 1 and len(refused) == 1 and isinstance(refused[0], ReservationRefused)
    assert len(await journal.children(parent_id)) == 1  # the refused one left nothing behind
    parent, refund = ok[0]
    assert parent.amount_refund_pending == 600
    parent, _ = await journal.finish_operation(refund.txn_id, to=Status.APPROVED, response_code="00")
    assert (parent.status, parent.amount_refunded, parent.amount_refund_pending) == (
        Status.PARTIALLY_REFUNDED, 600, 0)
    _, rest = await journal.begin_operation(parent_id, child(parent_id, Kind.REFUND, 400), allowed=APPROVED_SALE)
    parent, _ = await journal.finish_operation(rest.txn_id, to=Status.APPROVED)
    assert (parent.status, parent.amount_refunded) == (Status.REFUNDED, 1000)


@pytest_twisted.ensureDeferred
async def test_declined_releases_timeout_keeps_reversed_releases(journal: Journal) -> None:
    parent_id = await approved(journal, amount=1000)
    _, declined = await journal.begin_operation(parent_id, child(parent_id, Kind.REFUND, 700), allowed=APPROVED_SALE)
    parent, _ = await journal.finish_operation(declined.txn_id, to=Status.DECLINED, response_code="05")
    assert (parent.status, parent.amount_refund_pending, parent.amount_refunded) == (Status.APPROVED, 0, 0)
    _, uncertain = await journal.begin_operation(parent_id, child(parent_id, Kind.REFUND, 700),
                                                 allowed=APPROVED_SALE)
    reversal = SafDraft(connector="bank_a", kind=SafKind.REVERSAL, mti="0400", fields={"11": "000200"},
                        card=CardData(VISA, "2712"))
    parent, timed_out = await journal.finish_operation(uncertain.txn_id, to=Status.TIMEOUT, saf=reversal)
    assert timed_out.status is Status.TIMEOUT and parent.amount_refund_pending == 700
    assert [(i.kind, i.state) for i in await journal.saf_items(uncertain.txn_id)] == [
        (SafKind.REVERSAL, SafState.QUEUED)]
    assert isinstance(await failure_of(journal.begin_operation(
        parent_id, child(parent_id, Kind.REFUND, 301), allowed=APPROVED_SALE)), ReservationRefused)
    parent, _ = await journal.finish_operation(uncertain.txn_id, expected_from=(Status.TIMEOUT,), to=Status.REVERSED)
    assert (parent.amount_refund_pending, parent.amount_refunded, parent.status) == (0, 0, Status.APPROVED)


@pytest_twisted.ensureDeferred
async def test_void_holds_the_parent_until_settled_and_forgets_its_card(journal: Journal) -> None:
    parent_id = await approved(journal, Kind.AUTHORIZATION, 900)
    void_draft = SafDraft(connector="bank_a", kind=SafKind.VOID, mti="0400", fields={"11": "000123"},
                          card=CardData(VISA, "2712"))
    parent, void = await journal.begin_operation(parent_id, child(parent_id, Kind.VOID, 900),
                                                 allowed=(Status.APPROVED,), saf=void_draft)
    assert (parent.status, parent.reason) == (Status.REVERSAL_PENDING, "void_requested")
    assert [i.kind for i in await journal.saf_items(void.txn_id)] == [SafKind.VOID]
    refused = await failure_of(journal.begin_operation(parent_id, child(parent_id, Kind.CAPTURE, 900),
                                                       allowed=(Status.APPROVED,)))
    assert isinstance(refused, ReservationRefused) and refused.parent.status is Status.REVERSAL_PENDING
    parent, void = await journal.finish_operation(void.txn_id, to=Status.APPROVED, response_code="00")
    assert parent.status is Status.VOIDED and parent.card is None and void.status is Status.APPROVED


@pytest_twisted.ensureDeferred
async def test_a_parent_that_disagrees_rolls_the_outcome_back(journal: Journal, config) -> None:
    """By construction the child's outcome and the parent's totals commit together: when the
    parent cannot take the outcome, the child is not finalized either."""
    parent_id = await approved(journal, amount=1000)
    _, refund = await journal.begin_operation(parent_id, child(parent_id, Kind.REFUND, 500), allowed=APPROVED_SALE)
    conn = raw_connect(config)
    try:
        conn.execute("UPDATE transactions SET amount_refund_pending = 0 WHERE txn_id = '" + parent_id + "'")
        if config.backend == "sqlite":
            conn.commit()
    finally:
        conn.close()
    error = await failure_of(journal.finish_operation(refund.txn_id, to=Status.APPROVED, response_code="00"))
    assert isinstance(error, StorageError)
    assert (await journal.get_transaction(refund.txn_id)).status is Status.PENDING
    assert (await journal.get_transaction(parent_id)).amount_refunded == 0


@pytest_twisted.ensureDeferred
async def test_idempotency_key_clash_undoes_the_reservation(journal: Journal) -> None:
    parent_id = await approved(journal, amount=1000)
    digest = hashlib.sha256(b"refund").digest()
    await journal.begin_operation(parent_id, child(parent_id, Kind.REFUND, 100, idempotency_key="r-1",
                                                   request_hash=digest), allowed=APPROVED_SALE)
    clash = await failure_of(journal.begin_operation(
        parent_id, child(parent_id, Kind.REFUND, 100, idempotency_key="r-1", request_hash=digest),
        allowed=APPROVED_SALE))
    assert isinstance(clash, DuplicateIdempotencyKey) and clash.same_request
    parent = await journal.get_transaction(parent_id)
    assert parent.amount_refund_pending == 100 and len(await journal.children(parent_id)) == 1


@pytest_twisted.ensureDeferred
async def test_two_writers_never_over_refund(journal: Journal, config, clock) -> None:
    """The guard is the UPDATE's WHERE clause, not this process's memory: two journals (two
    writer connections, as two switch processes would have) cannot both reserve."""
    other = await open_journal(config, reactor, registry=CollectorRegistry(), clock=clock)
    try:
        parent_id = await approved(journal, amount=1000)
        results = await defer.DeferredList([
            j.begin_operation(parent_id, child(parent_id, Kind.REFUND, 600), allowed=APPROVED_SALE)
            for j in (journal, other)
        ], consumeErrors=True)
        assert sorted(ok for ok, _ in results) == [False, True]
        assert isinstance(next(r.value for ok, r in results if not ok), ReservationRefused)
        assert (await other.get_transaction(parent_id)).amount_refund_pending == 600
    finally:
        await other.close()


RESOLVING = (Status.PENDING, Status.TIMEOUT)
ALLOWED = {Kind.CAPTURE: (Status.APPROVED,), Kind.REFUND: APPROVED_SALE, Kind.VOID: (Status.APPROVED,)}


def may_start(parent: Any, kind: Kind, amount: int) -> bool:
    """The reservation rules, restated independently of the SQL."""
    if parent.status not in ALLOWED[kind]:
        return False
    if kind is Kind.CAPTURE:
        return (parent.kind is Kind.AUTHORIZATION and parent.amount_captured == 0 and parent.amount_capture_pending == 0
                and parent.amount_refund_pending == 0 and amount <= parent.amount_authorized)
    if kind is Kind.REFUND:
        return (parent.amount_capture_pending == 0
                and parent.amount_captured - parent.amount_refunded - parent.amount_refund_pending >= amount)
    return parent.amount_capture_pending == parent.amount_refund_pending == parent.amount_refunded == 0


async def check_parent(journal: Journal, parent_id: str) -> None:
    """The payment's totals are exactly what its operations say."""
    parent = await journal.get_transaction(parent_id)
    ops = await journal.children(parent_id)

    def total(kind: Kind, statuses: tuple[Status, ...]) -> int:
        return sum(o.amount for o in ops if o.kind is kind and o.status in statuses)

    captured = parent.amount if parent.kind is Kind.SALE else total(Kind.CAPTURE, (Status.APPROVED,))
    assert parent.amount_captured == captured
    assert parent.amount_refunded == total(Kind.REFUND, (Status.APPROVED,))
    assert parent.amount_capture_pending == total(Kind.CAPTURE, RESOLVING)
    assert parent.amount_refund_pending == total(Kind.REFUND, RESOLVING)
    assert parent.amount_refunded + parent.amount_refund_pending <= parent.amount_captured
    voids = {o.status for o in ops if o.kind is Kind.VOID}
    assert (parent.status is Status.VOIDED) == (Status.APPROVED in voids)
    assert (parent.status is Status.REVERSAL_PENDING) == bool(voids & set(RESOLVING))


@pytest_twisted.ensureDeferred
async def test_random_operation_sequences_keep_every_parent_equal_to_its_operations(journal: Journal) -> None:
    rng = random.Random(8)
    parents = [await approved(journal, kind, 1000) for kind in (Kind.SALE, Kind.SALE, Kind.AUTHORIZATION,
                                                                 Kind.AUTHORIZATION, Kind.AUTHORIZATION)]
    open_ops: list[Any] = []
    for _ in range(160):
        if open_ops and rng.random() < 0.45:
            op = open_ops.pop(rng.randrange(len(open_ops)))
            current = await journal.get_transaction(op.txn_id)
            if current.status is Status.PENDING and rng.random() < 0.3:  # uncertain: resolved later
                await journal.finish_operation(op.txn_id, to=Status.TIMEOUT)
                open_ops.append(op)
            else:
                final = [Status.APPROVED, Status.DECLINED, Status.FAILED]
                if op.kind is Kind.REFUND and current.status is Status.TIMEOUT:
                    final.append(Status.REVERSED)
                to = Status.APPROVED if op.kind is Kind.VOID else rng.choice(final)
                await journal.finish_operation(op.txn_id, expected_from=RESOLVING, to=to)
            await check_parent(journal, op.parent_txn_id)
            continue
        parent_id = rng.choice(parents)
        kind = rng.choices((Kind.CAPTURE, Kind.REFUND, Kind.VOID), weights=(4, 8, 1))[0]
        before = await journal.get_transaction(parent_id)
        amount = before.amount if kind is Kind.VOID else rng.randint(1, 1100 if kind is Kind.CAPTURE else 600)
        expected = may_start(before, kind, amount)
        try:
            _, op = await journal.begin_operation(parent_id, child(parent_id, kind, amount), allowed=ALLOWED[kind])
        except ReservationRefused:
            assert not expected, (kind.value, amount, before)
        else:
            assert expected, (kind.value, amount, before)
            open_ops.append(op)
        await check_parent(journal, parent_id)
    for parent_id in parents:
        await check_parent(journal, parent_id)


@pytest_twisted.ensureDeferred
async def test_a_payment_is_read_with_its_operations_as_of_one_commit(journal: Journal) -> None:
    """`status` reads through `with_operations`: reads racing settlements never see a parent's totals
    from one commit and its operations' states from another."""
    parent_id = await approved(journal, amount=100_000)
    reads: list[defer.Deferred[Any]] = []
    for n in range(20):
        _, refund = await journal.begin_operation(parent_id, child(parent_id, Kind.REFUND, 100),
                                                  allowed=APPROVED_SALE)
        reads += [journal.with_operations(parent_id) for _ in range(3)]
        settled = journal.finish_operation(refund.txn_id, to=Status.APPROVED, response_code="00", forget_card=True)
        reads += [journal.with_operations(parent_id) for _ in range(3)]
        await settled
    for parent, operations in await defer.gatherResults(reads):
        approved_ops = sum(op.amount for op in operations if op.status is Status.APPROVED)
        pending_ops = sum(op.amount for op in operations if op.status is Status.PENDING)
        assert (parent.amount_refunded, parent.amount_refund_pending) == (approved_ops, pending_ops)
    assert isinstance(await failure_of(journal.with_operations("no-such-payment")), TransactionNotFound)
