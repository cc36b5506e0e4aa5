"""Journal settings, filled in by the TOML configuration loader."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

from switch.domain.fees import NO_FEES, FeeSchedule
from switch.journal.errors import KeyConfigError

Backend = Literal["sqlite", "postgresql"]
Writer = Literal["thread", "process", "auto"]

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


WRITER_NICE = 5
"""How much lower the writer process's CPU priority is than the switch's (a nice increment, 0 to 19).

Why: under load the reactor is the switch's bottleneck, one thread that every payment passes four times,
and on a machine whose cores are all busy it lost a tenth of its time waiting for one, often behind its
own writer process (`/proc/PID/schedstat` of the reactor thread in perf_ratio's closed loop: runnable and
waiting 7.6 % of the time, 3.8 % with the writer at nice 5). The writer's work comes in batches that
tolerate a short wait; the reactor's does not. Linux still gives a niced process its share of a core
it competes for (about a quarter against a process at nice 0 for 5), so the writer is slowed, never
starved. Raising a process's niceness needs no privilege."""

PG_BATCH_DEADLINE = 30.0
"""Seconds a PostgreSQL writer batch may wait on the server before the writer gives it up
(`switch.journal.postgres.PostgresDialect.abandon`). Why: the connection's TCP timeouts
(`switch.journal.postgres.CONNECTION_DEFAULTS`) end a connection whose data goes unacknowledged, but a server
whose host still acknowledges while the server itself does not answer holds a batch, and every payment waiting
on it, for as long as that lasts: a backend stopped (SIGSTOP, a paused container), an fsync stuck on failed
storage, a statement waiting on a lock a tool holds. Given up, the batch fails as when the server ends the
connection (`switch.journal.batch`): run again once on a new connection, or answered unavailable, or its
COMMIT's outcome unknown. A healthy batch takes milliseconds; this leaves room for a checkpoint's stall."""


@dataclass(frozen=True)
class SecretSource:
    """Where a secret lives: a file (preferred; mode 0600) or an environment variable.

    The secret itself never appears in the configuration file.
    """

    file: Path | None = None
    env: str | None = None

    def __post_init__(self) -> None:
        if (self.file is None) == (self.env is None):
            raise KeyConfigError("a secret source needs exactly one of file or env")

    def describe(self) -> str:
        return f"file {self.file}" if self.file is not None else f"environment variable {self.env}"


@dataclass(frozen=True)
class JournalConfig:
    """Journal settings and their defaults.

    backend
        ``"sqlite"`` (embedded default, one file in the state directory) or ``"postgresql"``.
    sqlite_path
        The SQLite database file; relative paths are resolved against the process's
        working directory, so the config loader should make it absolute under the state directory.
    pg_dsn, pg_schema
        libpq connection string and the schema the journal's tables live in (created if missing).
    pg_batch_deadline
        Seconds a writer batch may wait on PostgreSQL before it is given up (`PG_BATCH_DEADLINE`).
    pan_keys
        The AES-256 key ring for PANs kept for later messages: entries ``key_id:base64key``
        separated by commas or whitespace.
    pan_current_key_id
        The key new ciphertexts use; ``None`` means the last entry of the ring.
    pan_hash_secret
        Base64 of at least 32 random bytes: the HMAC-SHA-256 key of PAN look-up hashes.
    max_batch
        Most writes committed in one database transaction.
    max_queue
        Writes waiting for the writer thread before new ones are refused (`JournalOverloaded`).
    reader_threads
        Threads (each with its own connection) serving reads.
    idempotency_ttl
        How long an idempotency key stays bound to its transaction.
    fees
        The fee plans applied when a payment settles (`switch.journal.feebook`); none by default.
    writer
        ``"thread"`` (the group commit on a thread beside the reactor), ``"process"`` (in a process of
        its own, `switch.journal.process`) or ``"auto"`` (the thread for payments one at a time, the
        process once they come together: `switch.journal.adaptive`). The library's default is the
        thread, which spawns nothing; the switch's config file defaults to ``auto``.
    writer_nice
        How much lower a writer process's CPU priority is than the switch's (`WRITER_NICE`); 0 keeps it equal.
    log_format, log_level
        How a writer process logs (as the switch does: its standard error is the switch's).
    """

    backend: Backend = "sqlite"
    sqlite_path: Path = Path("var/journal.sqlite3")
    pg_dsn: str = "postgresql://postgres@127.0.0.1:5432/kswitch"
    pg_schema: str = "kswitch"
    pg_batch_deadline: float = PG_BATCH_DEADLINE
    pan_keys: SecretSource = field(default=SecretSource(env="KSWITCH_PAN_KEYS"))
    pan_current_key_id: str | None = None
    pan_hash_secret: SecretSource = field(default=SecretSource(env="KSWITCH_PAN_HASH_SECRET"))
    max_batch: int = 256
    max_queue: int = 10_000
    reader_threads: int = 4
    idempotency_ttl: timedelta = timedelta(hours=24)
    fees: FeeSchedule = NO_FEES
    writer: Writer = "thread"
    writer_nice: int = WRITER_NICE
    log_format: str = "json"
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.writer not in ("thread", "process", "auto"):
            raise ValueError(f"journal writer must be 'thread', 'process' or 'auto', got {self.writer!r}")
        nice = self.writer_nice
        if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
            raise ValueError(f"writer_nice must be an integer from 0 to 19, got {self.writer_nice!r}")
        if self.backend not in ("sqlite", "postgresql"):
            raise ValueError(f"journal backend must be 'sqlite' or 'postgresql', got {self.backend!r}")
        if not _SCHEMA_NAME.fullmatch(self.pg_schema):
            raise ValueError(f"pg_schema must be a lower-case SQL identifier, got {self.pg_schema!r}")
        if not self.pg_batch_deadline > 0:
            raise ValueError(f"pg_batch_deadline must be more than 0 seconds, got {self.pg_batch_deadline!r}")
        for name in ("max_batch", "max_queue", "reader_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.idempotency_ttl < timedelta(hours=24):
            raise ValueError("idempotency_ttl must be at least 24 hours")
