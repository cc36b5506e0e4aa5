"""The durable transaction journal: transactions, messages, store-and-forward, events.

Open it with `open_journal(JournalConfig(...), reactor)`; everything else is a
method of the `Journal` it yields. May import `switch.domain` and `switch.observe` only
(not the ISO layer: messages arrive as masked field dicts).
"""

from switch.domain.carddata import CardData
from switch.domain.events import Event
from switch.domain.status import IN_FLIGHT_STATUSES, Kind, Status
from switch.journal.config import JournalConfig, SecretSource
from switch.journal.errors import (
    CardDataRefused,
    CommitOutcomeUnknown,
    InvalidRecord,
    JournalClosed,
    JournalError,
    JournalOverloaded,
    JournalUnavailable,
    KeyConfigError,
    PanDecryptionFailed,
    SafItemNotFound,
    SchemaError,
    SchemaTooNew,
    StorageError,
    TransactionExists,
    TransactionNotFound,
    TransitionRefused,
    UnknownEvent,
    UnknownKeyId,
    VersionConflict,
)
from switch.journal.ids import new_txn_id
from switch.journal.journal import Journal, open_journal
from switch.journal.metrics import JournalMetrics
from switch.journal.models import (
    Direction,
    EncryptedCard,
    EventDraft,
    MessageRecord,
    NewTransaction,
    Received,
    SafAcknowledged,
    SafDraft,
    SafItem,
    SafKind,
    SafState,
    SafStats,
    Transaction,
    TransitionRecord,
    TxnChanges,
)
from switch.journal.refusals import DuplicateIdempotencyKey, ReservationRefused, SafStateError
from switch.journal.vault import PanVault, generate_key

__all__ = [
    "IN_FLIGHT_STATUSES",
    "CardData",
    "CardDataRefused",
    "CommitOutcomeUnknown",
    "Direction",
    "DuplicateIdempotencyKey",
    "EncryptedCard",
    "Event",
    "EventDraft",
    "InvalidRecord",
    "Journal",
    "JournalClosed",
    "JournalConfig",
    "JournalError",
    "JournalMetrics",
    "JournalOverloaded",
    "JournalUnavailable",
    "KeyConfigError",
    "Kind",
    "MessageRecord",
    "NewTransaction",
    "Received",
    "PanDecryptionFailed",
    "PanVault",
    "ReservationRefused",
    "SafAcknowledged",
    "SafDraft",
    "SafItem",
    "SafItemNotFound",
    "SafKind",
    "SafState",
    "SafStateError",
    "SafStats",
    "SchemaError",
    "SchemaTooNew",
    "SecretSource",
    "Status",
    "StorageError",
    "Transaction",
    "TransactionExists",
    "TransactionNotFound",
    "TransitionRecord",
    "TransitionRefused",
    "TxnChanges",
    "UnknownEvent",
    "UnknownKeyId",
    "VersionConflict",
    "generate_key",
    "new_txn_id",
    "open_journal",
]
