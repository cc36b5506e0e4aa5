"""Idempotency keys: one answer per (merchant, idempotency key), also while the first is in flight.

Shared by authorize (`switch.engine.payments`) and the lifecycle operations (`switch.engine.lifecycle`),
which use one key space per merchant: the same key with the same request gets the first
answer; with any other request (another amount, another op) ``idempotency_conflict``.
The journal keeps the binding durable (``idempotency_keys``); this module joins callers
whose first request has not been journalled or answered yet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from switch.domain.answering import Answerable
from switch.domain.errors import IdempotencyConflict


@dataclass(slots=True)
class _InFlight:
    """The first request with its idempotency key, and who waits on it. It is itself the first request's
    answer target (`switch.domain.answering.Answerable`): a payment waiting on its bank tells it, and it tells
    the first caller and any repeats, so the first caller's wait costs no Deferred."""

    keys: dict[str, _InFlight]  # its merchant's keys in flight, by the key itself: no (merchant, key) tuple kept
    key: str
    # The first 56 bits of the request's hash, to tell a repeat from another request while the first is in flight:
    # an int of two 30-bit digits (32 bytes) where the whole hash took 80. Two different requests whose hashes agree
    # in those bits (odds 2**-56) would share an answer while in flight; once journalled, the whole hash is compared.
    fingerprint: int
    # the first caller; a list once a repeat joins it (most keys never see one): one slot, not two, per payment
    waiting: Answerable[dict[str, Any]] | list[Answerable[dict[str, Any]]]

    def callback(self, result: dict[str, Any]) -> None:
        for waiter in self._settled():
            waiter.callback(result)

    def errback(self, fail: BaseException | object) -> None:
        reason = fail if isinstance(fail, Failure) else Failure(fail)
        for waiter in self._settled():
            waiter.errback(reason)

    def join(self, repeat: Answerable[dict[str, Any]]) -> None:
        if isinstance(self.waiting, list):
            self.waiting.append(repeat)
        else:
            self.waiting = [self.waiting, repeat]

    def _settled(self) -> list[Answerable[dict[str, Any]]]:
        del self.keys[self.key]
        return self.waiting if isinstance(self.waiting, list) else [self.waiting]


class KeyedOnce:
    """Idempotency while in flight: callers with the same (merchant, idempotency key) share the
    first caller's answer; a different request under the key is `idempotency_conflict`.

    Not a coroutine: a payment waiting on its bank keeps only its `_InFlight` entry here, no suspended frame
    and no Deferred."""

    def __init__(self, on_replay: Callable[[], None]) -> None:
        self._in_flight: dict[str, dict[str, _InFlight]] = {}  # merchant -> key -> the first request's entry
        self._on_replay = on_replay

    def run_to(
        self, key: tuple[str, str], request_hash: bytes, first: Callable[[Answerable[dict[str, Any]]], None],
        answer_to: Answerable[dict[str, Any]],
    ) -> None:
        """Tell ``answer_to`` the answer to the first request with ``key``: ``first(target)`` starts it, unless
        it is in flight already, and tells ``target`` (or raises). A repeat of the same request waits for that
        answer; another request under the key is told `IdempotencyConflict`."""
        merchant, name = key
        keys = self._in_flight.get(merchant)
        if keys is None:
            keys = self._in_flight[merchant] = {}
        running = keys.get(name)
        fingerprint = int.from_bytes(request_hash[:7], "big")
        if running is not None:
            try:
                check_same(running.fingerprint, fingerprint)
            except IdempotencyConflict:
                answer_to.errback(Failure())
                return
            self._on_replay()
            running.join(answer_to)
            return
        running = keys[name] = _InFlight(keys, name, fingerprint, answer_to)
        try:
            first(running)
        except BaseException:
            running.errback(Failure())

    def run(
        self, key: tuple[str, str], request_hash: bytes,
        first: Callable[[], Deferred[dict[str, Any]] | Awaitable[dict[str, Any]]],
    ) -> Deferred[dict[str, Any]]:
        """`run_to` for a caller that starts its first request as a Deferred or a coroutine and wants one."""
        answered: Deferred[dict[str, Any]] = Deferred()

        def start(target: Answerable[dict[str, Any]]) -> None:
            ensureDeferred(first()).addCallbacks(target.callback, target.errback)  # type: ignore[arg-type]

        self.run_to(key, request_hash, start, answered)
        return answered


def check_same(first: object, this: object) -> None:
    if first != this:
        raise IdempotencyConflict(
            "this idempotency_key was used for a different request; use a new key for a new request",
            field="idempotency_key",
        )
