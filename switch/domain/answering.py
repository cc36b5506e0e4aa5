"""Who is told how something it waits on ended: the shape of a Deferred's firing methods, `callback` and
`errback`, without the Deferred.

What waits long keeps no Deferred of its own: a payment waiting on its bank is told by the mux, and a web-tier
request waiting on its payment is told by the payment. With 10,000 payments held, a Deferred and its callback
entries cost about 0.4 KB each. A Deferred is an `Answerable` too, for callers that want one.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

T_contra = TypeVar("T_contra", contravariant=True)


class Answerable(Protocol[T_contra]):
    """Told once, by one of the two. Neither method may raise: the teller is usually reading a socket.
    ``errback`` takes the exception or a Twisted ``Failure`` of it."""

    def callback(self, result: T_contra) -> object: ...

    def errback(self, fail: BaseException | object) -> object: ...
