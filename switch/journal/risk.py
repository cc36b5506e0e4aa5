"""The risk stage's durable state: counters per rule window, the blocklist, and decisions.

Why here: velocity and cumulative limits must survive restarts and stay exact when
payments race (or when several nodes share one PostgreSQL journal).  A counter is one
row (`Window`) holding its slots: a slot is a slice of time (a tenth of the rule's
window, or a calendar day) with the count and amount added in it, so a window slides
slot by slot instead of resetting.  An evaluation locks the rows of every counter it may
touch with one upsert (`RiskLedger.windows`), reads, checks and adds in memory, and
writes the changed rows back (`RiskLedger.save`) in the same writer transaction: no
other payment, on this node or another, can read a counter between a check and its
add, so two payments never both take the last unit of a limit, and the counts a
payment bumped before it was blocked are simply not written.  That writer transaction
is the payment's own (`Journal.create_screened`, `Journal.transition`'s ``risk``), so
the stage adds statements to an authorization's commits but no commit.  On SQLite the
journal's writer is the only one to write counters (one node holds the file's lease), so it
keeps the counters and blocklist values it has read in memory and writes counters back with
the batch's other rows: the common payment reads no row (`_Memo` says why that stays exact
across rollbacks, failed commits, restarts and an operator's changes beside it).  A decision
keeps the cumulative counts its payment holds (``reserved``), so they can be given
back when it ends without money, even after a restart (`RiskLedger.give_back`).

Blocklist values are what the rules compare: a card as its keyed PAN hash (base32), a BIN,
an IP address or CIDR, a device id, an email hash, a customer id; ``shown`` is what an
operator may see (a masked PAN).  An entry with ``expires_at`` is a hold (the
card-testing guard's), gone when it expires.
"""

from __future__ import annotations

import functools
import json
import sys
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson
from twisted.internet import defer

from switch.journal.base import JournalBase
from switch.journal.db import Db, in_list
from switch.journal.guard import Derived

T = TypeVar("T")
Reservation = tuple[str, int, int, int]
"""What a cumulative rule added for one payment: (counter, count, amount, slot start µs)."""

_MAX = 2**63 - 1  # a slot's count and amount are signed 64-bit integers as stored, and saturate here
_TO_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")
_FROM_LETTERS = str.maketrans("abcdefghijklmnop", "0123456789abcdef")


class Screened(Protocol):
    """A risk verdict as `Journal.create_screened` reads it."""

    @property
    def journal_as(self) -> str:
        """``send``, ``refuse`` or ``apart`` (see `Journal.create_screened`)."""
        ...


@dataclass(slots=True)
class Window:
    """One counter: its slots that may still be inside its window, oldest first, as a flat list
    ``[start, count, amount, start, count, amount, ...]`` (start in µs), which packs and unpacks
    in C (`array`) rather than slot by slot.

    A rule decides what a slot is (a tenth of its window, or a calendar day) and which slots
    still count (`total` from ``since``); the window only adds them up.
    """

    name: str
    slots: list[int]
    expires_at: int = 0
    changed: bool = False

    def total(self, since: int) -> tuple[int, int]:
        """(count, amount) of the slots that start at ``since`` or later."""
        s, count, amount = self.slots, 0, 0
        for i in range(0, len(s), 3):
            if s[i] >= since:
                count += s[i + 1]
                amount += s[i + 2]
        return count, amount

    def add(self, start: int, count: int, amount: int, since: int, expires_at: int) -> None:
        """Count into the slot starting at ``start``; slots older than ``since`` are dropped."""
        s = self.slots
        old = 0
        while old < len(s) and s[old] < since:
            old += 3
        del s[:old]
        i = len(s) - 3  # the newest slot is nearly always the one counted into
        while i >= 0 and s[i] > start:
            i -= 3
        if i >= 0 and s[i] == start:
            s[i + 1], s[i + 2] = min(s[i + 1] + count, _MAX), min(s[i + 2] + amount, _MAX)
        else:
            s[i + 3:i + 3] = [start, count, amount]
        self.expires_at = max(self.expires_at, expires_at)
        self.changed = True

    def take_back(self, start: int, count: int, amount: int) -> None:
        """Undo an `add` into slot ``start``; nothing when that slot has left the window."""
        s = self.slots
        for i in range(0, len(s), 3):
            if s[i] == start:
                s[i + 1], s[i + 2] = max(s[i + 1] - count, 0), max(s[i + 2] - amount, 0)
                self.changed = True
                return

    def packed(self) -> Derived:
        """The slots as stored: little-endian 64-bit integers in hex spelt with the letters a-p.  Text
        without a single digit holds no card number, so the card-data guard need not scan it."""
        packed = array("q", self.slots)
        if sys.byteorder == "big":
            packed.byteswap()
        return Derived(packed.tobytes().hex().translate(_TO_LETTERS))


