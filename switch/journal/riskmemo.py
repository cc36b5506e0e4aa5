"""What the journal writer remembers of the risk state, and how it rebuilds it (`Memo`).

Why: an authorization's screening must not cost statements of its own.  The journal's writer
is the only one to count (one node holds the journal's lease), so its memory can be what the
stage reads and counts in, with the journal as its durable source:

* what a payment counted (its adds) is journalled in the payment's own row
  (``transactions.risk``, numbered: ``n``) by the INSERT that journals the payment, instead
  of a counter row written back per payment;
* a counter's row (``risk_windows``) is written only off that path (a bank decline, counts
  given back, a fold, `RiskLedger.save` of any other unit), with the number of the last add
  it holds (``through``);
* so a counter is its row plus the adds numbered after its ``through``: that is how the writer
  rebuilds its memory when it starts (or reconnects), by reading the risk columns of the
  payments of the last window (`memo_for`'s ``horizon_us``), and how it reads a counter again
  after dropping it (another connection committed: an operator's change beside the switch).

Another connection's change is seen at the writer's next batch, by `Dialect.risk_version`:
SQLite's count of other connections' commits; on PostgreSQL a version that triggers on the
risk tables bump for any connection but the one that claimed the memory (migration 14),
share-locked for the batch so such a change and a batch never interleave.  Exact across
rollbacks because every change to the memory inside a transaction registers its undo with
the `Db` (`Db.undo`), across restarts and crashes because nothing is remembered that is not in
a committed row, and across a failed COMMIT because a new connection starts empty.  Numbers grow
with the wall clock (``max(last + 1, now µs)``), so an add journalled before the memory was built
never carries a number above the ones given after it, as long as the clock does not go back by
more than a window.
"""

from __future__ import annotations

import functools
import itertools
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from switch.journal.db import Db
from switch.journal.riskwindow import Add, Window, stored_window

Logged = tuple[int, int, int, int, int]
"""One add as remembered: (number, slot start µs, count, amount, slot expiry µs)."""

REMEMBERED = 100_000
"""Counters and blocklist values the writer keeps in memory at most (past that it forgets them: they
are read again from their rows), and adds past which it drops those that have left their windows
(the adds of the last window stay: with a calendar-day rule, a day's)."""

_SCAN = "SELECT risk FROM transactions WHERE created_at >= :since AND risk IS NOT NULL"
_LIVE_WINDOWS = "SELECT name, slots, expires_at, through FROM risk_windows WHERE expires_at > :now LIMIT :limit"
_LIVE_ENTRIES = "SELECT * FROM risk_blocklist WHERE expires_at IS NULL OR expires_at > :now LIMIT :limit"


class Adds:
    """One counter's adds as the writer remembers them (`Logged`): five 64-bit integers a piece in one array.

    Why: every payment of a window's horizon has one for each counter it counts in, whether it is answered or
    still waiting at its bank, and a tuple of five ints took about 200 bytes of the writer's memory where this
    takes 40 (`bench/hold.sh`, with the risk rules on).  Numbers and times are microseconds and amounts at most
    `switch.journal.models.MAX_AMOUNT`: all within 64 bits."""

    __slots__ = ("_values",)

    def __init__(self, entries: Iterable[Logged] = ()) -> None:
        self._values = array("q", itertools.chain.from_iterable(entries))

    def append(self, entry: Logged) -> None:
        self._values.extend(entry)

    def pop(self) -> None:
        """Forget the last add (its transaction rolled back)."""
        del self._values[-5:]

    def __iter__(self) -> Iterator[Logged]:
        values = iter(self._values)
        return zip(values, values, values, values, values)

    def __len__(self) -> int:
        return len(self._values) // 5

    def live(self, now_us: int) -> Adds:
        """The adds whose slot has not left its window at ``now_us``."""
        return Adds(entry for entry in self if entry[4] > now_us)


@dataclass(frozen=True, slots=True)
class BlockEntry:
    kind: str
    value: str
    shown: str
    source: str
    created_at: int
    expires_at: int | None


