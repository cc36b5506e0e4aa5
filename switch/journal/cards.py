"""Encrypted-card columns shared by transactions and SAF items, and key and algorithm rotation over them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from switch.journal.db import Db, Row
from switch.journal.models import EncryptedCard
from switch.journal.vault import GCM_SIV


def transaction_context(txn_id: str) -> str:
    return txn_id


def saf_context(txn_id: str) -> str:
    return f"saf:{txn_id}"


@dataclass(frozen=True)
class CardTable:
    table: str
    id_column: str
    context: Callable[[Row], str]


def _transaction_row_context(row: Row) -> str:
    return transaction_context(row["txn_id"])


def _saf_row_context(row: Row) -> str:
    return saf_context(row["txn_id"])


CARD_TABLES: tuple[CardTable, ...] = (  # named functions, not lambdas: a table goes to the writer with its unit
    CardTable("transactions", "txn_id", _transaction_row_context),
    CardTable("saf_queue", "saf_id", _saf_row_context),
)


def card_columns(card: EncryptedCard | None) -> dict[str, object]:
    if card is None:
        return {"pan_key_id": None, "pan_ciphertext": None}
    return {"pan_key_id": card.key_id, "pan_ciphertext": card.ciphertext}


def card_from_row(row: Row, context: str) -> EncryptedCard | None:
    if row["pan_key_id"] is None:
        return None
    return EncryptedCard(key_id=row["pan_key_id"], ciphertext=bytes(row["pan_ciphertext"]), context=context)


def stale_cards(db: Db, *, spec: CardTable, current_key_id: str, limit: int) -> list[tuple[object, EncryptedCard]]:
    """Rows whose card is sealed under a key other than the current one, or with an older
    algorithm than AES-GCM-SIV (the ciphertext's first byte names it, see `vault`)."""
    rows = db.all(
        f"SELECT {spec.id_column} AS row_id, txn_id, pan_key_id, pan_ciphertext FROM {spec.table} "
        "WHERE pan_key_id IS NOT NULL AND (pan_key_id <> :current OR substr(pan_ciphertext, 1, 1) <> :algorithm) "
        f"ORDER BY {spec.id_column} LIMIT :limit",
        {"current": current_key_id, "algorithm": GCM_SIV, "limit": limit},
    )
    found = []
    for row in rows:
        card = card_from_row(row, spec.context(row))
        if card is not None:
            found.append((row["row_id"], card))
    return found


def reseal(db: Db, spec: CardTable, row_id: object, old: EncryptedCard, new: EncryptedCard) -> bool:
    """Swap in the resealed card unless the row changed since it was read."""
    return (
        db.execute(
            f"UPDATE {spec.table} SET pan_key_id = :new_key, pan_ciphertext = :new_blob "
            f"WHERE {spec.id_column} = :row_id AND pan_key_id = :old_key AND pan_ciphertext = :old_blob",
            {
                "new_key": new.key_id,
                "new_blob": new.ciphertext,
                "row_id": row_id,
                "old_key": old.key_id,
                "old_blob": old.ciphertext,
            },
        )
        == 1
    )


def reseal_many(db: Db, *, spec: CardTable, items: list[tuple[object, EncryptedCard, EncryptedCard]]) -> int:
    return sum(reseal(db, spec, row_id, old, new) for row_id, old, new in items)


def key_usage(db: Db) -> Mapping[str, int]:
    """How many stored cards each key id still seals: a key can be retired at zero."""
    usage: dict[str, int] = {}
    for spec in CARD_TABLES:
        for row in db.all(
            f"SELECT pan_key_id, COUNT(*) AS n FROM {spec.table} WHERE pan_key_id IS NOT NULL GROUP BY pan_key_id"
        ):
            usage[row["pan_key_id"]] = usage.get(row["pan_key_id"], 0) + int(row["n"])
    return usage