_WINDOWS = ("SELECT 'w' AS src, name AS kind, '' AS value, '' AS shown, '' AS source, 0 AS created_at, expires_at, "
            "slots FROM ")
_BLOCKED = ("SELECT 'b' AS src, kind, value, shown, source, created_at, expires_at, NULL AS slots FROM risk_blocklist "
            "WHERE value = :v{}")


@functools.lru_cache(maxsize=64)
def _names(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(count))


@functools.lru_cache(maxsize=256)
def _read_sql(sqlite: bool, names: int, values: int) -> str:
    head, parts = "", []
    if names:
        if sqlite:  # one branch a name: an index lookup each, cheaper than an IN list's temporary table
            parts += [_WINDOWS + f"risk_windows WHERE name = :n{i}" for i in range(names)]
        else:
            rows = ", ".join(f"(:n{i}, :empty, 0)" for i in range(names))
            head = (f"WITH w AS (INSERT INTO risk_windows (name, slots, expires_at) VALUES {rows} "
                    "ON CONFLICT (name) DO UPDATE SET expires_at = risk_windows.expires_at "
                    "RETURNING name, slots, expires_at) ")
            parts.append(_WINDOWS + "w")
    parts += [_BLOCKED.format(i) for i in range(values)]
    return head + " UNION ALL ".join(parts)


@functools.lru_cache(maxsize=64)
def _save_sql(rows: int) -> str:
    values = ", ".join(f"(:n{i}, :s{i}, :e{i})" for i in range(rows))
    return (f"INSERT INTO risk_windows (name, slots, expires_at) VALUES {values} ON CONFLICT (name) DO UPDATE "
            "SET slots = excluded.slots, expires_at = excluded.expires_at")


_SAVE_ONE = ("INSERT INTO risk_windows (name, slots, expires_at) VALUES (:name, :slots, :expires_at) "
             "ON CONFLICT (name) DO UPDATE SET slots = excluded.slots, expires_at = excluded.expires_at")
_REMEMBERED = 100_000
"""Counters and blocklist values the SQLite writer keeps in memory at most; past that it forgets them all."""


@dataclass(slots=True)
class _Memo:
    """What the SQLite journal's writer remembers of the risk tables, so that a payment's screening reads
    nothing from them in the common case: every counter and every blocklist value (with its entries, or
    none) it has read, changed as its own units change them.  Exact because it never outlives what it
    mirrors: `Db.memo` drops it at any rollback (so it never holds a write that did not commit) and with
    a lost connection, and it is dropped when another connection has committed since (SQLite's
    ``data_version``: an operator's `kswitch risk block` beside the running switch) or this one changes
    the blocklist or purges.  On a restart the writer starts without it, from the tables."""

    version: object
    windows: dict[str, Window] = field(default_factory=dict)
    listed: dict[str, list[BlockEntry]] = field(default_factory=dict)


def _window(name: str, text: str | None, expires_at: int) -> Window:
    if not text:
        return Window(name, [], int(expires_at))
    packed = array("q", bytes.fromhex(text.translate(_FROM_LETTERS)))
    if sys.byteorder == "big":
        packed.byteswap()
    return Window(name, packed.tolist(), int(expires_at))


@dataclass(frozen=True, slots=True)
class BlockEntry:
    kind: str
    value: str
    shown: str
    source: str
    created_at: int
    expires_at: int | None


