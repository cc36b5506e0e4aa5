"""One thin wrapper over a DB-API connection, so SQL is written once for both backends.

SQL in the journal uses ``:name`` parameters and ``{id_pk}`` / ``{bytes}`` DDL
tokens; a `Dialect` turns them into what its driver expects. Every text and
bytes parameter passes the card-data guard here, whichever query sends it.

Rows nobody reads back in the same transaction (transition audit rows, messages, and in
a pipelined batch a new payment's own row: `switch.journal.store.insert_transaction`) go
through `Db.insert_later`: they are sent together when the batch is flushed, instead of one
statement each: one ``executemany`` per statement on SQLite, one ``COPY`` per table on
PostgreSQL (`Dialect.insert_many`). Likewise a pipelined batch's payment outcomes: rows of one
UPDATE each (`Db.update_later`), sent as one statement for all of them.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from switch.journal.errors import JournalError, JournalUnavailable, StorageError
from switch.journal.guard import checked_params

Row = dict[str, Any]
T = TypeVar("T")
U = TypeVar("U")
Params = Mapping[str, object]


class Dialect:
    """What differs between backends; everything else is shared SQL."""

    name: str = ""
    begin_sql: str = "BEGIN"
    snapshot_sql: str = "BEGIN"
    ddl_tokens: Mapping[str, str] = {}
    batch_deadline: float | None = None
    """Seconds a writer batch may take before the writer gives it up (`abandon`); None: never."""
    share_lock: str = ""
    """What a SELECT ends with to hold the rows it reads, until COMMIT, against other connections' changes
    (`switch.journal.lease.fence`); nothing where the writer's `begin_sql` already holds the whole database."""

    def sql(self, text: str) -> str:
        return text

    def abandon(self, conn: Any) -> None:
        """Make a statement that ``conn`` waits on fail at once, from another thread (`batch_deadline`)."""

    def ddl(self, text: str) -> str:
        return text.format_map(self.ddl_tokens)

    def continue_identity(self, db: Db, table: str, column: str) -> None:
        """After rows were copied in with explicit ids, make new ids continue above them.

        SQLite's AUTOINCREMENT counter already follows the largest id inserted.
        """

    def bound(self, sql: str, params: dict[str, object]) -> tuple[str, Any]:
        """The statement and its parameters as the driver takes them: here, as written (named)."""
        return self.sql(sql), params

    def bound_many(self, sql: str, rows: list[dict[str, object]]) -> tuple[str, Iterable[Any]]:
        """`bound` for the rows of one ``executemany``."""
        return self.sql(sql), rows

    def insert_many(self, conn: Any, sql: str, rows: list[dict[str, object]]) -> None:
        """Send queued INSERTs of one statement (`Db.insert_later`), outside any pipeline."""
        conn.cursor().executemany(*self.bound_many(sql, rows))

    def pipeline(self, conn: Any) -> contextlib.AbstractContextManager[Any]:
        """A context in which statements whose answers nobody reads yet go out without waiting for them
        (`Db.send`), or one that yields None where the driver sends one statement at a time anyway."""
        return contextlib.nullcontext()

    def risk_version(self, db: Db, claim: bool) -> object:
        """A reading that changes when another connection commits a change to the risk rows the writer
        remembers (`switch.journal.riskmemo`), taken once per writer batch; ``claim`` (when the memory is
        built or rebuilt) first makes this connection the one whose own changes do not count."""
        raise NotImplementedError(f"{self.name}: no way to see other connections' risk changes")

    def connection_broken(self, conn: Any) -> bool:
        """True when the connection can no longer be used and must be reopened."""
        return False

    def lock_migrations(self, db: Db) -> None:
        """Serialise migrations by several processes (inside the migration transaction)."""

    def lock_event_order(self, db: Db) -> None:
        """Hold, until COMMIT, the right to take the next event ids, so ids become visible in order."""

    groups_updates: bool = False
    """True where one statement can update many rows given as a JSON array (`Db.update_later`, `update_many`)."""

    def update_many(self, conn: Any, sql: str, rows: list[dict[str, object]]) -> Any:
        """Send a grouped UPDATE (`Db.update_later`) with ``rows`` as its ``:rows``; its cursor."""
        raise NotImplementedError(f"{self.name}: no grouped updates")


