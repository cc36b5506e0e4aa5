"""The journal's message API: the ISO 8583 messages exchanged with banks, masked, beside their transactions.

A payment's request is journalled in the commit that creates it and the bank's answer in the commit of
the outcome it decides (`Received`), so neither commit can exist without its message; a message that
belongs to no such commit (an unsolicited advice, a late answer) is appended on its own. A message's
fields are checked for card data and encoded by the writer (`switch.journal.guard.guard_later`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from switch.journal import store
from switch.journal.base import JournalBase, fails_as_deferred, log
from switch.journal.errors import JournalError, TransitionRefused, VersionConflict
from switch.journal.guard import guard_later
from switch.journal.models import Direction, MessageRecord, Received, require_enum, require_id, require_mti, to_us
from switch.journal.units import Call


class MessageApi(JournalBase):
    @fails_as_deferred
    def append_message(
        self,
        *,
        txn_id: str | None,
        direction: Direction,
        connector: str,
        mti: str,
        fields: Mapping[str, Any],
        at: datetime | None = None,
    ) -> defer.Deferred[None]:
        """Record a message exchanged with a bank; ``fields`` must already be masked (`switch.iso.masking`).

        STAN and response code are taken from fields 11 and 39. Fires once it is durable.
        """
        row = self._message_row(txn_id, direction, connector, mti, fields, at)
        return self._writer.submit(Call(store.append_message, row))

    def messages(self, txn_id: str) -> defer.Deferred[list[MessageRecord]]:
        return self._readers.read(lambda db: store.messages(db, txn_id))

    def _message_row(
        self, txn_id: str | None, direction: Direction, connector: str, mti: str, fields: Mapping[str, Any],
        at: datetime | None,
    ) -> dict[str, Any]:
        return {
            "txn_id": require_id("txn_id", txn_id) if txn_id is not None else None,
            "direction": require_enum(Direction, direction, "direction"),
            "connector": require_id("connector", connector),
            "mti": require_mti(mti),
            "stan": _field(fields, "11"),
            "response_code": _field(fields, "39"),
            "fields": guard_later("fields", fields),
            "at": to_us(at) if at is not None else self._now(),
        }

    def _received_row(self, txn_id: str, received: Received) -> dict[str, Any] | None:
        """The answer's row for its transition's commit, or None (logged) when the answer cannot be journalled:
        an answer the journal cannot keep must not hold back the outcome it decides (nor can its fields,
        which the writer checks: `switch.journal.txnunits.append_answer`)."""
        try:
            return self._message_row(txn_id, Direction.IN, received.connector, received.mti, received.fields, None)
        except JournalError as e:
            log.error("response_not_journalled", txn_id=txn_id, connector=received.connector, error=str(e))
            return None

    def _journal_apart(self, failure: Failure, row: dict[str, Any]) -> Failure:
        """A transition refused (the payment moved on meanwhile: a late answer) took its answer's row back with
        it: journal the answer on its own, then fail as the transition did."""
        if failure.check(TransitionRefused, VersionConflict):
            self._writer.submit(Call(store.append_message, row)).addErrback(
                lambda f: log.error("response_not_journalled", txn_id=row["txn_id"], error=f.getErrorMessage()))
        return failure


def _field(fields: Mapping[Any, Any], number: str) -> str | None:
    value = fields.get(number, fields.get(int(number)))
    return str(value) if value is not None else None
