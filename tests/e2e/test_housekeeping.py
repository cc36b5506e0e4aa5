"""The switch's hourly housekeeping: idempotency keys and risk counters past their time are released, and a
purge the journal cannot do now is logged and done at the next hour, never the end of the housekeeping."""

from __future__ import annotations

import pytest_twisted
from structlog.testing import capture_logs
from twisted.internet import defer

from switch.journal.errors import JournalUnavailable


@pytest_twisted.ensureDeferred
async def test_a_purge_the_journal_cannot_do_is_logged_and_the_housekeeping_goes_on(env, monkeypatch) -> None:
    switch = env.switch
    housekeeping = switch._housekeeping
    assert housekeeping.running
    monkeypatch.setattr(switch.journal, "purge_idempotency_keys",
                        lambda: defer.fail(JournalUnavailable("the postgresql journal database is unreachable")))
    with capture_logs() as logs:
        housekeeping()  # the hour has come
    assert housekeeping.running, "one failed purge must not end the hourly housekeeping"
    assert [(e["event"], e["error"]) for e in logs if e["event"] == "idempotency_purge_failed"] == [
        ("idempotency_purge_failed", "the postgresql journal database is unreachable")]
    monkeypatch.undo()
    assert await switch._purge_idempotency_keys() is None
