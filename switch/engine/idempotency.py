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

from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.python.failure import Failure

from switch.domain.errors import IdempotencyConflict


@dataclass(slots=True)
class _InFlight:
    """Callers waiting on the first request with their idempotency key. It is itself the callback on the
    first request's answer (`__call__`): one entry with no arguments for each payment in flight."""

    owner: KeyedOnce
    key: tuple[str, str]
    request_hash: bytes
    waiters: list[Deferred[dict[str, Any]]] | None = None  # made for the first retry: most keys never see one

    def __call__(self, result: Any) -> Any:
        return self.owner._answered(result, self)


class KeyedOnce:
    """Idempotency while in flight: callers with the same (merchant, idempotency key) share the
    first caller's answer; a different request under the key is `idempotency_conflict`.

    Not a coroutine: a payment waiting on its bank keeps only its `_InFlight` entry and one callback
    on its answer's Deferred here, no suspended frame."""

    def __init__(self, on_replay: Callable[[], None]) -> None:
        self._in_flight: dict[tuple[str, str], _InFlight] = {}
        self._on_replay = on_replay

    def run(
        self, key: tuple[str, str], request_hash: bytes,
        first: Callable[[], Deferred[dict[str, Any]] | Awaitable[dict[str, Any]]],
    ) -> Deferred[dict[str, Any]]:
        running = self._in_flight.get(key)
        if running is not None:
            try:
                check_same(running.request_hash, request_hash)
            except IdempotencyConflict:
                return fail()
            self._on_replay()
            waiter: Deferred[dict[str, Any]] = Deferred()
            if running.waiters is None:
                running.waiters = []
            running.waiters.append(waiter)
            return waiter
        running = self._in_flight[key] = _InFlight(self, key, request_hash)
        try:
            answered = ensureDeferred(first())  # type: ignore[arg-type]
        except BaseException:
            answered = fail()
        return answered.addBoth(running)

    def _answered(self, result: Any, running: _InFlight) -> Any:
        del self._in_flight[running.key]
        for w in running.waiters or ():
            if isinstance(result, Failure):
                w.errback(result)
            else:
                w.callback(result)
        return result


def check_same(first: bytes | None, this: bytes) -> None:
    if first != this:
        raise IdempotencyConflict(
            "this idempotency_key was used for a different request; use a new key for a new request",
            field="idempotency_key",
        )