class RiskLedger:
    """One evaluation's view of the risk tables, inside one writer transaction."""

    def __init__(self, db: Db, now_us: int) -> None:
        self._db = db
        self.now_us = now_us

    def blocked(self, keys: Iterable[tuple[str, str]]) -> list[BlockEntry]:
        """The live entries among ``keys`` (kind, value)."""
        return self.read(keys, ())[0]

    def windows(self, names: Iterable[str]) -> dict[str, Window]:
        """The counters ``names``, locked until this unit commits."""
        return self.read((), names)[1]

    def read(self, keys: Iterable[tuple[str, str]], names: Iterable[str]) -> tuple[list[BlockEntry], dict[str, Window]]:
        """The live blocklist entries among ``keys`` (kind, value) and the counters ``names``, in one
        statement.  What a rule reads and then adds to can change under no one else until this unit
        commits, so a limit checked on it holds across concurrent payments and nodes: SQLite's writer
        holds the whole database from BEGIN IMMEDIATE, and remembers what it read and wrote (`_Memo`),
        so a counter or a blocklist value is read once, not per payment; on PostgreSQL an upsert locks
        the counters' rows (in name order, so two nodes never lock in opposite orders; a counter seen
        for the first time gets its row, so it is locked too)."""
        wanted = set(keys)
        ordered = sorted(set(names))
        values = list(dict.fromkeys(value for _, value in wanted))
        if not ordered and not values:
            return [], {}
        sqlite = self._db.dialect.name == "sqlite"
        memo = self._memo() if sqlite and self._remembers else None
        windows: dict[str, Window] = {}
        listed: dict[str, list[BlockEntry]] = {}
        names_read, values_read = ordered, values
        if memo is not None:
            names_read = [name for name in ordered if name not in memo.windows]
            values_read = [value for value in values if value not in memo.listed]
        if names_read or values_read:
            params: dict[str, Any] = dict(zip(_names("n", len(names_read)), names_read))
            params.update(zip(_names("v", len(values_read)), values_read))
            if names_read and not sqlite:
                params["empty"] = ""
            for row in self._db.all(_read_sql(sqlite, len(names_read), len(values_read)), params):
                if row["src"] == "w":
                    windows[row["kind"]] = _window(row["kind"], row["slots"], row["expires_at"])
                else:
                    listed.setdefault(row["value"], []).append(_entry(row))
            for name in names_read:
                if name not in windows:
                    windows[name] = Window(name, [])
            if memo is not None:
                memo.windows.update(windows)
                memo.listed.update((value, listed.get(value, [])) for value in values_read)
        if memo is not None:
            windows = {name: memo.windows[name] for name in ordered}
            listed = memo.listed
        entries = [entry for value in values for entry in listed.get(value, ())
                   if (entry.kind, value) in wanted and (entry.expires_at is None or entry.expires_at > self.now_us)]
        return entries, windows  # a hold that has expired no longer blocks

    _remembers = True

    def _memo(self) -> _Memo:
        """What this SQLite connection remembers, valid while no other connection has committed (an
        operator's `kswitch risk block` beside the running switch, a purge)."""
        version = self._db.one("PRAGMA data_version")
        memo: _Memo | None = self._db.memo.get("risk")
        if memo is None or memo.version != version or len(memo.windows) + len(memo.listed) >= _REMEMBERED:
            self._db.flush()  # counters about to be read from the table again must be in it
            memo = self._db.memo["risk"] = _Memo(version)
        return memo

    def save(self, windows: Iterable[Window]) -> None:
        """Write back the windows that changed: on PostgreSQL in one statement now; on SQLite, where
        the writer reads a counter back from memory (`_Memo`), not from the table, with the batch's
        other rows (`Db.insert_later`)."""
        changed = [w for w in windows if w.changed]
        if not changed:
            return
        for w in changed:
            w.changed = False
        if self._db.dialect.name == "sqlite":
            for w in changed:
                self._db.insert_later(_SAVE_ONE, {"name": w.name, "slots": w.packed(), "expires_at": w.expires_at})
            return
        params: dict[str, Any] = {}
        for i, w in enumerate(changed):
            params[f"n{i}"], params[f"s{i}"], params[f"e{i}"] = w.name, w.packed(), w.expires_at
        self._db.execute(_save_sql(len(changed)), params)

    def hold(self, kind: str, value: str, shown: str, source: str, expires_at: int) -> None:
        """Block ``value`` until ``expires_at`` (a later hold extends it; a permanent entry stays)."""
        memo: _Memo | None = self._db.memo.get("risk")
        if memo is not None:
            memo.listed.pop(value, None)  # read again, hold included
        self._db.execute(
            "INSERT INTO risk_blocklist (kind, value, shown, source, created_at, expires_at) "
            "VALUES (:kind, :value, :shown, :source, :now, :expires) ON CONFLICT (kind, value) DO UPDATE "
            "SET expires_at = excluded.expires_at, source = excluded.source "
            "WHERE risk_blocklist.expires_at IS NOT NULL AND risk_blocklist.expires_at < excluded.expires_at",
            {"kind": kind, "value": value, "shown": shown, "source": source, "now": self.now_us,
             "expires": expires_at})

    def decide(self, txn_id: str, action: str, rule: str | None, matches: list[Mapping[str, Any]],
               reserved: Sequence[Reservation] = ()) -> None:
        """Journal a payment's decision, with the cumulative counts it holds (`give_back` returns them): an
        append-only row sent with the batch's others (`Db.insert_later`); it is read only in later commits."""
        self._db.insert_later(
            "INSERT INTO risk_decisions (txn_id, action, rule, matches, decided_at, reserved) "
            "VALUES (:txn_id, :action, :rule, :matches, :now, :reserved)",
            {"txn_id": txn_id, "action": action, "rule": rule, "matches": orjson.dumps(matches).decode() if matches
             else "[]", "now": self.now_us, "reserved": _packed_reservations(reserved)})

    def take_back(self, reserved: Iterable[Reservation]) -> None:
        """Undo cumulative additions (counter, count, amount, slot): a slot that has left its window stays gone."""
        reserved = list(reserved)
        if reserved:
            windows = self.windows([name for name, *_ in reserved])
            for name, count, amount, start in reserved:
                windows[name].take_back(start, count, amount)
            self.save(windows.values())

    def give_back(self, txn_id: str) -> None:
        """Give back what payment ``txn_id``'s decision still holds, once: it ended without money (a
        customer confirmation rejected or expired)."""
        row = self._db.one("SELECT reserved FROM risk_decisions WHERE txn_id = :txn_id", {"txn_id": txn_id})
        if row is None or not row["reserved"]:
            return
        self.take_back(tuple(r) for r in orjson.loads(row["reserved"]))
        self._db.execute("UPDATE risk_decisions SET reserved = NULL WHERE txn_id = :txn_id", {"txn_id": txn_id})


