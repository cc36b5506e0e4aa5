"""Crash recovery: every transaction a previous run left in flight gets an owner again.

A transaction still ``pending`` at start-up was (or may have been) written to a bank
and never answered to the web tier's satisfaction: it is treated exactly like a
timeout, resolved by its message class (`switch.engine.engine.resolution_draft`): a request
(authorization, sale, refund) is reversed, an advice (a capture's completion) is
repeated.  An operation's outcome is journalled with its parent's totals in one commit,
so a parent and its operations never disagree.  ``timeout`` and ``reversal_pending``
ones already have their item queued; if it was acknowledged just before the crash, its
outcome is settled now through store-and-forward's settle hook (the engine's).  One
``pending_customer_action`` is not uncertain yet: the customer may still confirm, so its expiry is re-armed (with
whatever time it had left) and it is reversed only if that expiry passes.

Resolving one transaction reads it afresh first, so it is made again when the journal cannot say whether its
commit happened (`switch.journal.again`): a writer process dying during recovery does not stop the start.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Mapping

import structlog
from prometheus_client import CollectorRegistry
from twisted.internet.interfaces import IReactorTime

from switch.domain.status import Kind, Status
from switch.engine.engine import reversal_draft
from switch.engine.saf import StoreAndForward
from switch.iso.mti import response_mti
from switch.journal import Journal
from switch.journal.again import until_known
from switch.journal.models import SafState, Transaction
from switch.observe.metrics import Counter, MetricBundle

if TYPE_CHECKING:
    from switch.engine.confirmation import Confirmations

log = structlog.get_logger("kswitch.recovery")


class RecoveryMetrics(MetricBundle):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.recovered = Counter("kswitch_recovered_in_flight_total",
                                 "Transactions found in flight at start-up, by connector and status",
                                 ["connector", "status"], registry=registry)
        self.swept = Counter("kswitch_stale_pending_swept_total",
                             "Payments found pending long after their bank timeout while running, by connector",
                             ["connector"], registry=registry)


async def recover(
    clock: IReactorTime, journal: Journal, banks: Mapping[str, Any], saf: StoreAndForward, registry: CollectorRegistry,
    confirmations: Confirmations | None = None,
) -> int:
    """Queue reversals for everything left in flight (re-arm the expiry of payments awaiting
    the customer); returns how many transactions were recovered."""
    metrics = RecoveryMetrics.on(registry)
    found = await until_known(clock, "recovery: in_flight", journal.in_flight)
    for txn in found:
        metrics.recovered.labels(txn.connector, txn.status.value).inc()
        await until_known(clock, f"recovery: {txn.txn_id}",
                          lambda txn=txn: _give_owner(journal, banks, saf, confirmations, txn))
    return len(found)


async def sweep_stale_pending(
    journal: Journal, banks: Mapping[str, Any], saf: StoreAndForward, registry: CollectorRegistry,
    now: datetime, older_than: timedelta,
) -> int:
    """A payment still ``pending`` long after its bank timeout lost its owner at run time (say the
    journal write after the bank's answer failed): give it the owner a restart would, now."""
    metrics = RecoveryMetrics.on(registry)
    stale = await journal.stale_pending(now - older_than)
    swept = 0
    for txn in stale:
        if await _give_owner(journal, banks, saf, None, txn):  # a void waiting on its queued item has an owner
            swept += 1
            metrics.swept.labels(txn.connector).inc()
            log.error("stale_pending_swept", txn_id=txn.txn_id, connector=txn.connector,
                      created_at=txn.created_at.isoformat())
    return swept


async def _give_owner(
    journal: Journal, banks: Mapping[str, Any], saf: StoreAndForward, confirmations: Confirmations | None,
    txn: Transaction,
) -> bool:
    """Resolve one transaction left in flight; False when it already has an owner (or none can be found)."""
    txn = await journal.get_transaction(txn.txn_id)  # settling an operation may have settled its parent too
    if not txn.in_flight:
        return False
    bank = banks.get(txn.connector)
    if bank is None:
        log.error("recovery_unknown_connector", txn_id=txn.txn_id, connector=txn.connector)
        return False
    if txn.status is Status.AWAITING_CUSTOMER and confirmations is not None:
        await confirmations.rearm(txn)
        log.warning("recovered_awaiting_customer", txn_id=txn.txn_id, connector=txn.connector)
        return True
    if txn.status is Status.REVERSAL_PENDING and txn.parent_txn_id is None:
        children = await journal.children(txn.txn_id)
        if any(c.kind is Kind.VOID and c.in_flight for c in children):
            return False  # its void is an operation of its own, resolved on its own
    items = await journal.saf_items(txn.txn_id)
    if any(item.state in (SafState.QUEUED, SafState.DEAD) for item in items):
        return False  # store-and-forward owns it already
    done = next((item for item in reversed(items) if item.state is SafState.DONE), None)
    if done is not None:  # acknowledged just before the crash; its outcome was not journalled yet
        await saf.settle(done, {"t": response_mti(done.mti), "39": done.response_code or ""})
        return True
    try:
        draft = await reversal_draft(journal, txn, bank)
    except LookupError:
        await _never_sent(journal, txn)
        return True
    if txn.status is Status.PENDING:
        if txn.parent_txn_id is not None:
            await journal.finish_operation(txn.txn_id, to=Status.TIMEOUT, reason="issuer_timeout", saf=draft)
        else:
            await journal.transition(txn.txn_id, expected_from=(Status.PENDING,), to=Status.TIMEOUT,
                                     reason="issuer_timeout", saf=draft)
        log.warning("recovered_pending", txn_id=txn.txn_id, connector=txn.connector, kind=txn.kind.value,
                    resolution=draft.kind.value)
    else:
        await journal.saf_enqueue(txn.txn_id, draft)
    saf.kick(txn.connector)
    return True


async def _never_sent(journal: Journal, txn: Transaction) -> None:
    """No request was journalled, so none was written to the bank (the request is journalled
    before the write): nothing to reverse, the payment or operation simply failed (an
    operation's reservation on its parent is released in the same commit)."""
    if txn.parent_txn_id is not None and txn.status in (Status.PENDING, Status.TIMEOUT):
        await journal.finish_operation(txn.txn_id, expected_from=(txn.status,), to=Status.FAILED,
                                       reason="issuer_unavailable", forget_card=True)
        log.warning("recovered_never_sent", txn_id=txn.txn_id, connector=txn.connector, kind=txn.kind.value)
    elif txn.status is Status.PENDING:
        await journal.transition(txn.txn_id, expected_from=(Status.PENDING,), to=Status.FAILED,
                                 reason="issuer_unavailable", forget_card=True)
        log.warning("recovered_never_sent", txn_id=txn.txn_id, connector=txn.connector)
    else:
        log.error("recovery_without_request", txn_id=txn.txn_id, connector=txn.connector, status=txn.status.value)
