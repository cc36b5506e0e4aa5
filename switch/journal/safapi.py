"""The journal's store-and-forward API: queue, pick, attempt, complete, and operator actions."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from twisted.internet import defer

from switch.journal import cards, saf_queue
from switch.journal.base import JournalBase, fails_as_deferred, log
from switch.journal.errors import InvalidRecord
from switch.journal.guard import dump_fields
from switch.journal.models import (
    SafDraft,
    SafItem,
    SafState,
    SafStats,
    require_enum,
    require_id,
    require_response_code,
    require_text,
    to_us,
    utc_from_seconds,
)
from switch.journal.units import Call


class SafApi(JournalBase):
    @fails_as_deferred
    def saf_enqueue(self, txn_id: str, draft: SafDraft) -> defer.Deferred[SafItem]:
        """Queue a reversal, void or advice; an item already queued or dead for (txn_id, kind) is returned instead."""
        row = self._saf_row(txn_id, draft, self._now())
        return self._writer.submit(Call(saf_queue.enqueue, row))

    def saf_head(self, connector: str) -> defer.Deferred[SafItem | None]:
        """The oldest queued item of this connector, due or not."""
        return self._readers.read(lambda db: saf_queue.head(db, connector))

    @fails_as_deferred
    def saf_ready(self, connector: str, *, due_by: datetime, limit: int) -> defer.Deferred[list[SafItem]]:
        """Up to ``limit`` items of ``connector`` that may be sent now: due by ``due_by``, and with
        no earlier item of the same payment (transaction or its parent) still queued. Oldest first."""
        due = to_us(due_by)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidRecord(f"limit must be a positive int, got {limit!r}")
        return self._readers.read(lambda db: saf_queue.ready(db, connector, due, limit))

    def saf_get(self, saf_id: int) -> defer.Deferred[SafItem]:
        return self._readers.read(lambda db: saf_queue.get(db, saf_id))

    @fails_as_deferred
    def saf_record_attempt(
        self,
        saf_id: int,
        *,
        next_due_at: datetime,
        response_code: str | None = None,
        error: str | None = None,
    ) -> defer.Deferred[SafItem]:
        """Count an attempt that did not complete the item: a send without a final answer
        (``response_code`` for a retryable one), or a failure before the write (``error``: the
        message could not be built, encoded or journalled). At ``max_attempts`` the item is
        dead-lettered, with a ``saf.dead_letter`` event in the same transaction.
        """
        due = to_us(next_due_at)
        text = require_text("error", error, 500) if error is not None else None
        code = require_response_code(response_code) if response_code is not None else None
        now = self._now()
        recorded = self._writer.submit(
            Call(saf_queue.record_attempt, saf_id, now=now, next_due=due, response_code=code, error=text)
        )
        return recorded.addCallback(_log_dead_letter)

    @fails_as_deferred
    def saf_complete(self, saf_id: int, *, response_code: str) -> defer.Deferred[SafItem]:
        """The bank acknowledged the item with ``response_code``."""
        code = require_response_code(response_code)
        now = self._now()
        return self._writer.submit(Call(saf_queue.complete, saf_id, now=now, response_code=code))

    @fails_as_deferred
    def saf_retry(self, saf_id: int, *, operator: str) -> defer.Deferred[SafItem]:
        """Operator action: a dead item goes back to its place in the queue with its attempts reset."""
        who = require_text("operator", operator, 100)
        now = self._now()
        return self._writer.submit(Call(saf_queue.retry, saf_id, now=now, operator=who))

    @fails_as_deferred
    def saf_drop(self, saf_id: int, *, operator: str, reason: str) -> defer.Deferred[SafItem]:
        """Operator action: give up on an item; it is kept as ``dropped`` with who and why."""
        who = require_text("operator", operator, 100)
        why = require_text("reason", reason, 500)
        now = self._now()
        return self._writer.submit(Call(saf_queue.drop, saf_id, now=now, operator=who, reason=why))

    @fails_as_deferred
    def saf_list(
        self,
        *,
        connector: str | None = None,
        states: Collection[SafState] = (SafState.DEAD,),
        limit: int = 100,
    ) -> defer.Deferred[list[SafItem]]:
        """Items in the given states (dead letters by default), for operators."""
        wanted = frozenset(require_enum(SafState, state, "states") for state in states)
        if not wanted:
            raise InvalidRecord("states must name at least one SAF state")
        return self._readers.read(lambda db: saf_queue.list_items(db, connector, wanted, limit))

    def saf_stats(self) -> defer.Deferred[list[SafStats]]:
        """Depth, oldest item and dead letters per connector with anything queued or dead."""
        return self._readers.read(saf_queue.stats)

    def refresh_saf_metrics(self) -> defer.Deferred[list[SafStats]]:
        """Read `saf_stats` and publish it as the kswitch_saf_* gauges; call it periodically."""

        def publish(stats: list[SafStats]) -> list[SafStats]:
            self._metrics.set_saf(stats, utc_from_seconds(self._clock()))
            return stats

        return self.saf_stats().addCallback(publish)

    def _saf_row(self, txn_id: str, draft: SafDraft, now: int) -> dict[str, object]:
        require_id("txn_id", txn_id)
        sealed = self._vault.seal(draft.card, cards.saf_context(txn_id)) if draft.card else None
        return {
            "connector": draft.connector,
            "txn_id": txn_id,
            "kind": draft.kind,
            "mti": draft.mti,
            "fields": dump_fields("fields", draft.fields),
            **cards.card_columns(sealed),
            "max_attempts": draft.max_attempts,
            "now": now,
            "due": to_us(draft.due_at) if draft.due_at is not None else now,
        }


def _log_dead_letter(item: SafItem) -> SafItem:
    if item.state is SafState.DEAD:
        log.warning(
            "saf_dead_letter",
            saf_id=item.saf_id,
            connector=item.connector,
            txn_id=item.txn_id,
            kind=item.kind.value,
            attempts=item.attempts,
            last_response_code=item.last_response_code,
        )
    return item