class _Grouped:
    """The rows queued for one grouped statement (`Db.update_later`) and, once it is sent, what it returned."""

    __slots__ = ("key", "rows", "keys", "cursor", "returned")

    def __init__(self, key: str) -> None:
        self.key = key
        self.rows: list[dict[str, object]] = []
        self.keys: set[object] = set()
        self.cursor: Any = None
        self.returned: dict[object, Row] | None = None

    def read(self, key: object) -> Row | None:
        """The row the statement returned for ``key``, None when it updated none."""
        if self.returned is None:
            if self.cursor is None:
                raise StorageError("a grouped update was read before it was sent")
            self.returned = {row[self.key]: row for row in self.cursor.fetchall()}
        return self.returned.get(key)


class Db:
    def __init__(self, conn: Any, dialect: Dialect) -> None:
        self.conn = conn
        self.dialect = dialect
        self._event_order_locked = False
        self._later: dict[str, list[dict[str, object]]] = {}
        self._grouped: dict[str, _Grouped] = {}
        self.shared: dict[Any, Any] = {}
        """What the journal handed its writer once for many units (`switch.journal.units.shared`)."""
        self.memo: dict[str, Any] = {}
        """What a writer remembers of the rows it read and wrote on this connection (the risk counters
        on SQLite, `switch.journal.risk`): what changes it in a transaction registers its `undo`, so a
        rollback takes it back with the rows; a new connection (after a lost one or a failed COMMIT)
        starts without it."""
        self.undo: list[Callable[[], None]] = []
        """How to take back the memo's changes of the open transaction, newest last (`rollback`)."""
        self._undo_marks: list[int] = []
        self.began = 0
        """Transactions begun on this connection: what is checked once per writer batch keys on it."""
        self._pipeline: Any = None

    @property
    def broken(self) -> bool:
        return self.dialect.connection_broken(self.conn)

    def execute(self, sql: str, params: Params | None = None) -> int:
        """Run a statement and return the number of rows it changed."""
        cursor = self._run(sql, params)
        if self._pipeline is not None:
            self._pipeline.sync()  # the row count is the statement's answer: wait for it
        return int(cursor.rowcount)

    def send(self, sql: str, params: Params | None = None) -> None:
        """Run a statement whose answer nobody reads (no row count, no rows).

        In a pipelined batch (`pipelined`: PostgreSQL) it goes out at once and its answer comes with
        the next statement that is read, instead of a round trip of its own. A failure then surfaces at
        that read, in whichever unit makes it; the writer answers any failure by replaying the batch
        unit by unit, unpipelined, so the failure reaches the unit that caused it.
        """
        self._run(sql, params)

    @property
    def pipelining(self) -> bool:
        """True inside `pipelined` on a backend that pipelines."""
        return self._pipeline is not None

    @contextlib.contextmanager
    def pipelined(self) -> Iterator[None]:
        """Pipeline what runs inside (see `send`); leaving it waits for every answer still out."""
        with self.dialect.pipeline(self.conn) as pipeline:
            self._pipeline = pipeline
            try:
                yield
                self._send_grouped()  # before the pipeline's last answers are awaited
            finally:
                self._pipeline = None

    def one(self, sql: str, params: Params | None = None) -> Row | None:
        row: Row | None = self._run(sql, params).fetchone()
        return row

    def one_later(self, sql: str, params: Params | None = None) -> Callable[[], Row | None]:
        """`one` without waiting for the row in a pipelined batch: what it returns reads the row once the
        pipeline has answered (`Later`); elsewhere it has read it already."""
        cursor = self._run(sql, params)
        if self._pipeline is None:
            row: Row | None = cursor.fetchone()
            return lambda: row
        fetch: Callable[[], Row | None] = cursor.fetchone
        return fetch

    def update_later(self, sql: str, key: str, params: Params) -> Callable[[], Row | None]:
        """Queue one row of a grouped UPDATE: ``sql`` takes every row queued for it as one JSON array (``:rows``)
        and returns each row it updated (``RETURNING``). What this returns reads the row updated for this one
        (matched on its ``key`` column) once the statement has been answered, or None if it updated none.

        Why: a pipelined batch's payment outcomes were an UPDATE each, and the statement, not its row, was
        most of what one cost the writer and the server. The guard checks ``params`` now, so a refused value
        fails the unit that queued it. The rows go out before any other statement runs (`_run`), so every
        statement still sees what the units before it did; a second update of a row queued already sends the
        queue first, so one statement never updates a row twice."""
        row = self._bind(params)
        value = row[key]
        if any(value in group.keys for group in self._grouped.values()):
            self._send_grouped()
        group = self._grouped.get(sql)
        if group is None:
            group = self._grouped[sql] = _Grouped(key)
        group.rows.append(row)
        group.keys.add(value)
        return functools.partial(group.read, value)

    def _send_grouped(self) -> None:
        """Send the grouped updates queued (`update_later`): their rows were checked by the guard as they came."""
        grouped, self._grouped = self._grouped, {}
        for sql, group in grouped.items():
            group.cursor = self.dialect.update_many(self.conn, sql, group.rows)

    def all(self, sql: str, params: Params | None = None) -> list[Row]:
        rows: list[Row] = self._run(sql, params).fetchall()
        return rows

    def insert_later(self, sql: str, params: Params, *, referenced: bool = False) -> None:
        """Queue an INSERT whose result nobody needs until COMMIT; `flush` sends the queue.

        The guard checks the row now, so a refused value fails the unit that wrote it. A ``referenced`` row
        (one that other rows name by a foreign key: a new transaction) goes out before the rows queued
        before it, which may name it.
        """
        row = self._bind(params)
        rows = self._later.get(sql)
        if rows is not None:
            rows.append(row)
        elif referenced:
            self._later = {sql: [row], **self._later}
        else:
            self._later[sql] = [row]

    def flush(self) -> None:
        """Send the queued inserts, statement by statement in the order they were queued: by the dialect's
        `Dialect.insert_many` (PostgreSQL: COPY), or by ``executemany`` inside a pipeline, which COPY
        cannot join (a unit flushing mid-batch)."""
        if self._grouped:
            self._send_grouped()
        later, self._later = self._later, {}
        for sql, rows in later.items():
            if self._pipeline is None:
                self.dialect.insert_many(self.conn, sql, rows)
            else:
                self.conn.cursor().executemany(self.dialect.sql(sql), rows)

    def script(self, statements: Iterable[str]) -> None:
        for statement in statements:
            self.conn.execute(self.dialect.ddl(statement))

    def lock_event_order(self) -> None:
        """Take the dialect's event-order lock once per transaction."""
        if not self._event_order_locked:
            self.dialect.lock_event_order(self)
            self._event_order_locked = True

    def begin(self) -> None:
        self._event_order_locked = False
        self._later, self._grouped = {}, {}
        self.undo, self._undo_marks = [], []
        self.began += 1
        self.conn.execute(self.dialect.begin_sql)

    def begin_snapshot(self) -> None:
        """A read-only transaction whose reads all see one consistent snapshot."""
        self.conn.execute(self.dialect.snapshot_sql)

    def commit(self) -> None:
        """Commit, sending queued inserts first (the writer flushes them itself, to blame the right unit)."""
        self.flush()
        self._event_order_locked = False
        self.conn.execute("COMMIT")
        self.undo, self._undo_marks = [], []

    def rollback(self) -> None:
        self._event_order_locked = False
        self._later, self._grouped = {}, {}
        self._take_back(0)
        self._undo_marks = []
        self.conn.execute("ROLLBACK")

    def savepoint(self, name: str) -> None:
        self.flush()  # rows queued before the savepoint belong before it
        self._undo_marks.append(len(self.undo))
        self.conn.execute(f"SAVEPOINT {name}")

    def release(self, name: str) -> None:
        if self._undo_marks:
            self._undo_marks.pop()
        self.conn.execute(f"RELEASE SAVEPOINT {name}")

    def rollback_to(self, name: str) -> None:
        # A lock taken after the savepoint is released by rolling back to it.
        self._event_order_locked = False
        self._later, self._grouped = {}, {}
        self._take_back(self._undo_marks[-1] if self._undo_marks else 0)
        self.conn.execute(f"ROLLBACK TO SAVEPOINT {name}")

    def _take_back(self, mark: int) -> None:
        """Undo the memo's changes since ``mark``, newest first."""
        undo = self.undo
        while len(undo) > mark:
            undo.pop()()

    def close(self) -> None:
        self.conn.close()

    def _run(self, sql: str, params: Params | None) -> Any:
        if self._grouped:  # what the units before this one updated, first
            self._send_grouped()
        return self.conn.execute(*self.dialect.bound(sql, self._bind(params or {})))

    @staticmethod
    def _bind(params: Params) -> dict[str, object]:
        return checked_params(params)


