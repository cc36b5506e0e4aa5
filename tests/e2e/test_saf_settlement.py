"""A store-and-forward item the bank acknowledged is completed in the commit of the outcome it settles.

Found by the chaos test on PostgreSQL when the server ended the writer's connection: the item was completed
by a commit of its own and the reversal's outcome by the next, which failed; the payment then stayed
``timeout`` with nothing left to settle it. Now a failed settlement leaves the item queued: it goes again, as a
repeat (0401), and the payment ends ``reversed``.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from switch.domain.status import Status
from switch.journal import JournalUnavailable, SafState
from tests.e2e.harness import authorize, eventually

pytestmark = pytest.mark.timeout(60)
VISA = "4111111111111111"


def not_written_once(journal: Any, monkeypatch: pytest.MonkeyPatch, *units: str) -> list[str]:
    """The first write of each of ``units`` (the reversal's outcome: a transition to reversed; the attempt
    counted instead) fails before anything is written, as when the database is unreachable; the units failed."""
    real = journal._writer.submit
    failed: list[str] = []

    def submit(call: Any) -> defer.Deferred[Any]:
        name = call.fn.__name__
        if name in units and name not in failed and call.kwargs.get("target", Status.REVERSED) is Status.REVERSED:
            failed.append(name)
            return defer.fail(JournalUnavailable("the journal database is unreachable; nothing was written"))
        return real(call)

    monkeypatch.setattr(journal._writer, "submit", submit)
    return failed


async def is_status(env: Any, txn_id: str, status: Status) -> bool:
    return (await env.journal.get_transaction(txn_id)).status is status


@pytest.mark.parametrize("not_written", [("transition",), ("transition", "record_attempt")],
                         ids=["outcome", "outcome and attempt"])
@pytest_twisted.ensureDeferred
async def test_a_reversal_whose_outcome_is_not_written_goes_again_as_a_repeat_and_the_payment_ends_reversed(
        fast, monkeypatch, not_written) -> None:
    bank = fast.sims["bank_a"]
    before = bank.balance(VISA)
    bank.set_faults(drop_ratio=1.0)  # the bank debits, its answer is lost
    failed = not_written_once(fast.journal, monkeypatch, *not_written)
    c = await fast.connect()
    a = await c.call(authorize(1))
    assert a["status"] == "timeout"
    bank.set_faults(drop_ratio=0.0)
    await eventually(lambda: failed == list(not_written))  # the reversal was answered, its outcome not written
    await eventually(lambda: is_status(fast, a["txn_id"], Status.REVERSED))
    [item] = await fast.journal.saf_items(a["txn_id"])
    assert (item.state, item.response_code) == (SafState.DONE, "00")
    assert bank.received["0400"] == 1 and bank.received["0401"] >= 1, "sent again as a repeat"
    assert bank.balance(VISA) == before
    events = await fast.journal.events_after(["M100"], 0)
    assert [e.type for e in events].count("payment.reversed") == 1
