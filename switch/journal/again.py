"""A write that may safely be made twice, made again while the journal cannot say whether it was made.

Why: the journal answers `NotRecorded` (`CommitOutcomeUnknown` when its writer process dies with a batch,
`JournalUnavailable` while its database is away), and a writer process is replaced within a second. A switch
starting up used to exit 1 when that happened to one of its own start-up writes (taking the node lease,
opening business days, reserving an RRN block, resolving what a crash left in flight), for its supervisor to
start it again: found by the chaos test's writer kills. Each of those writes can be made again: the lease is
already this node's, a business day opens once, an RRN block nobody used is only a gap, and recovery reads a
transaction afresh before it resolves it. So they are made again, a few times, a second apart; if the journal
still cannot say, the error is the caller's, as before. Not after `LeaseLost`: the write certainly did not happen,
and this node will write nothing more.

May use: the domain's and the journal's errors, and Twisted's clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from switch.domain.errors import NotRecorded
from switch.journal.errors import LeaseLost

T = TypeVar("T")
log = structlog.get_logger("kswitch.journal")

ATTEMPTS = 4
"""Tries of one write in all: the first and three more, so a writer process replaced twice still lets it land."""
SECONDS = 1.0
"""Between two tries: a writer process that died is replaced within one (`switch.journal.process`)."""


async def until_known(clock: IReactorTime, what: str, write: Callable[[], Awaitable[T]]) -> T:
    """What ``write`` returns, trying it again (`ATTEMPTS` in all, `SECONDS` apart) while it raises
    `NotRecorded`. ``write`` must be safe to make twice; ``what`` names it in the log."""
    for attempt in range(1, ATTEMPTS):
        try:
            return await write()
        except LeaseLost:
            raise
        except NotRecorded as e:
            log.warning("journal_write_made_again", what=what, attempt=attempt, error=str(e))
        await deferLater(clock, SECONDS, lambda: None)
    return await write()