def live_entry(entries: Iterable[BlockEntry], kind: str, now_us: int) -> BlockEntry | None:
    """The entry of ``kind`` among a value's ``entries`` that is in force (a hold that has expired no longer
    blocks)."""
    for e in entries:
        if e.kind == kind and (e.expires_at is None or e.expires_at > now_us):
            return e
    return None


def entry_of(row: Mapping[str, Any]) -> BlockEntry:
    expires = row["expires_at"]
    return BlockEntry(row["kind"], row["value"], row["shown"], row["source"], int(row["created_at"]),
                      None if expires is None else int(expires))


@dataclass(slots=True)
class Memo:
    """The counters and blocklist values the writer has read (``windows``, ``listed``: dropped and
    read again at will), and every add journalled in a payment's row since the memory was built
    (``log``, by counter: what a counter read again from its row needs on top)."""

    version: object  # `Dialect.risk_version` when ``windows`` and ``listed`` were last known right
    checked: int  # `Db.began` when the version was last read: once per writer batch
    seq: int  # the last add's number given
    base_seq: int  # adds numbered up to here were read from the journal, later ones counted here
    scanned_from: int  # µs: the payments created since were read into ``log``
    windows: dict[str, Window] = field(default_factory=dict)
    listed: dict[str, list[BlockEntry]] = field(default_factory=dict)
    log: dict[str, Adds] = field(default_factory=dict)
    logged: int = 0
    prune_at: int = REMEMBERED
    complete: bool = False
    """Every live counter row and blocklist entry is in ``windows`` and ``listed``, so what is not there
    is nowhere (a card, IP or device seen for the first time costs no statement); false when they are
    too many to keep (`REMEMBERED`): then what is missing is read, and remembered up to that many."""
    overflow: bool = False

    def number(self, now_us: int) -> int:
        """The next add's number (a rolled-back one leaves a gap, which is harmless)."""
        self.seq = n = max(self.seq + 1, now_us)
        return n

    def journalled(self, db: Db, n: int, adds: Sequence[Add]) -> None:
        """Remember the adds payment number ``n`` journals in its row (its windows hold them already)."""
        if not adds:
            return
        touched = []
        for name, start, count, amount, expires in adds:
            entries = self.adds(name)
            entries.append((n, start, count, amount, expires))
            touched.append(entries)
        db.undo.append(functools.partial(self._unlog, touched))  # one undo for the payment's adds
        self.logged += len(adds)

    def adds(self, name: str) -> Adds:
        """Counter ``name``'s adds, an empty record made for it if it has none yet."""
        entries = self.log.get(name)
        if entries is None:
            entries = self.log[name] = Adds()
        return entries

    def _unlog(self, touched: list[Adds]) -> None:
        for entries in reversed(touched):
            entries.pop()
        self.logged -= len(touched)

    def loaded(self, name: str, slots: str | None, expires_at: int, through: int) -> Window:
        """Counter ``name`` from its row and the adds journalled since the row was written."""
        return self.merged(stored_window(name, slots, expires_at, through))

    def merged(self, window: Window) -> Window:
        """``window`` as read from its row, with the adds journalled since."""
        for n, start, count, amount, expires in self.log.get(window.name, ()):
            if n > window.through:
                window.add(start, count, amount, 0, expires)
        window.changed = False
        return window

    def forget(self, db: Db) -> None:
        """Drop the counters and lists (read again from their rows, with the queued ones written first)."""
        db.flush()
        self.windows.clear()
        self.listed.clear()
        self.complete = False

    def forget_lists(self) -> None:
        """The blocklist changes here: its values are read again (all of them, at the next `memo_for`)."""
        self.listed.clear()
        self.complete = False

    def load(self, db: Db, now_us: int) -> None:
        """Read every live counter row (with the adds journalled since) and blocklist entry, unless they are
        too many to keep: then `complete` stays false."""
        self.forget(db)
        db.undo.append(functools.partial(db.memo.pop, "risk", None))  # what this transaction wrote may go
        rows = db.all(_LIVE_WINDOWS, {"now": now_us, "limit": REMEMBERED})
        entries = db.all(_LIVE_ENTRIES, {"now": now_us, "limit": REMEMBERED})
        if len(rows) >= REMEMBERED or len(entries) >= REMEMBERED:
            self.overflow = True
            return
        windows, listed = self.windows, self.listed
        for row in rows:
            windows[row["name"]] = self.loaded(row["name"], row["slots"], row["expires_at"], row["through"])
        for name in self.log:
            if name not in windows:
                windows[name] = self.merged(Window(name, []))
        for row in entries:
            listed.setdefault(row["value"], []).append(entry_of(row))
        self.complete = True

    def prune(self, now_us: int) -> None:
        """Drop the adds and counters whose slots have all left their windows: they count nowhere any more
        (a counter's row expires no later than the counter in memory)."""
        kept = 0
        for name in list(self.log):
            live = self.log[name].live(now_us)
            if live:
                self.log[name] = live
                kept += len(live)
            else:
                del self.log[name]
        self.logged = kept
        windows = self.windows
        for name in [name for name, w in windows.items() if w.expires_at <= now_us]:
            del windows[name]
        self.prune_at = max(REMEMBERED, 2 * (kept + len(windows)))  # not again at once when most are live


