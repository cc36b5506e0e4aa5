"""SQLite backend: one file, WAL mode, synchronous=FULL.

WAL lets readers run while the writer commits. synchronous=FULL makes every
commit fsync the WAL before returning; NORMAL would only fsync at checkpoints, so
a power cut could lose transactions the switch already answered ``approved``
for. Group commit is what keeps FULL affordable: one fsync per batch.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from pathlib import Path
from typing import Any

from switch.journal.db import NAMED_PARAMETER, Db, Dialect
from switch.journal.errors import JournalUnavailable

_MIN_VERSION = (3, 35, 0)  # RETURNING


class SQLiteDialect(Dialect):
    name = "sqlite"
    begin_sql = "BEGIN IMMEDIATE"
    ddl_tokens = {"id_pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "bytes": "BLOB", "without_rowid": " WITHOUT ROWID"}

    def bound(self, sql: str, params: dict[str, object]) -> tuple[str, Any]:
        text, take = positional(sql)
        return text, _values(take, params)

    def bound_many(self, sql: str, rows: list[dict[str, object]]) -> tuple[str, Iterable[Any]]:
        text, take = positional(sql)
        return text, [_values(take, row) for row in rows]

    def risk_version(self, db: Db, claim: bool) -> object:
        """SQLite's count of commits by other connections (any table: the writer holds the whole file from
        BEGIN IMMEDIATE, so none can come during a batch). A cursor of plain tuples: no parameters to
        guard, no row worth a dict."""
        cursor = db.conn.cursor()
        cursor.row_factory = None
        return cursor.execute("PRAGMA data_version").fetchone()[0]


class SQLiteBackend:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        if sqlite3.sqlite_version_info < _MIN_VERSION:
            raise JournalUnavailable(
                f"SQLite {sqlite3.sqlite_version} is too old for the journal; 3.35 or newer is needed"
            )
        self.path = path
        self.dialect = SQLiteDialect()

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def open_writer(self) -> Db:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalUnavailable(f"cannot create the journal directory {self.path.parent}: {exc}") from None
        db = self._connect()
        mode = db.one("PRAGMA journal_mode=WAL")
        if mode is None or str(mode["journal_mode"]).lower() != "wal":
            db.close()
            raise JournalUnavailable(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
        return db

    def open_reader(self) -> Db:
        db = self._connect()
        db.execute("PRAGMA query_only=ON")
        return db

    def _connect(self) -> Db:
        try:
            # check_same_thread is off only so close() may run on the reactor thread;
            # each connection is used by exactly one thread.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        except sqlite3.Error as exc:
            raise JournalUnavailable(f"cannot open SQLite journal {self.path}: {exc}") from None
        conn.row_factory = _dict_row
        for pragma in ("synchronous=FULL", "foreign_keys=ON", "busy_timeout=30000"):
            conn.execute(f"PRAGMA {pragma}")
        return Db(conn, self.dialect)


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row)}


@functools.lru_cache(maxsize=1024)
def positional(sql: str) -> tuple[str, Callable[[Mapping[str, object]], tuple[object, ...]]]:
    """``sql`` with ``?`` for each ``:name``, and what takes a statement's values, in order, from its named parameters.

    Why: the sqlite3 module binds a named parameter by asking SQLite for its name, making a string of it and
    looking that up in the dict, about 0.3 µs each on the writer process; a transaction's INSERT has 37
    (47-52 µs named against 37-39 positional, on a copy of a live journal)."""
    names = NAMED_PARAMETER.findall(sql)
    text = NAMED_PARAMETER.sub("?", sql)
    if len(names) > 1:
        return text, itemgetter(*names)
    if names:
        name = names[0]
        return text, lambda params: (params[name],)
    return text, lambda params: ()


def _values(take: Callable[[Mapping[str, object]], tuple[object, ...]], params: Mapping[str, object]) -> tuple[object, ...]:
    try:
        return take(params)
    except KeyError as missing:  # as the named binding said it: a statement its caller gave no value for
        raise sqlite3.ProgrammingError(f"no value for the parameter :{missing.args[0]}") from None