class DryLedger(RiskLedger):
    """The same view for `kswitch risk explain`: reads counters and lists, locks and writes nothing."""

    _remembers = False  # a reader's connection: it reads the tables as committed

    def read(self, keys: Iterable[tuple[str, str]], names: Iterable[str]) -> tuple[list[BlockEntry], dict[str, Window]]:
        entries = super().read(keys, ())[0]
        ordered = sorted(set(names))
        if not ordered:
            return entries, {}
        terms, params = in_list("name", ordered)
        rows = self._db.all(f"SELECT name, slots, expires_at FROM risk_windows WHERE name IN {terms}", params)
        found = {row["name"]: _window(row["name"], row["slots"], row["expires_at"]) for row in rows}
        return entries, {name: found.get(name) or Window(name, []) for name in ordered}

    def save(self, windows: Iterable[Window]) -> None:
        return None

    def hold(self, kind: str, value: str, shown: str, source: str, expires_at: int) -> None:
        return None

    def decide(self, txn_id: str, action: str, rule: str | None, matches: list[Mapping[str, Any]],
               reserved: Sequence[Reservation] = ()) -> None:
        return None


def _forget_lists(db: Db) -> None:
    """The blocklist changes: what the writer remembers of it goes (its counters stay right)."""
    memo: _Memo | None = db.memo.get("risk")
    if memo is not None:
        memo.listed.clear()


