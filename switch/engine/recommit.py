"""An outcome whose commit the journal could not confirm, committed again until it can.

Why: the journal answers `NotRecorded` (`CommitOutcomeUnknown`, `JournalUnavailable`) when its writer process
dies with a batch or its database goes away: the commit may or may not have happened. For a payment's or an
operation's outcome, after its bank has answered (or not), that left it ``pending`` with no owner until the
stale-pending sweep, a minute or more later, and its web tier with ``busy``: found by the chaos test's writer
kills. The engine owns the outcome, so it settles it: it reads the transaction once the journal answers again,
and commits the outcome again while it is still ``pending`` (a compare-and-set from ``pending``, so it can never
land twice); its caller then answers as if the first commit had been confirmed.

Not after `LeaseLost`: the journal's lease fence refused the commit, so it certainly did not happen, and this node
will commit nothing more (it is stopping; another node runs the journal now). The error goes to the caller at
once (the web tier hears ``busy``), and what was not committed stays for the new holder's recovery.

May use: the journal's API and the domain's statuses.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from switch.domain.errors import NotRecorded
from switch.domain.status import Status
from switch.journal import Journal
from switch.journal.errors import LeaseLost, TransactionNotFound, TransitionRefused, VersionConflict
from switch.journal.models import Transaction

T = TypeVar("T")
log = structlog.get_logger("kswitch.payments")

RETRY_SECONDS = 1.0
"""Between two looks at a transaction whose outcome's commit is unknown (a writer process is replaced within one)."""


async def commit_outcome(
    clock: IReactorTime, journal: Journal, txn_id: str, commit: Callable[[], Deferred[T]],
    landed: Callable[[Transaction], Awaitable[T]],
) -> T:
    """What ``commit`` (an outcome of ``txn_id``, moving it from ``pending``) returns; if the journal cannot say
    whether it committed, what ``landed`` makes of the transaction once it has left ``pending`` (the commit
    happened, or another owner ended it), ``commit`` being tried again meanwhile while it is still ``pending``."""
    attempt: Callable[[], Awaitable[T]] = commit
    tries = 0
    while True:
        try:
            return await attempt()
        except LeaseLost:  # not committed, and never will be by this node: no use trying again
            raise
        except NotRecorded as e:  # logged once a payment, not once a second while a database is down
            (log.warning if tries == 0 else log.debug)("outcome_commit_unknown", txn_id=txn_id, error=str(e))
        tries += 1
        await deferLater(clock, RETRY_SECONDS, lambda: None)
        attempt = functools.partial(_again, journal, txn_id, commit, landed)


async def _again(journal: Journal, txn_id: str, commit: Callable[[], Deferred[T]],
                 landed: Callable[[Transaction], Awaitable[T]]) -> T:
    txn = await journal.get_transaction(txn_id)
    if txn.status is not Status.PENDING:
        log.info("outcome_commit_found", txn_id=txn_id, status=txn.status.value)
        return await landed(txn)
    return await commit()


async def end_unrecorded(what: str, end: Callable[[], Awaitable[object]], **context: object) -> None:
    """Run ``end``, the ``failed`` outcome of a ``what`` (payment, operation) whose first commit the journal could not
    confirm and that never reached its bank, and log how it went: nobody awaits it, and if it cannot be ended now
    the stale-pending sweep ends it later."""
    try:
        await end()
    except TransactionNotFound:  # the first commit never happened
        log.info(f"unrecorded_{what}_absent", **context)
    except (TransitionRefused, VersionConflict):  # ended meanwhile (the stale-pending sweep)
        log.info(f"unrecorded_{what}_ended_elsewhere", **context)
    except LeaseLost as e:  # another node runs the journal now: its recovery ends it, if it was recorded
        log.warning(f"unrecorded_{what}_left_to_new_lease_holder", error=str(e), **context)
    except Exception:
        log.exception(f"unrecorded_{what}_not_ended", **context)
    else:
        log.warning(f"unrecorded_{what}_failed", **context)
