"""`commit_outcome`, on the clock: an outcome whose commit is unknown is read back once a second and committed
again only while its transaction is still pending."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs
from twisted.internet import defer, task

from switch.domain.status import Status
from switch.engine.recommit import RETRY_SECONDS, commit_outcome, end_unrecorded
from switch.journal import CommitOutcomeUnknown, JournalUnavailable
from switch.journal.errors import LeaseLost


class Journal:
    """The journal as `commit_outcome` reads it: one transaction, whose status the test sets."""

    def __init__(self, status: Status) -> None:
        self.status = status
        self.reads = 0

    def get_transaction(self, txn_id: str) -> defer.Deferred[Any]:
        self.reads += 1
        if self.status is None:
            return defer.fail(JournalUnavailable("database unreachable"))
        return defer.succeed(type("Txn", (), {"txn_id": txn_id, "status": self.status})())


def committing(*outcomes: object) -> tuple[list[int], Any]:
    calls: list[int] = []

    def commit() -> defer.Deferred[Any]:
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        return defer.fail(outcome) if isinstance(outcome, Exception) else defer.succeed(outcome)

    return calls, commit


async def landed(txn: Any) -> str:
    return f"found {txn.status.value}"


def test_a_lost_commit_is_made_again_a_second_later_while_the_transaction_is_pending() -> None:
    clock, journal = task.Clock(), Journal(Status.PENDING)
    calls, commit = committing(CommitOutcomeUnknown("writer died"), "committed")
    result = defer.ensureDeferred(commit_outcome(clock, journal, "T1", commit, landed))
    assert (len(calls), journal.reads, result.called) == (1, 0, False)
    clock.advance(RETRY_SECONDS)
    assert (len(calls), journal.reads) == (2, 1)
    assert result.result == "committed"


def test_a_commit_that_landed_is_not_made_twice() -> None:
    clock, journal = task.Clock(), Journal(Status.PENDING)
    calls, commit = committing(CommitOutcomeUnknown("writer died"))
    result = defer.ensureDeferred(commit_outcome(clock, journal, "T1", commit, landed))
    journal.status = Status.APPROVED  # it had committed
    clock.advance(RETRY_SECONDS)
    assert (len(calls), result.result) == (1, "found approved")


def test_while_the_journal_cannot_answer_it_keeps_looking_once_a_second() -> None:
    clock, journal = task.Clock(), Journal(None)  # type: ignore[arg-type]
    calls, commit = committing(CommitOutcomeUnknown("writer died"), "committed")
    result = defer.ensureDeferred(commit_outcome(clock, journal, "T1", commit, landed))
    clock.pump([RETRY_SECONDS] * 3)
    assert (len(calls), journal.reads, result.called) == (1, 3, False)
    journal.status = Status.PENDING
    clock.advance(RETRY_SECONDS)
    assert (len(calls), result.result) == (2, "committed")


def test_a_commit_the_lease_fence_refused_goes_to_its_caller_at_once() -> None:
    """Another node holds the journal now: the commit certainly did not happen and this node commits nothing more,
    so it is not tried again (once a second until the switch stopped, then a `JournalClosed` and a traceback)."""
    for first in (LeaseLost("this node lost the journal lease"), CommitOutcomeUnknown("writer died")):
        clock, journal = task.Clock(), Journal(Status.PENDING)
        calls, commit = committing(first, LeaseLost("this node lost the journal lease"))
        result = defer.ensureDeferred(commit_outcome(clock, journal, "T1", commit, landed))
        clock.pump([RETRY_SECONDS] * 3)
        assert len(calls) == (1 if isinstance(first, LeaseLost) else 2)
        assert result.result.check(LeaseLost) and clock.getDelayedCalls() == []
        result.addErrback(lambda _: None)


def test_an_unrecorded_payment_the_fence_refused_to_end_is_left_to_the_new_holder_without_a_traceback() -> None:
    async def end() -> None:
        raise LeaseLost("this node lost the journal lease")

    with capture_logs() as logs:
        done = defer.ensureDeferred(end_unrecorded("payment", end, txn_id="T1"))
    assert done.called and done.result is None
    assert [(e["event"], e["log_level"]) for e in logs] == [("unrecorded_payment_left_to_new_lease_holder", "warning")]

