"""A payment whose first commit the journal could not confirm (its writer process died with the batch): the web
tier hears ``busy``, the payment is never sent to its bank, and it ends ``failed`` rather than staying
``pending`` with no owner; replays of its key say so, and never ``internal`` (found by the chaos test)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from switch.domain.status import Status
from switch.engine.inflight import JOURNAL_UNAVAILABLE
from switch.engine.payments import STILL_IN_PROGRESS
from switch.journal import CommitOutcomeUnknown
from tests.e2e.harness import authorize

pytestmark = pytest.mark.timeout(60)


def commits_but_reports_unknown(env: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The payment's first commit happens, and its caller hears `CommitOutcomeUnknown`, once."""
    lost: list[str] = []
    for name in ("create_screened", "create_transaction"):
        real = getattr(env.journal, name)

        def committed(*args: Any, _real: Any = real, **kwargs: Any) -> defer.Deferred[Any]:
            done = _real(*args, **kwargs)
            if lost:
                return done

            def unknown(_: object) -> None:
                raise CommitOutcomeUnknown("the sqlite journal writer process ended during a batch")

            lost.append(args[0].txn_id)
            return done.addCallback(unknown)

        monkeypatch.setattr(env.journal, name, committed)
    return lost


async def until_status(env: Any, txn_id: str, status: Status, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while (await env.journal.get_transaction(txn_id)).status is not status:
        if time.monotonic() > deadline:
            raise AssertionError(f"{txn_id} did not become {status.value}")
        await task.deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_payment_whose_first_commit_is_unknown_ends_failed_and_its_replay_says_so(env, monkeypatch) -> None:
    lost = commits_but_reports_unknown(env, monkeypatch)
    c = await env.connect()
    first = await c.call(authorize(1, idempotency_key="k-unknown"))
    assert first["error"]["code"] == "busy"
    [txn_id] = lost
    await until_status(env, txn_id, Status.FAILED)
    again = await c.call(authorize(2, idempotency_key="k-unknown", order_id="order-1"))
    assert (again["txn_id"], again["status"], again["reason"]) == (txn_id, "failed", JOURNAL_UNAVAILABLE)
    payments = [mti for sim in env.sims.values() for mti in sim.received if mti[1] in "12"]  # not sign-ons
    assert payments == [], "nothing reached a bank"


@pytest_twisted.ensureDeferred
async def test_a_replay_of_a_payment_still_pending_is_busy_not_internal(env, monkeypatch) -> None:
    lost = commits_but_reports_unknown(env, monkeypatch)
    monkeypatch.setattr(env.switch.service.outcomes, "fail_unrecorded", lambda *args: None)  # left pending
    c = await env.connect()
    await c.call(authorize(1, idempotency_key="k-pending"))
    [txn_id] = lost
    assert (await env.journal.get_transaction(txn_id)).status is Status.PENDING
    again = await c.call(authorize(2, idempotency_key="k-pending", order_id="order-1"))
    assert (again["error"]["code"], again["error"]["message"]) == ("busy", STILL_IN_PROGRESS)