def restore(remembered: dict[str, Window], saved: list[tuple[Window, tuple[Any, ...] | None]]) -> None:
    """Put the counters a rolled-back unit read back as they were (forget those it began): ``saved`` holds
    each with its `Window.state` when read, None for one it began."""
    for window, state in saved:
        if state is None:
            remembered.pop(window.name, None)
        else:
            window.restore(state)


def memo_for(db: Db, now_us: int, horizon_us: int) -> Memo:
    """The writer's memory, built when missing from the rows of the last ``horizon_us``, read again when
    another connection may have changed them (checked once per writer batch), and reaching back
    further when a caller's ``horizon_us`` does (rules reloaded with a longer window)."""
    memo: Memo | None = db.memo.get("risk")
    if memo is None:
        db.flush()
        row = db.one("SELECT MAX(through) AS through FROM risk_windows")
        through = int(row["through"] or 0) if row else 0
        memo = Memo(db.dialect.risk_version(db, True), db.began, 0, 0, now_us - horizon_us)
        top = scan(db, memo, now_us, now_us - horizon_us, None)
        memo.seq = memo.base_seq = max(top, through, now_us)
        db.memo["risk"] = memo
        memo.load(db, now_us)
        return memo
    if memo.checked != db.began:
        memo.checked = db.began
        if db.dialect.risk_version(db, False) != memo.version:
            memo.forget(db)
            memo.version = db.dialect.risk_version(db, True)
        if memo.logged + len(memo.windows) >= memo.prune_at:  # at a batch's start: no undo holds them yet
            memo.prune(now_us)
    if horizon_us and now_us - horizon_us < memo.scanned_from:
        scan(db, memo, now_us, now_us - horizon_us, memo.scanned_from)
        memo.scanned_from = now_us - horizon_us
        db.undo.append(functools.partial(db.memo.pop, "risk", None))  # rebuilt whole if this rolls back
    if not memo.complete:
        if not memo.overflow:
            memo.load(db, now_us)
        elif len(memo.windows) + len(memo.listed) >= REMEMBERED:
            memo.forget(db)
    return memo


def scan(db: Db, memo: Memo, now_us: int, since: int, until: int | None) -> int:
    """Read into ``memo`` the adds journalled by payments created from ``since`` (to ``until``: then only
    those numbered before the memory was built); the highest number read."""
    sql, params = _SCAN, {"since": since}
    if until is not None:
        sql, params["until"] = sql + " AND created_at < :until", until
    top, upto = 0, memo.base_seq if until is not None else None
    windows = memo.windows
    for row in db.all(sql, params):
        decision: dict[str, Any] = orjson.loads(row["risk"])
        n = decision.get("n")
        if n is None or (upto is not None and n > upto):
            continue
        top = max(top, n)
        for name, start, count, amount, expires in decision.get("adds", ()):
            if expires <= now_us:
                continue
            memo.adds(name).append((n, start, count, amount, expires))
            memo.logged += 1
            window = windows.get(name)
            if window is None and memo.complete:
                window = windows[name] = Window(name, [])
            if window is not None and n > window.through:
                window.add(start, count, amount, 0, expires)
                window.changed = False
    return top
