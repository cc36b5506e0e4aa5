"""Link pools: which of a connector's ready links carries the next request.

Only a ready link is ever chosen, and readiness is read at the moment of choosing, so
a link that drops or fails its echoes leaves the rotation at once and rejoins as soon
as it has signed on again, with no bookkeeping to fall out of step.
"""

from __future__ import annotations

from typing import Generic, Protocol, Sequence, TypeVar

PRIMARY_SECONDARY = "primary-secondary"
ROUND_ROBIN = "round-robin"
STRATEGIES = (PRIMARY_SECONDARY, ROUND_ROBIN)


class PoolMember(Protocol):
    @property
    def ready(self) -> bool: ...


M = TypeVar("M", bound=PoolMember)


class LinkPool(Generic[M]):
    """``primary-secondary``: the first ready link in configured order (the bank's
    preferred data centre first).  ``round-robin``: ready links in turn, like jPOS
    MUXPool, to spread load over several connections the bank gave us."""

    def __init__(self, links: Sequence[M], strategy: str = PRIMARY_SECONDARY) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown pool strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if not links:
            raise ValueError("a pool needs at least one link")
        self.links = tuple(links)
        self.strategy = strategy
        self._next = 0

    @property
    def ready(self) -> tuple[M, ...]:
        return tuple(link for link in self.links if link.ready)

    def select(self) -> M | None:
        """The link for the next request, or None when no link is ready."""
        count = len(self.links)
        start = self._next if self.strategy == ROUND_ROBIN else 0
        for step in range(count):
            link = self.links[(start + step) % count]
            if link.ready:
                self._next = (start + step + 1) % count
                return link
        return None
