"""A payment whose first commit the journal could not confirm (its writer process died with the batch): the web
tier hears ``busy``, the payment is never sent to its bank, and it ends ``failed`` rather than staying
``pending`` with no owner; replays of its key say so, and never ``internal`` (found by the chaos test). An outcome
whose commit was unknown is read back and committed again; a switch whose start-up writes were unknown starts."""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from switch import app
from switch.domain.status import Status
from switch.engine.inflight import JOURNAL_UNAVAILABLE
from switch.engine.payments import STILL_IN_PROGRESS
from switch.journal import CommitOutcomeUnknown, again
from tests.e2e.harness import authorize, start_env, stop_env
from tests.journal.test_again import unknown_once

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


def outcome_unknown_once(env: Any, monkeypatch: pytest.MonkeyPatch, name: str, committed: bool) -> list[str]:
    """The first outcome commit through ``name`` (``transition`` or ``finish_operation``) happens or not
    (``committed``), and its caller hears `CommitOutcomeUnknown` either way."""
    real = getattr(env.journal, name)
    hit: list[str] = []

    def unknown(txn_id: str, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        if hit or kwargs.get("received") is None:  # only an outcome decided by a bank's answer
            return real(txn_id, *args, **kwargs)
        hit.append(txn_id)
        done = real(txn_id, *args, **kwargs) if committed else defer.succeed(None)

        def lost(_: object) -> None:
            raise CommitOutcomeUnknown("the sqlite journal writer process ended during a batch")

        return done.addCallback(lost)

    monkeypatch.setattr(env.journal, name, unknown)
    return hit


@pytest.mark.parametrize("committed", [True, False], ids=["landed", "lost"])
@pytest_twisted.ensureDeferred
async def test_an_approval_whose_commit_is_unknown_is_answered_once_it_is_known(env, monkeypatch, committed) -> None:
    """The writer died with the outcome's batch: the switch looks again, commits it again if it was lost, and the
    web tier gets the approval, not ``busy``; the journal holds it once, with one copy of the bank's answer."""
    hit = outcome_unknown_once(env, monkeypatch, "transition", committed)
    c = await env.connect()
    answer = await c.call(authorize(1))
    assert hit == [answer["txn_id"]]
    assert (answer["status"], answer["reason"]) == ("approved", "approved")
    txn = await env.journal.get_transaction(answer["txn_id"])
    assert (txn.status, txn.amount_captured) == (Status.APPROVED, 1250)
    assert [(m.mti, m.direction.value) for m in await env.journal.messages(txn.txn_id)] == [
        ("0200", "out"), ("0210", "in")]


@pytest.mark.parametrize("committed", [True, False], ids=["landed", "lost"])
@pytest_twisted.ensureDeferred
async def test_a_capture_whose_commit_is_unknown_is_answered_once_it_is_known(env, monkeypatch, committed) -> None:
    """Found by the chaos test (seed 31337, PostgreSQL): a capture answered ``busy`` stayed ``pending`` after its
    bank had booked it, its parent never captured, until the stale-pending sweep."""
    c = await env.connect()
    preauth = await c.call(authorize(1, amount=5000, capture=False))
    hit = outcome_unknown_once(env, monkeypatch, "finish_operation", committed)
    cap = await c.call({"id": 2, "op": "capture", "txn_id": preauth["txn_id"], "amount": 4000})
    assert hit == [cap["operation"]["txn_id"]]
    assert (cap["status"], cap["amount_captured"], cap["operation"]["status"]) == ("captured", 4000, "approved")
    parent = await env.journal.get_transaction(preauth["txn_id"])
    assert (parent.status, parent.amount_captured) == (Status.CAPTURED, 4000)
    assert [m.mti for m in await env.journal.messages(cap["operation"]["txn_id"])] == ["0220", "0230"]
    assert env.sims["bank_a"].received["0220"] == 1


@pytest_twisted.ensureDeferred
async def test_a_switch_whose_start_up_writes_are_unknown_once_starts_and_serves(tmp_path, monkeypatch) -> None:
    """The writer process dies with each of the start-up's own writes (the lease, the business days, an RRN block;
    each committed): the switch makes each again and starts, where it used to exit 1 (CI at 92c70ce)."""
    monkeypatch.setattr(again, "SECONDS", 0.01)
    made: list[list[str]] = []
    real_open = app.open_journal

    async def opened(*args: Any, **kwargs: Any) -> Any:
        journal = await real_open(*args, **kwargs)
        made.append(unknown_once(journal, monkeypatch, "acquire", "_open_missing", "reserve"))
        return journal

    monkeypatch.setattr(app, "open_journal", opened)
    env = await start_env(tmp_path)
    try:
        [lost] = made
        assert sorted(lost) == ["_open_missing", "acquire", "reserve"]
        c = await env.connect()
        approved = await c.call(authorize(1))
        assert approved["status"] == "approved" and len(approved["rrn"]) == 12
    finally:
        await stop_env(env)


@pytest_twisted.ensureDeferred
async def test_a_capture_whose_first_commit_is_unknown_ends_failed_and_gives_its_amount_back(env, monkeypatch) -> None:
    """The capture's first commit (the operation and its reservation on the pre-authorization) happens and its caller
    hears `CommitOutcomeUnknown`: the web tier is told ``busy``, nothing goes to the bank, and the operation ends
    ``failed`` with the reservation given back, instead of holding it until the stale-pending sweep (chaos seed 7114)."""
    c = await env.connect()
    pre = await c.call(authorize(1, amount=2000, capture=False))
    real, lost = env.journal.begin_operation, []

    def committed(*args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        def unknown(moved: Any) -> None:
            lost.append(moved[1].txn_id)
            raise CommitOutcomeUnknown("the sqlite journal writer process ended during a batch")

        return real(*args, **kwargs).addCallback(unknown) if not lost else real(*args, **kwargs)

    monkeypatch.setattr(env.journal, "begin_operation", committed)
    busy = await c.call({"id": 2, "op": "capture", "txn_id": pre["txn_id"], "amount": 500, "idempotency_key": "cap-1"})
    assert busy["error"]["code"] == "busy"
    [child_id] = lost
    await until_status(env, child_id, Status.FAILED)
    child, parent = await env.journal.get_transaction(child_id), await env.journal.get_transaction(pre["txn_id"])
    assert child.reason == JOURNAL_UNAVAILABLE and child.card is None
    assert (parent.status, parent.amount_captured, parent.amount_capture_pending) == (Status.APPROVED, 0, 0)
    assert [mti for sim in env.sims.values() for mti in sim.received if mti.startswith("02")] == [], "no capture sent"
    again = await c.call({"id": 3, "op": "capture", "txn_id": pre["txn_id"], "amount": 500, "idempotency_key": "cap-2"})
    assert (again["status"], again["amount_captured"], again["operation"]["status"]) == ("captured", 500, "approved")
