"""The idempotency join (`KeyedOnce`): one answer per key, also while the first request is in flight."""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from switch.domain.answering import Answerable
from switch.domain.errors import Busy, IdempotencyConflict
from switch.engine.idempotency import KeyedOnce


class Told:
    """An answer target that records how it was told, as the socket API's exchange is."""

    def __init__(self) -> None:
        self.told: list[object] = []

    def callback(self, result: Any) -> None:
        self.told.append(result)

    def errback(self, fail: BaseException | object) -> None:
        self.told.append(fail.value if isinstance(fail, Failure) else fail)


def test_callers_with_the_key_share_the_first_answer_told_through_the_keys_entry_with_no_deferred() -> None:
    replays: list[None] = []
    join = KeyedOnce(lambda: replays.append(None))
    targets: list[Answerable[dict[str, str]]] = []
    caller, again, conflicting = Told(), Told(), Told()
    join.run_to(("M1", "k-1"), b"hash", targets.append, caller)
    [target] = targets
    assert not isinstance(target, Deferred)  # what a payment in flight tells: the key's entry itself
    join.run_to(("M1", "k-1"), b"hash", lambda _: pytest.fail("a repeat must not run again"), again)
    join.run_to(("M1", "k-1"), b"other", lambda _: pytest.fail("a conflict must not run"), conflicting)
    assert [type(e) for e in conflicting.told] == [IdempotencyConflict] and caller.told == again.told == []
    target.callback({"status": "approved"})
    assert caller.told == again.told == [{"status": "approved"}] and len(replays) == 1
    later = Told()
    join.run_to(("M1", "k-1"), b"other", lambda t: t.callback({"status": "declined"}), later)
    assert later.told == [{"status": "declined"}]  # answered: the key is free here again


def test_a_first_request_that_fails_or_raises_fails_its_repeats_too_and_frees_the_key() -> None:
    join = KeyedOnce(lambda: None)
    targets: list[Answerable[dict[str, str]]] = []
    caller, again = Told(), Told()
    join.run_to(("M1", "k-2"), b"hash", targets.append, caller)
    join.run_to(("M1", "k-2"), b"hash", lambda _: pytest.fail("a repeat must not run again"), again)
    targets[0].errback(Busy("bank busy"))
    assert [type(e) for e in caller.told + again.told] == [Busy, Busy]

    def raising(_: object) -> None:
        raise Busy("refused while routing")

    refused = Told()
    join.run_to(("M1", "k-2"), b"hash", raising, refused)
    assert [type(e) for e in refused.told] == [Busy]
    after = Told()
    join.run_to(("M1", "k-2"), b"hash", lambda t: t.callback({"status": "approved"}), after)
    assert after.told == [{"status": "approved"}]  # the key is free again after a failure


def test_run_gives_a_deferred_for_a_first_request_made_as_a_deferred_or_a_coroutine() -> None:
    join = KeyedOnce(lambda: None)
    first: Deferred[dict[str, str]] = Deferred()
    answered = join.run(("M1", "k-3"), b"hash", lambda: first)
    repeat = join.run(("M1", "k-3"), b"hash", lambda: pytest.fail("a repeat must not run again"))
    first.callback({"status": "approved"})
    results: list[object] = []
    answered.addCallback(results.append)
    repeat.addCallback(results.append)
    assert results == [{"status": "approved"}] * 2

    async def coroutine() -> dict[str, str]:
        return {"status": "declined"}

    from_coroutine: list[object] = []
    join.run(("M1", "k-4"), b"hash", coroutine).addCallback(from_coroutine.append)
    assert from_coroutine == [{"status": "declined"}]


def test_one_key_under_two_merchants_is_two_keys() -> None:
    join = KeyedOnce(lambda: None)
    targets: list[Answerable[dict[str, str]]] = []
    first, second = Told(), Told()
    join.run_to(("M1", "k-5"), b"hash", targets.append, first)
    join.run_to(("M2", "k-5"), b"other", targets.append, second)
    assert len(targets) == 2 and second.told == []  # the second merchant's request ran, and is no conflict
    targets[1].callback({"status": "declined"})
    targets[0].callback({"status": "approved"})
    assert (first.told, second.told) == ([{"status": "approved"}], [{"status": "declined"}])


def test_the_keys_entry_keeps_a_small_int_of_the_hash_and_still_tells_another_request_apart() -> None:
    """Memory per pending payment: a 32-byte int of the request hash's first 56 bits, not the 80-byte hash."""
    join = KeyedOnce(lambda: None)
    targets: list[Answerable[dict[str, str]]] = []
    first, repeat, other = (hashlib.sha256(body).digest() for body in (b"amount=1250", b"amount=1250", b"amount=1251"))
    caller, again, conflicting = Told(), Told(), Told()
    join.run_to(("M1", "k-5"), first, targets.append, caller)
    [entry] = targets
    assert type(entry.fingerprint) is int and sys.getsizeof(entry.fingerprint) <= 32  # type: ignore[attr-defined]
    join.run_to(("M1", "k-5"), repeat, lambda _: pytest.fail("a repeat must not run again"), again)
    join.run_to(("M1", "k-5"), other, lambda _: pytest.fail("a conflict must not run"), conflicting)
    assert [type(e) for e in conflicting.told] == [IdempotencyConflict]
    entry.callback({"status": "approved"})
    assert caller.told == again.told == [{"status": "approved"}]
