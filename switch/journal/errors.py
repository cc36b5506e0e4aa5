"""Exceptions raised by the journal.

Every failure a caller may want to handle differently has its own class, so the
switch can map them to answers (decline, retry, 409, 404) without parsing
messages. Messages never contain card data. Refusals that hand back the record that
caused them are in `switch.journal.refusals` (they need the record types of
`switch.journal.models`, which needs `InvalidRecord` from here).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from switch.domain.errors import NotRecorded
from switch.domain.panscan import safe_repr


class JournalError(Exception):
    """Base class for every journal error."""

    def __reduce__(self) -> tuple[Any, ...]:
        # A unit's error may come back from a writer process: pickle would call the class with ``args`` (the
        # message), which most of these do not take, so it is rebuilt from its message and attributes.
        return _rebuilt, (type(self), self.args, self.__dict__)


def _rebuilt(cls: type[JournalError], args: tuple[Any, ...], state: dict[str, Any]) -> JournalError:
    error = cls.__new__(cls, *args)
    error.__dict__.update(state)
    return error


class InvalidRecord(JournalError, ValueError):
    """A value handed to the journal is malformed (amount, currency, id, JSON ...)."""


class CardDataRefused(InvalidRecord):
    """A value looked like a full PAN or sensitive authentication data and was not stored."""


class TransactionNotFound(JournalError, LookupError):
    def __init__(self, txn_id: str) -> None:
        super().__init__(f"transaction {safe_repr(txn_id)} not found")
        self.txn_id = txn_id


class TransactionExists(JournalError):
    def __init__(self, txn_id: str) -> None:
        super().__init__(f"transaction {safe_repr(txn_id)} already exists")
        self.txn_id = txn_id


class TransitionRefused(JournalError):
    """Compare-and-set failed: the transaction is not in one of the expected states."""

    def __init__(self, txn_id: str, current: str, expected: Iterable[str], to: str) -> None:
        current, to, expected = str(current), str(to), frozenset(str(status) for status in expected)
        expected_list = ", ".join(sorted(expected))
        super().__init__(
            f"transaction {safe_repr(txn_id)} is {current!r}, expected one of [{expected_list}] to move to {to!r}"
        )
        self.txn_id = txn_id
        self.current = current
        self.expected = expected
        self.to = to


class VersionConflict(JournalError):
    """The transaction changed since the caller read it (optimistic concurrency)."""

    def __init__(self, txn_id: str, expected_version: int, current_version: int) -> None:
        super().__init__(
            f"transaction {safe_repr(txn_id)} is at version {current_version}, caller expected {expected_version}"
        )
        self.txn_id = txn_id
        self.expected_version = expected_version
        self.current_version = current_version


class SafItemNotFound(JournalError, LookupError):
    def __init__(self, saf_id: int) -> None:
        super().__init__(f"store-and-forward item {saf_id} not found")
        self.saf_id = saf_id


class UnknownEvent(JournalError, LookupError):
    def __init__(self, event_ids: Iterable[int]) -> None:
        ids = sorted(event_ids)
        super().__init__(f"no such event id(s): {ids}")
        self.event_ids = ids


class CutoverRefused(JournalError):
    """A cutover that cannot be done: no open business date, or the new date is not later."""


class SchemaError(JournalError):
    """The database schema cannot be used by this version of kswitch."""


class SchemaTooNew(SchemaError):
    def __init__(self, found: int, supported: int) -> None:
        super().__init__(
            f"journal database is at schema version {found}, this kswitch supports up to {supported}: "
            "it was written by a newer kswitch; upgrade kswitch or restore a backup (no downgrade is attempted)"
        )
        self.found = found
        self.supported = supported


class KeyConfigError(JournalError):
    """PAN encryption or hashing keys are missing or malformed."""


class UnknownKeyId(JournalError):
    def __init__(self, key_id: str, loaded: Iterable[str]) -> None:
        super().__init__(
            f"PAN ciphertext was written under key id {key_id!r}, which is not loaded "
            f"(loaded: {sorted(loaded)}); add the retired key to the key ring to read it"
        )
        self.key_id = key_id


class PanDecryptionFailed(JournalError):
    def __init__(self, key_id: str, context: str) -> None:
        super().__init__(
            f"PAN ciphertext for {context!r} failed authentication under key id {key_id!r}: "
            "the key material for that id is wrong, or the ciphertext was altered or moved to another row"
        )
        self.key_id = key_id


class JournalClosed(JournalError):
    """A write or read was submitted after the journal was closed."""


class JournalOverloaded(JournalError, NotRecorded):
    """The write queue is full; the database is not keeping up. Nothing was written."""


class JournalUnavailable(JournalError, NotRecorded):
    """The database could not be reached or failed before commit. Nothing was written."""


class StorageError(JournalError):
    """The database refused a statement for a reason the journal does not model (a bug, or a broken disk)."""


class CommitOutcomeUnknown(JournalError, NotRecorded):
    """COMMIT itself failed: the write may or may not be durable.

    Treat like a bank timeout: do not answer approved, and reconcile (reverse) later.
    """


class LeaseLost(JournalError, NotRecorded):
    """This node's journal lease row is gone or belongs to another node (`switch.journal.lease`).

    Raised by a renewal that finds the row taken, and by every unit of a writer batch the lease fence refused
    (`switch.journal.lease.fence`): that batch was rolled back, so nothing of it was written, and nothing more
    will be by this node. It is `NotRecorded` for the web tier (``busy``: the same request again, with its
    idempotency key, sent to the node that holds the journal now, is answered with what became of it once that
    node's recovery has settled what this one left); unlike the others it is never worth trying again here
    (`switch.engine.recommit`, `switch.journal.again`).
    """