class Later(Generic[T]):
    """A unit's result that needs a row its pipelined batch has not been answered for yet (`Db.one_later`):
    the writer resolves it once every statement of the batch is answered, before COMMIT. Why: on
    PostgreSQL each row a unit waits for is a round trip on which the whole batch waits; a batch of
    payments' outcomes then makes one, not one a payment. What resolves it runs after the batch's
    other units, so it may only read the row (a failure there replays the batch unit by unit, unpipelined,
    where no unit returns one)."""

    __slots__ = ("_read", "_then")

    def __init__(self, read: Callable[[], Row | None], then: Callable[[Row | None], T]) -> None:
        self._read = read
        self._then = then

    def resolve(self) -> T:
        return self._then(self._read())

    def then(self, after: Callable[[T], U]) -> Later[U]:
        """This result, then ``after`` of it (when it is resolved)."""
        first = self._then
        return Later(self._read, lambda row: after(first(row)))


def resolved(result: Any) -> Any:
    """A unit's result, with a `Later` resolved."""
    return result.resolve() if isinstance(result, Later) else result


def run(db: Db, work: Callable[[Db], T]) -> T:
    """Run journal work, turning driver exceptions into journal ones so callers never import a driver."""
    try:
        return work(db)
    except JournalError:
        raise
    except Exception as exc:
        if db.broken:
            raise JournalUnavailable(f"lost the {db.dialect.name} connection: {exc}") from exc
        raise StorageError(f"{db.dialect.name} refused a journal statement: {type(exc).__name__}: {exc}") from exc


def in_list(prefix: str, values: Sequence[object]) -> tuple[str, dict[str, object]]:
    """``(:p0, :p1, ...)`` and its parameters, for ``IN`` over a caller's set in portable SQL."""
    if not values:
        raise ValueError(f"{prefix}: an IN list needs at least one value")
    params = {f"{prefix}{index}": value for index, value in enumerate(values)}
    return "(" + ", ".join(f":{name}" for name in params) + ")", params


NAMED_PARAMETER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")
"""A ``:name`` parameter as the journal's SQL writes it for every backend (not a ``::`` cast)."""


@functools.lru_cache(maxsize=512)
def named_to_pyformat(sql: str) -> str:
    """``:name`` to ``%(name)s``, escaping literal ``%`` (psycopg's parameter style)."""
    return NAMED_PARAMETER.sub(r"%(\1)s", sql.replace("%", "%%"))
