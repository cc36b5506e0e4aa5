"""Schema creation and migration, identical for SQLite and PostgreSQL.

Migrations are an append-only list: a released step is never edited, a change is
a new step. Opening a database applies the missing steps in one transaction;
a database stamped with a version newer than the last step is refused rather than
guessed at. Switch processes starting together migrate one after the other
(PostgreSQL: an advisory lock; SQLite: BEGIN IMMEDIATE takes the write lock).
Timestamps are BIGINT microseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from switch.journal.db import Db
from switch.journal.errors import SchemaError, SchemaTooNew


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]
    only_on: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Statements one backend runs after the shared ones, by dialect name (PostgreSQL's triggers)."""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "transactions, their transitions and messages, idempotency keys",
        (
            """CREATE TABLE transactions (
                txn_id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                parent_txn_id TEXT REFERENCES transactions (txn_id),
                merchant_id TEXT NOT NULL,
                store_id TEXT,
                order_id TEXT,
                connector TEXT NOT NULL,
                status TEXT NOT NULL,
                previous_status TEXT,
                version INTEGER NOT NULL,
                amount BIGINT NOT NULL CHECK (amount >= 0),
                currency TEXT NOT NULL,
                amount_authorized BIGINT NOT NULL CHECK (amount_authorized >= 0),
                amount_captured BIGINT NOT NULL CHECK (amount_captured >= 0),
                amount_refunded BIGINT NOT NULL CHECK (amount_refunded >= 0),
                stan TEXT,
                rrn TEXT,
                auth_code TEXT,
                response_code TEXT,
                reason TEXT,
                masked_pan TEXT,
                pan_hash {bytes},
                pan_key_id TEXT,
                pan_ciphertext {bytes},
                transmission_datetime TEXT,
                sent_at BIGINT,
                idempotency_key TEXT,
                request_hash {bytes},
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                CHECK ((pan_key_id IS NULL) = (pan_ciphertext IS NULL))
            )""",
            "CREATE INDEX transactions_merchant_order ON transactions (merchant_id, order_id)",
            "CREATE INDEX transactions_parent ON transactions (parent_txn_id)",
            "CREATE INDEX transactions_pan_hash ON transactions (pan_hash)",
            "CREATE INDEX transactions_connector_stan ON transactions (connector, stan)",
            """CREATE INDEX transactions_in_flight ON transactions (created_at)
                WHERE status IN ('pending', 'reversal_pending', 'timeout')""",
            "CREATE INDEX transactions_pan_key ON transactions (pan_key_id) WHERE pan_key_id IS NOT NULL",
            """CREATE TABLE transitions (
                transition_id {id_pk},
                txn_id TEXT NOT NULL REFERENCES transactions (txn_id),
                from_status TEXT,
                to_status TEXT NOT NULL,
                at BIGINT NOT NULL,
                reason TEXT,
                changes TEXT NOT NULL
            )""",
            "CREATE INDEX transitions_txn ON transitions (txn_id, transition_id)",
            """CREATE TABLE messages (
                message_id {id_pk},
                txn_id TEXT,
                direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
                connector TEXT NOT NULL,
                mti TEXT NOT NULL,
                stan TEXT,
                response_code TEXT,
                fields TEXT NOT NULL,
                at BIGINT NOT NULL
            )""",
            "CREATE INDEX messages_txn ON messages (txn_id, message_id)",
            """CREATE TABLE idempotency_keys (
                merchant_id TEXT NOT NULL,
                idempotency_key TEXT NOT NULL,
                txn_id TEXT NOT NULL REFERENCES transactions (txn_id),
                created_at BIGINT NOT NULL,
                PRIMARY KEY (merchant_id, idempotency_key)
            )""",
            "CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at)",
        ),
    ),
    Migration(
        2,
        "store-and-forward queue",
        (
            """CREATE TABLE saf_queue (
                saf_id {id_pk},
                connector TEXT NOT NULL,
                txn_id TEXT NOT NULL REFERENCES transactions (txn_id),
                kind TEXT NOT NULL,
                mti TEXT NOT NULL,
                fields TEXT NOT NULL,
                pan_key_id TEXT,
                pan_ciphertext {bytes},
                state TEXT NOT NULL CHECK (state IN ('queued', 'done', 'dead', 'dropped')),
                attempts INTEGER NOT NULL,
                max_attempts INTEGER NOT NULL CHECK (max_attempts > 0),
                enqueued_at BIGINT NOT NULL,
                next_due_at BIGINT NOT NULL,
                last_attempt_at BIGINT,
                last_response_code TEXT,
                last_error TEXT,
                response_code TEXT,
                state_reason TEXT,
                operator TEXT,
                updated_at BIGINT NOT NULL,
                CHECK ((pan_key_id IS NULL) = (pan_ciphertext IS NULL))
            )""",
            "CREATE INDEX saf_queue_state_connector ON saf_queue (state, connector, saf_id)",
            """CREATE UNIQUE INDEX saf_queue_active_per_txn ON saf_queue (txn_id, kind)
                WHERE state IN ('queued', 'dead')""",
            "CREATE INDEX saf_queue_pan_key ON saf_queue (pan_key_id) WHERE pan_key_id IS NOT NULL",
        ),
    ),
    Migration(
        3,
        "notification event log and per-client acknowledgements",
        (
            """CREATE TABLE events (
                event_id {id_pk},
                merchant_id TEXT NOT NULL,
                txn_id TEXT,
                type TEXT NOT NULL,
                payload TEXT NOT NULL,
                created_at BIGINT NOT NULL
            )""",
            "CREATE INDEX events_merchant ON events (merchant_id, event_id)",
            """CREATE TABLE event_acks (
                client_id TEXT NOT NULL,
                event_id BIGINT NOT NULL REFERENCES events (event_id),
                acked_at BIGINT NOT NULL,
                PRIMARY KEY (client_id, event_id)
            )""",
        ),
    ),
    Migration(
        4,
        "in-flight index covers transactions awaiting the customer (pending_customer_action)",
        (
            "DROP INDEX transactions_in_flight",
            """CREATE INDEX transactions_in_flight ON transactions (created_at)
                WHERE status IN ('pending', 'pending_customer_action', 'reversal_pending', 'timeout')""",
        ),
    ),
    Migration(
        5,
        "amounts reserved by operations (captures, refunds) in flight on their parent",
        (
            "ALTER TABLE transactions ADD COLUMN amount_capture_pending BIGINT NOT NULL DEFAULT 0 "
            "CHECK (amount_capture_pending >= 0)",
            "ALTER TABLE transactions ADD COLUMN amount_refund_pending BIGINT NOT NULL DEFAULT 0 "
            "CHECK (amount_refund_pending >= 0)",
        ),
    ),
    Migration(
        6,
        "one node per journal (lease) and persisted counters (RRN blocks)",
        (
            """CREATE TABLE node_lease (
                name TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                host TEXT NOT NULL,
                pid INTEGER NOT NULL,
                acquired_at BIGINT NOT NULL,
                heartbeat_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL
            )""",
            """CREATE TABLE counters (
                name TEXT PRIMARY KEY,
                value BIGINT NOT NULL CHECK (value >= 0)
            )""",
        ),
    ),
    Migration(
        7,
        "risk management: rule counters per window, blocklist (with holds that expire), decisions",
        (
            """CREATE TABLE risk_counters (
                name TEXT NOT NULL,
                window_start BIGINT NOT NULL,
                count BIGINT NOT NULL CHECK (count >= 0),
                amount BIGINT NOT NULL CHECK (amount >= 0),
                expires_at BIGINT NOT NULL,
                PRIMARY KEY (name)
            )""",
            "CREATE INDEX risk_counters_expiry ON risk_counters (expires_at)",
            """CREATE TABLE risk_blocklist (
                kind TEXT NOT NULL,
                value TEXT NOT NULL,
                shown TEXT NOT NULL,
                source TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT,
                PRIMARY KEY (kind, value)
            )""",
            """CREATE TABLE risk_decisions (
                txn_id TEXT PRIMARY KEY,
                action TEXT NOT NULL,
                rule TEXT,
                matches TEXT NOT NULL,
                decided_at BIGINT NOT NULL
            )""",
        ),
    ),
    Migration(
        8,
        "fees journalled with the operation that moved the money (signed: reversals are negative)",
        (
            "ALTER TABLE transactions ADD COLUMN bank_fee BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE transactions ADD COLUMN merchant_fee BIGINT NOT NULL DEFAULT 0",
        ),
    ),
    Migration(
        9,
        "business dates: one open date per connector, each row dated when sent and when reversed",
        (
            """CREATE TABLE business_days (
                connector TEXT NOT NULL,
                business_date TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('open', 'closed')),
                opened_at BIGINT NOT NULL,
                closed_at BIGINT,
                closed_by TEXT,
                PRIMARY KEY (connector, business_date)
            )""",
            "CREATE UNIQUE INDEX business_days_open ON business_days (connector) WHERE state = 'open'",
            "ALTER TABLE transactions ADD COLUMN business_date TEXT",
            "ALTER TABLE transactions ADD COLUMN reversal_business_date TEXT",
            "CREATE INDEX transactions_business_date ON transactions (business_date)",
            """CREATE INDEX transactions_reversal_business_date ON transactions (reversal_business_date)
                WHERE reversal_business_date IS NOT NULL""",
        ),
    ),
    Migration(
        10,
        "day end: reconciliation results (both sides' totals) and their exceptions",
        (
            """CREATE TABLE reconciliations (
                reconciliation_id {id_pk},
                connector TEXT NOT NULL,
                business_date TEXT NOT NULL,
                currency TEXT NOT NULL,
                method TEXT NOT NULL,
                result TEXT NOT NULL,
                switch_totals TEXT NOT NULL,
                bank_totals TEXT,
                at BIGINT NOT NULL
            )""",
            "CREATE INDEX reconciliations_day ON reconciliations (connector, business_date)",
            """CREATE TABLE reconciliation_exceptions (
                exception_id {id_pk},
                reconciliation_id BIGINT REFERENCES reconciliations (reconciliation_id),
                connector TEXT NOT NULL,
                business_date TEXT NOT NULL,
                kind TEXT NOT NULL,
                txn_id TEXT REFERENCES transactions (txn_id),
                detail TEXT NOT NULL,
                at BIGINT NOT NULL
            )""",
            "CREATE INDEX reconciliation_exceptions_day ON reconciliation_exceptions (connector, business_date)",
        ),
    ),
    Migration(
        11,
        "risk counters as sliding windows (one row per counter with its time slots); old fixed windows dropped",
        (
            """CREATE TABLE risk_windows (
                name TEXT PRIMARY KEY,
                slots TEXT NOT NULL,
                expires_at BIGINT NOT NULL
            )""",
            "CREATE INDEX risk_windows_expiry ON risk_windows (expires_at)",
            "DROP TABLE risk_counters",
            "CREATE INDEX risk_blocklist_value ON risk_blocklist (value)",
        ),
    ),
    Migration(
        12,
        "risk decisions keep the cumulative counts their payment holds (to give back when it ends without "
        "money); risk counters and decisions in one B-tree each (SQLite: WITHOUT ROWID), counters without an "
        "expiry index: each authorization writes them, so every page they touch is written at its commit",
        (
            """CREATE TABLE risk_windows_v12 (
                name TEXT PRIMARY KEY,
                slots TEXT NOT NULL,
                expires_at BIGINT NOT NULL
            ){without_rowid}""",
            "INSERT INTO risk_windows_v12 (name, slots, expires_at) SELECT name, slots, expires_at FROM risk_windows",
            "DROP TABLE risk_windows",
            "ALTER TABLE risk_windows_v12 RENAME TO risk_windows",
            """CREATE TABLE risk_decisions_v12 (
                txn_id TEXT PRIMARY KEY,
                action TEXT NOT NULL,
                rule TEXT,
                matches TEXT NOT NULL,
                decided_at BIGINT NOT NULL,
                reserved TEXT
            ){without_rowid}""",
            "INSERT INTO risk_decisions_v12 (txn_id, action, rule, matches, decided_at) "
            "SELECT txn_id, action, rule, matches, decided_at FROM risk_decisions",
            "DROP TABLE risk_decisions",
            "ALTER TABLE risk_decisions_v12 RENAME TO risk_decisions",
        ),
    ),
    Migration(
        13,
        "a payment's risk decision in its own row (transactions.risk), not a row of its own; on SQLite the "
        "writer's counters are rebuilt from those rows, and a counter's row says which of them it holds "
        "(risk_windows.through)",
        (
            "ALTER TABLE transactions ADD COLUMN risk TEXT",
            "ALTER TABLE risk_windows ADD COLUMN through BIGINT NOT NULL DEFAULT 0",
        ),
    ),
    Migration(
        14,
        "the PostgreSQL writer counts in its memory too, as SQLite's does: risk_changes holds the version "
        "that a change to the risk tables by any connection but the writer's bumps (triggers), so the writer "
        "sees it at its next batch; PostgreSQL finds the last window's payments by a block range index",
        (
            "CREATE TABLE risk_changes (id INTEGER PRIMARY KEY, version BIGINT NOT NULL, writer_pid BIGINT)",
            "INSERT INTO risk_changes (id, version) VALUES (1, 0)",
        ),
        only_on={"postgresql": (
            # SET search_path FROM CURRENT: the journal's schema, whatever the changing session's path is.
            """CREATE FUNCTION risk_changed() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
            BEGIN
                UPDATE risk_changes SET version = version + 1
                WHERE id = 1 AND writer_pid IS DISTINCT FROM pg_backend_pid();
                RETURN NULL;
            END $$""",
            "CREATE TRIGGER risk_windows_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON risk_windows "
            "FOR EACH STATEMENT EXECUTE FUNCTION risk_changed()",
            "CREATE TRIGGER risk_blocklist_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON risk_blocklist "
            "FOR EACH STATEMENT EXECUTE FUNCTION risk_changed()",
            # The memory is rebuilt from the last window's payments (created_at >= ...): a block range index
            # finds them without reading the whole table, and costs an INSERT next to nothing (rows come in
            # created_at order).
            "CREATE INDEX transactions_created_brin ON transactions USING brin (created_at)",
        )},
    ),
    Migration(
        15,
        "the parent index holds only operations (rows with a parent): a payment has none, and each index its "
        "row enters is one more page its commit writes; look-ups by parent (parent_txn_id = ...) still use it",
        (
            "DROP INDEX transactions_parent",
            "CREATE INDEX transactions_parent ON transactions (parent_txn_id) WHERE parent_txn_id IS NOT NULL",
        ),
    ),
)

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)"""


@dataclass(frozen=True)
class MigrationResult:
    from_version: int
    to_version: int


def latest_version(steps: Sequence[Migration] = MIGRATIONS) -> int:
    return steps[-1].version if steps else 0


def current_version(db: Db) -> int:
    row = db.one("SELECT MAX(version) AS version FROM schema_version")
    return int(row["version"]) if row and row["version"] is not None else 0


def migrate(db: Db, steps: Sequence[Migration] = MIGRATIONS) -> MigrationResult:
    """Bring the database up to the last step, or refuse a database from a newer kswitch."""
    _check_steps(steps)
    target = latest_version(steps)
    db.begin()
    try:
        db.dialect.lock_migrations(db)
        db.script([_VERSION_TABLE])
        found = current_version(db)
        if found > target:
            raise SchemaTooNew(found, target)
        for step in steps:
            if step.version > found:
                db.script(step.statements)
                db.script(step.only_on.get(db.dialect.name, ()))
                db.execute(
                    "INSERT INTO schema_version (version, description, applied_at) VALUES (:v, :d, :at)",
                    {"v": step.version, "d": step.description, "at": time.time_ns() // 1000},
                )
    except BaseException:
        db.rollback()
        raise
    db.commit()
    return MigrationResult(from_version=found, to_version=max(found, target))


def _check_steps(steps: Sequence[Migration]) -> None:
    for expected, step in enumerate(steps, start=1):
        if step.version != expected:
            raise SchemaError(f"migration steps must be numbered 1, 2, 3 ... without gaps; step {expected} is {step.version}")
