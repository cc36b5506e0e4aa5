"""The journal at run time: group commit, key rotation, lost connections, several processes, per backend."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from switch.journal import (
    CardData,
    DuplicateIdempotencyKey,
    EventDraft,
    Journal,
    JournalClosed,
    PanDecryptionFailed,
    Status,
    TransactionExists,
    TransitionRefused,
    generate_key,
    open_journal,
)
from switch.journal.units import Call, shared
from tests.journal.conftest import raw_connect, sample
from tests.journal.test_journal import AMEX, VISA, failure_of, sale
from tests.journal.test_journal_saf_events import reversal

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


def hold(db: Any) -> None:
    running, release = shared(db, "hold")
    running.set()
    release.wait(10)


async def hold_writer(journal: Journal) -> tuple[defer.Deferred[None], threading.Event]:
    """Hold the journal's writer in a unit until the returned event is set: what is submitted meanwhile
    waits, then goes as one batch.  The unit gets the events as the writer's units get what they share,
    by key: a unit is data."""
    running, release = threading.Event(), threading.Event()
    journal.share("hold", (running, release))
    held = journal._writer.submit(Call(hold))
    assert await deferToThread(running.wait, 10)
    return held, release


@pytest_twisted.ensureDeferred
async def test_queue_depth_is_what_waits_for_the_writer_when_scraped(journal: Journal, registry: Any,
                                                                     backend: str) -> None:
    held, release = await hold_writer(journal)
    waiting = [journal.create_transaction(sale(order_id=f"q-{n}")) for n in range(5)]
    try:
        assert sample(registry, "kswitch_journal_queue_depth", backend=backend) == 5
    finally:
        release.set()
    await defer.gatherResults([held, *waiting])
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


def backend_pid(db: Any) -> int:
    return int(db.one("SELECT pg_backend_pid() AS pid")["pid"])


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_lost_postgres_connections_are_replaced(journal: Journal, config: Any) -> None:
    txn = await journal.create_transaction(sale())
    writer_pid = await journal._writer.submit(Call(backend_pid))
    reader_pids = set()
    for _ in range(20):
        reader_pids.add(await journal._readers.read(backend_pid))
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


@pytest_twisted.ensureDeferred
async def test_reads_not_yet_answered_are_backlog_and_their_answers_run_the_hook_once_a_turn_after_them(
    journal: Journal, backend: str
) -> None:
    """A burst of keyed payments is a burst of idempotency look-ups first: the socket API's flow control
    counts them, and looks again once they are answered and what they started is queued."""
    seen: list[tuple[int, int]] = []
    answered: list[object] = []
    journal.after_batches(lambda: seen.append((len(answered), journal.backlog())))
    lookups = [journal.find_by_idempotency_key("M100", f"never-{n}").addCallback(answered.append) for n in range(3)]
    assert journal.backlog() == 3  # answers come back through the reactor, which has not turned yet
    await defer.gatherResults(lookups)
    assert answered == [None, None, None] and journal.backlog() == 0
    await deferLater(reactor, 0, lambda: None)
    # each look ran after the callbacks of the reads answered by then, with the others still counted
    assert seen[-1] == (3, 0) and all(count + waiting == 3 for count, waiting in seen) and len(seen) <= 3


@pytest_twisted.ensureDeferred
async def test_after_batches_runs_once_each_batch_has_answered(journal: Journal, backend: str) -> None:
    """The socket API's flow control reads the backlog here: after a batch's Deferreds fired, and
    what is still queued behind it."""
    seen: list[tuple[int, int]] = []
    done: list[int] = []
    journal.after_batches(lambda: seen.append((len(done), journal.backlog())))
    held, release = await hold_writer(journal)
    waiting = [journal.create_transaction(sale(order_id=f"b-{n}")).addCallback(lambda _: done.append(1))
               for n in range(3)]
    assert journal.backlog() == 3
    release.set()
    await defer.gatherResults([held, *waiting])
    await deferLater(reactor, 0, lambda: None)  # the writes' callbacks come first, then the batch's hook
    assert len(seen) >= 2 and seen[0][0] == 0  # after the held unit's batch, before the others'
    assert seen[-1] == (3, 0)  # the last one ran after its writes' callbacks, with nothing left


async def _in_one_batch(journal: Journal, moving: Any) -> list[Any]:
    """What ``moving()`` submits, queued behind a unit holding the writer: one batch; each move's Failure
    or result."""
    held, release = await hold_writer(journal)
    moves = moving()
    release.set()
    await held
    return [await failure_of(m) if i in moving.refused else await m for i, m in enumerate(moves)]


def _approvals(journal: Journal, txns: list[Any], refused: tuple[int, ...] = ()) -> Any:
    def moving() -> list[Any]:
        return [journal.transition(t.txn_id, expected_from={Status.PENDING}, to=Status.APPROVED, response_code="00",
                                   amount_authorized=1250, amount_captured=1250, bank_fee=7, merchant_fee=31)
                for t in txns]
    moving.refused = refused  # type: ignore[attr-defined]
    return moving


async def _approved_alone_once(journal: Journal, txn: Any, moved: Any) -> None:
    stored = await journal.get_transaction(txn.txn_id)
    assert moved == stored
    assert (stored.status, stored.version, stored.bank_fee, stored.merchant_fee) == (Status.APPROVED, 2, 7, 31)
    assert [(t.from_status, t.to_status) for t in await journal.transitions(txn.txn_id)] == [
        (None, Status.PENDING), (Status.PENDING, Status.APPROVED)]


@pytest_twisted.ensureDeferred
async def test_outcomes_in_one_batch_each_commit_as_if_alone(journal: Journal, registry: Any, backend: str) -> None:
    """Payments' outcomes queued together are one batch; on PostgreSQL their rows are read once the batch's
    pipeline answers (`Later`), not one round trip each. Each must come back, and be stored, exactly as
    if it had been alone: row, fees, one audit row."""
    txns = [await journal.create_transaction(sale(order_id=f"a-{n}")) for n in range(3)]
    commits = sample(registry, "kswitch_journal_commits_total", backend=backend)
    moved = await _in_one_batch(journal, _approvals(journal, txns))
    for txn, result in zip(txns, moved):
        await _approved_alone_once(journal, txn, result)
    assert sample(registry, "kswitch_journal_commits_total", backend=backend) == commits + 2  # held, then one


@pytest_twisted.ensureDeferred
async def test_outcomes_in_one_batch_with_one_refused_commit_the_others_whole(journal: Journal) -> None:
    """One outcome that finds its payment moved already fails alone, with its reason (on PostgreSQL the batch
    is replayed unit by unit, unpipelined), and leaves the others committed whole."""
    txns = [await journal.create_transaction(sale(order_id=f"b-{n}")) for n in range(4)]
    await journal.transition(txns[2].txn_id, expected_from={Status.PENDING}, to=Status.APPROVED)
    results = await _in_one_batch(journal, _approvals(journal, txns, refused=(2,)))
    assert isinstance(results[2], TransitionRefused) and results[2].current == "approved"
    for i in (0, 1, 3):
        await _approved_alone_once(journal, txns[i], results[i])
    assert len(await journal.transitions(txns[2].txn_id)) == 2  # its first approval only


@pytest_twisted.ensureDeferred
async def test_new_payments_wait_for_their_batchs_copy_ahead_of_the_audit_rows_that_name_them(
        journal: Journal, config: Any, backend: str) -> None:
    """On PostgreSQL a new payment's row is not a statement of its own but a row of its batch's COPY, sent
    before the audit rows queued ahead of it (an outcome's first, then the new payments' own, which name
    it): a batch of an outcome and new payments commits whole, with no replay (no ROLLBACK)."""
    if backend != "postgresql":
        pytest.skip("SQLite sends each statement as it comes: nothing is pipelined")
    earlier = await journal.create_transaction(sale(order_id="c-0"))
    db = journal._writer._committer.db
    sent: list[str] = []
    rolled_back: list[bool] = []
    run, rollback = db._run, db.rollback
    db._run = lambda sql, params: (sent.append(sql), run(sql, params))[1]
    db.rollback = lambda: (rolled_back.append(True), rollback())[1]

    def moving() -> list[Any]:
        return [journal.transition(earlier.txn_id, expected_from={Status.PENDING}, to=Status.APPROVED,
                                   response_code="00", amount_authorized=1250, bank_fee=0, merchant_fee=0),
                *(journal.create_transaction(sale(order_id=f"c-{n}")) for n in (1, 2))]
    moving.refused = ()  # type: ignore[attr-defined]
    try:
        moved, *created = await _in_one_batch(journal, moving)
    finally:
        del db._run, db.rollback
    assert not [sql for sql in sent if sql.startswith("INSERT INTO transactions")]
    assert rolled_back == []
    assert moved.status == Status.APPROVED
    conn = raw_connect(config)
    try:
        for txn in created:
            row = conn.execute("SELECT t.status, r.to_status FROM transactions t JOIN transitions r USING (txn_id) "
                               "WHERE txn_id = %s", (txn.txn_id,)).fetchall()
            assert row == [("pending", "pending")]
    finally:
        conn.close()