def _packed_reservations(reserved: Sequence[Reservation]) -> Derived | None:
    """Counter names the switch built (`Derived`) and integers: nothing the card-data guard need scan."""
    return Derived(orjson.dumps(reserved).decode()) if reserved else None


def _entry(row: Mapping[str, Any]) -> BlockEntry:
    expires = row["expires_at"]
    return BlockEntry(row["kind"], row["value"], row["shown"], row["source"], int(row["created_at"]),
                      None if expires is None else int(expires))


class RiskApi(JournalBase):
    """The journal's risk methods (mixed into `switch.journal.Journal`)."""

    def risk_unit(self, work: Callable[[RiskLedger], T], now: float) -> defer.Deferred[T]:
        """Run ``work`` in one writer transaction; fires once it is durable."""
        now_us = int(now * 1_000_000)
        return self._writer.submit(lambda db: work(RiskLedger(db, now_us)))

    def risk_dry_run(self, work: Callable[[RiskLedger], T], now: float) -> defer.Deferred[T]:
        """Run ``work`` against the risk tables as they are, changing nothing (`kswitch risk explain`)."""
        now_us = int(now * 1_000_000)
        return self._readers.read(lambda db: work(DryLedger(db, now_us)))

    def risk_block(self, kind: str, value: str, shown: str, source: str) -> defer.Deferred[bool]:
        """Block permanently (until unblocked); fires False if it already was."""
        now = self._now()

        def unit(db: Db) -> bool:
            row = db.one("SELECT expires_at FROM risk_blocklist WHERE kind = :kind AND value = :value",
                         {"kind": kind, "value": value})
            if row is not None and row["expires_at"] is None:
                return False
            _forget_lists(db)
            db.execute("DELETE FROM risk_blocklist WHERE kind = :kind AND value = :value",
                       {"kind": kind, "value": value})
            db.execute("INSERT INTO risk_blocklist (kind, value, shown, source, created_at, expires_at) "
                       "VALUES (:kind, :value, :shown, :source, :now, NULL)",
                       {"kind": kind, "value": value, "shown": shown, "source": source, "now": now})
            return True

        return self._writer.submit(unit)

    def risk_unblock(self, kind: str, value: str) -> defer.Deferred[bool]:
        """Remove an entry (or a hold); fires False if there was none."""
        def unit(db: Db) -> bool:
            _forget_lists(db)
            return db.execute("DELETE FROM risk_blocklist WHERE kind = :kind AND value = :value",
                              {"kind": kind, "value": value}) > 0

        return self._writer.submit(unit)

    def risk_blocklist(self) -> defer.Deferred[list[BlockEntry]]:
        """Every live entry, permanent ones and unexpired holds."""
        now = self._now()
        return self._readers.read(lambda db: [_entry(r) for r in db.all(
            "SELECT * FROM risk_blocklist WHERE expires_at IS NULL OR expires_at > :now ORDER BY kind, shown",
            {"now": now})])

    def risk_decision(self, txn_id: str) -> defer.Deferred[dict[str, Any] | None]:
        """The journalled decision for a payment: action, rule, and the matches with counter values."""

        def work(db: Db) -> dict[str, Any] | None:
            row = db.one("SELECT * FROM risk_decisions WHERE txn_id = :txn_id", {"txn_id": txn_id})
            if row is None:
                return None
            return {"action": row["action"], "rule": row["rule"], "matches": json.loads(row["matches"])}

        return self._readers.read(work)

    def purge_risk_counters(self) -> defer.Deferred[int]:
        """Drop counter windows and holds that have expired; fires with how many rows went."""
        now = self._now()

        def unit(db: Db) -> int:
            db.flush()  # the counters written with this batch go first; then all are read again from the table
            db.memo.pop("risk", None)
            gone = db.execute("DELETE FROM risk_windows WHERE expires_at <= :now", {"now": now})
            return gone + db.execute("DELETE FROM risk_blocklist WHERE expires_at <= :now", {"now": now})

        return self._writer.submit(unit)
