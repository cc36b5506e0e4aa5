"""The idempotency join (`KeyedOnce`): one answer per key, also while the first request is in flight."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred

from switch.domain.errors import IdempotencyConflict
from switch.engine.idempotency import KeyedOnce


def test_callers_with_the_key_share_the_first_answer_and_the_first_keeps_one_entry_without_arguments() -> None:
    replays: list[None] = []
    join = KeyedOnce(lambda: replays.append(None))
    first: Deferred[dict[str, str]] = Deferred()
    answered = join.run(("M1", "k-1"), b"hash", lambda: first)
    [(on_answer, on_failure)] = first._callbacks  # what a payment in flight keeps here: one entry, no arguments
    assert on_answer[0] is on_failure[0] and on_answer[1] == on_failure[1] == ()
    again = join.run(("M1", "k-1"), b"hash", lambda: pytest.fail("a repeat must not run again"))
    conflicting = join.run(("M1", "k-1"), b"other", lambda: pytest.fail("a conflict must not run"))
    refused: list[object] = []
    conflicting.addErrback(lambda f: refused.append(f.value))
    first.callback({"status": "approved"})
    results: list[object] = []
    answered.addCallback(results.append)
    again.addCallback(results.append)
    assert results == [{"status": "approved"}] * 2 and len(replays) == 1
    assert [type(e) for e in refused] == [IdempotencyConflict]
    later: Deferred[dict[str, str]] = Deferred()
    assert join.run(("M1", "k-1"), b"other", lambda: later) is later  # answered: the key is free here again
