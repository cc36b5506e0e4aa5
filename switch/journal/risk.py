"""The risk stage's durable state: counters per rule window, the blocklist, and decisions.

Why here: velocity and cumulative limits must survive restarts and stay exact when
payments race.  A counter is one
row (`Window`) holding its slots: a slot is a slice of time (a tenth of the rule's
window, or a calendar day) with the count and amount added in it, so a window slides
slot by slot instead of resetting.  An evaluation reads every counter it may touch
(`RiskLedger.windows`), checks and adds, and writes what changed (`RiskLedger.save`) in
one writer transaction, and the journal has one writer: no other payment can read a
counter between a check and its add, so two payments never both take the last unit of a
limit, and the counts a payment bumped before it was blocked are simply not kept.  That writer transaction
is the payment's own (`Journal.create_screened`, `Journal.transition`'s ``risk``), so
the stage adds no commit to an authorization, and its decision is journalled in the payment's
own row (``transactions.risk``: `ScreeningLedger`), with the cumulative counts it holds
(``reserved``), so they can be given back when it ends without money, even after a restart
(`RiskLedger.give_back`).  The journal's writer is the only one to count (one node holds
the journal's lease), so its memory is what it counts in and an authorization's counts are
journalled in its own row too: the common payment reads and writes no risk row, on either
backend (`switch.journal.riskmemo` says why that stays exact across rollbacks, failed commits,
restarts, crashes and an operator's changes beside it).

Blocklist values are what the rules compare: a card as its keyed PAN hash (base32), a BIN,
an IP address or CIDR, a device id, an email hash, a customer id; ``shown`` is what an
operator may see (a masked PAN).  An entry with ``expires_at`` is a hold (the
card-testing guard's), gone when it expires.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

import orjson
from twisted.internet import defer

from switch.journal.base import JournalBase
from switch.journal.db import Db, in_list
from switch.journal.guard import Derived
from switch.journal.riskmemo import BlockEntry, Memo, entry_of, live_entry, memo_for, restore, scan
from switch.journal.riskwindow import Add, Reservation, Window, stored_window
from switch.journal.units import Call, shared

__all__ = ["Add", "BlockEntry", "Decision", "DryLedger", "Reservation", "RiskApi", "RiskLedger", "Screened",
           "ScreeningLedger", "Window", "fold_journalled_counts", "live_entry", "stored_window"]

T = TypeVar("T")


class Screened(Protocol):
    """A risk verdict as `Journal.create_screened` reads it."""

    @property
    def journal_as(self) -> str:
        """``send``, ``refuse`` or ``apart`` (see `Journal.create_screened`)."""
        ...


_WINDOWS = ("SELECT 'w' AS src, name AS kind, '' AS value, '' AS shown, '' AS source, 0 AS created_at, expires_at, "
            "slots, through FROM ")
_BLOCKED = ("SELECT 'b' AS src, kind, value, shown, source, created_at, expires_at, NULL AS slots, 0 AS through "
            "FROM risk_blocklist WHERE value = :v{}")


@functools.lru_cache(maxsize=64)
def _names(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(count))


@functools.lru_cache(maxsize=256)
def _read_sql(names: int, values: int) -> str:
    # one branch a name: an index lookup each, cheaper than an IN list's temporary table on SQLite
    parts = [_WINDOWS + f"risk_windows WHERE name = :n{i}" for i in range(names)]
    parts += [_BLOCKED.format(i) for i in range(values)]
    return " UNION ALL ".join(parts)


_SAVE_ONE = ("INSERT INTO risk_windows (name, slots, expires_at, through) VALUES (:name, :slots, :expires_at, "
             ":through) ON CONFLICT (name) DO UPDATE SET slots = excluded.slots, expires_at = excluded.expires_at, "
             "through = excluded.through")


class RiskLedger:
    """One evaluation's view of the risk tables, inside one writer transaction."""

    def __init__(self, db: Db, now_us: int) -> None:
        self._db = db
        self.now_us = now_us

    def shared(self, key: Hashable) -> Any:
        """What the journal shared with its writer under ``key`` (`switch.journal.units.shared`): the risk
        rules a unit names rather than carries."""
        return shared(self._db, key)

    def blocked(self, keys: Iterable[tuple[str, str]]) -> list[BlockEntry]:
        """The live entries among ``keys`` (kind, value)."""
        wanted = list(dict.fromkeys(keys))
        listed = self.lookup([value for _, value in wanted], ())[0]
        return [e for kind, value in wanted if (e := live_entry(listed.get(value, ()), kind, self.now_us))]

    def windows(self, names: Iterable[str]) -> dict[str, Window]:
        """The counters ``names``, as the writer counts them."""
        return self.lookup((), names)[1]

    def lookup(self, values: Iterable[str | None], names: Iterable[str | None],
               horizon_us: int = 0) -> tuple[Mapping[str, Sequence[BlockEntry]], dict[str, Window]]:
        """The blocklist entries of ``values``, by value (of any kind, expired holds included: `live_entry`
        picks), and the counters ``names``, in one statement (None among either: nothing to read).
        What a rule reads and then adds to can change under no one else until this unit commits, so a
        limit checked on it holds across concurrent payments: the writer's memory (`Memo`) is what it
        counts in, and another connection's change is seen at the next batch and cannot land inside
        one (`Dialect.risk_version`), so a counter or a blocklist value is read once, not per payment
        (``horizon_us``: how far back payments' adds may still count, for a memory built now)."""
        if self._remembers:
            self.memo = memo = memo_for(self._db, self.now_us, horizon_us)
            return self._complete(memo, names) if memo.complete else self._remembered(memo, values, names)
        wanted = list(dict.fromkeys(value for value in values if value is not None))
        listed: dict[str, list[BlockEntry]] = {}
        if wanted:
            for row in self._db.all(_read_sql(0, len(wanted)), dict(zip(_names("v", len(wanted)), wanted))):
                listed.setdefault(row["value"], []).append(entry_of(row))
        return listed, {}

    def _remembered(self, memo: Memo, values: Iterable[str | None],
                    names: Iterable[str | None]) -> tuple[Mapping[str, Sequence[BlockEntry]], dict[str, Window]]:
        """`lookup` from the writer's memory, reading what it lacks in one statement (when it does not hold
        every live row: `_complete` when it does)."""
        db, remembered, listed = self._db, memo.windows, memo.listed
        names = [name for name in dict.fromkeys(names) if name is not None]
        names_read = [name for name in names if name not in remembered]
        values_read = [value for value in dict.fromkeys(values) if value is not None and value not in listed]
        if names_read or values_read:
            params: dict[str, Any] = dict(zip(_names("n", len(names_read)), names_read))
            params.update(zip(_names("v", len(values_read)), values_read))
            found: dict[str, list[BlockEntry]] = {}
            for row in db.all(_read_sql(len(names_read), len(values_read)), params):
                if row["src"] == "w":
                    remembered[row["kind"]] = memo.loaded(row["kind"], row["slots"], row["expires_at"], row["through"])
                else:
                    found.setdefault(row["value"], []).append(entry_of(row))
            for name in names_read:
                if name not in remembered:
                    remembered[name] = memo.loaded(name, None, 0, 0)
                db.undo.append(functools.partial(remembered.pop, name, None))  # read again if this rolls back
            for value in values_read:
                listed[value] = found.get(value, [])
                db.undo.append(functools.partial(listed.pop, value, None))
        windows = {}
        for name in names:
            window = windows[name] = remembered[name]
            db.undo.append(window.restorer())
        return listed, windows

    def _complete(self, memo: Memo,
                  names: Iterable[str | None]) -> tuple[Mapping[str, Sequence[BlockEntry]], dict[str, Window]]:
        """`lookup` when the writer's memory holds every live row: what is not in it is nowhere."""
        remembered = memo.windows
        windows = {}
        saved = []
        for name in names:
            if name is None:
                continue
            window = remembered.get(name)
            if window is None:  # nothing counted yet: no row either
                window = remembered[name] = Window(name, [])
                saved.append((window, None))
            else:
                saved.append((window, window.state()))
            windows[name] = window
        if saved:  # one undo for the unit's counters: a rolled-back unit's adds go with it
            self._db.undo.append(functools.partial(restore, remembered, saved))
        return memo.listed, windows

    _remembers = True
    memo: Memo | None = None
    """The writer's memory, once `lookup` has read through it."""

    def save(self, windows: Iterable[Window]) -> None:
        """Write back the windows that changed, with the batch's other rows (`Db.insert_later`): the writer
        reads a counter back from memory (`Memo`), not from the table; each row says which of the adds
        journalled with payments it holds."""
        changed = [w for w in windows if w.changed]
        if not changed:
            return
        memo: Memo | None = self._db.memo.get("risk")
        through = memo.seq if memo is not None else 0
        for w in changed:
            w.changed = False
            w.through = through
            self._db.insert_later(_SAVE_ONE, {"name": w.name, "slots": w.packed(), "expires_at": w.expires_at,
                                              "through": through})

    def hold(self, kind: str, value: str, shown: str, source: str, expires_at: int) -> None:
        """Block ``value`` until ``expires_at`` (a later hold extends it; a permanent entry stays)."""
        db = self._db
        db.execute(
            "INSERT INTO risk_blocklist (kind, value, shown, source, created_at, expires_at) "
            "VALUES (:kind, :value, :shown, :source, :now, :expires) ON CONFLICT (kind, value) DO UPDATE "
            "SET expires_at = excluded.expires_at, source = excluded.source "
            "WHERE risk_blocklist.expires_at IS NOT NULL AND risk_blocklist.expires_at < excluded.expires_at",
            {"kind": kind, "value": value, "shown": shown, "source": source, "now": self.now_us,
             "expires": expires_at})
        memo: Memo | None = db.memo.get("risk")
        if memo is None:
            return
        before = memo.listed.pop(value, None)  # read again, hold included
        if memo.complete:
            memo.listed[value] = [entry_of(row) for row in db.all("SELECT * FROM risk_blocklist WHERE value = :value",
                                                                  {"value": value})]
            db.undo.append(functools.partial(memo.listed.__setitem__, value, before or []))

    def decide(self, txn_id: str, action: str, rule: str | None, matches: list[Mapping[str, Any]],
               reserved: Sequence[Reservation] = ()) -> None:
        """Journal a payment's decision in a row of its own, with the cumulative counts it holds (`give_back`
        returns them): for a decision not journalled with its payment's row (`Screening`'s, apart)."""
        self._db.insert_later(
            "INSERT INTO risk_decisions (txn_id, action, rule, matches, decided_at, reserved) "
            "VALUES (:txn_id, :action, :rule, :matches, :now, :reserved)",
            {"txn_id": txn_id, "action": action, "rule": rule, "matches": orjson.dumps(matches).decode() if matches
             else "[]", "now": self.now_us, "reserved": _packed_reservations(reserved)})

    def record(self, txn_id: str, decision: Decision, windows: Iterable[Window], in_row: bool) -> None:
        """Journal what a payment's screening decided and counted: here, the counters' rows and a decision
        row (``in_row``: whether the payment's own row could hold it, which only `ScreeningLedger` uses)."""
        self.save(windows)
        self.decide(txn_id, decision.action, decision.rule, decision.matches, decision.reserved)

    def allowed(self, txn_id: str, adds: Sequence[Add], windows: Iterable[Window]) -> None:
        """`record` the decision most payments get: allowed, nothing matched, nothing held."""
        self.record(txn_id, Decision("allow", None, [], (), adds), windows, True)

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
        row = self._db.one("SELECT risk FROM transactions WHERE txn_id = :txn_id", {"txn_id": txn_id})
        if row is not None and row["risk"]:
            decision = orjson.loads(row["risk"])
            if decision.get("reserved"):
                self.take_back(tuple(r) for r in decision["reserved"])
                decision["reserved"] = []
                self._db.execute("UPDATE transactions SET risk = :risk WHERE txn_id = :txn_id",
                                 {"risk": Derived(orjson.dumps(decision).decode()), "txn_id": txn_id})
            return
        row = self._db.one("SELECT reserved FROM risk_decisions WHERE txn_id = :txn_id", {"txn_id": txn_id})
        if row is None or not row["reserved"]:
            return
        self.take_back(tuple(r) for r in orjson.loads(row["reserved"]))
        self._db.execute("UPDATE risk_decisions SET reserved = NULL WHERE txn_id = :txn_id", {"txn_id": txn_id})


class ScreeningLedger(RiskLedger):
    """The view of a screening inside its payment's first commit (`Journal.create_screened`): the decision
    goes into the payment's row (``row``, its ``risk`` column), and so do the counts the
    payment added (their counters' rows are not written: see `switch.journal.riskmemo`)."""

    row: Derived | None = None

    def record(self, txn_id: str, decision: Decision, windows: Iterable[Window], in_row: bool) -> None:
        if not in_row:
            super().record(txn_id, decision, windows, in_row)
            return
        if decision.action == "allow" and not decision.matches and not decision.reserved:
            self.allowed(txn_id, decision.adds, windows)
            return
        memo = self.memo
        if memo is None:
            self.save(windows)
            self.row = Derived(orjson.dumps(_decision_text(decision)).decode())
            return
        n = self._in_row(memo, decision.adds, windows)
        self.row = Derived(orjson.dumps({**_decision_text(decision), "n": n, "adds": decision.adds}).decode())

    def allowed(self, txn_id: str, adds: Sequence[Add], windows: Iterable[Window]) -> None:
        memo = self.memo
        if memo is None:
            self.save(windows)
            self.row = _ALLOWED_ROW
            return
        n = self._in_row(memo, adds, windows)  # the common decision: a fixed text and the adds
        self.row = Derived(f'{_ALLOWED_HEAD},"n":{n},"adds":{orjson.dumps(adds).decode()}}}')

    def _in_row(self, memo: Memo, adds: Sequence[Add], windows: Iterable[Window]) -> int:
        """The number of the payment's adds, remembered; their counters' rows stay unwritten (its row has them)."""
        n = memo.number(self.now_us)
        memo.journalled(self._db, n, adds)
        for w in windows:
            w.changed = False
        return n


_ALLOWED_ROW = Derived('{"action":"allow","rule":null,"matches":[],"reserved":[]}')
"""The decision most payments get, as its row holds it (followed by what it counted)."""
_ALLOWED_HEAD = _ALLOWED_ROW[:-1]


def _decision_text(decision: Decision) -> dict[str, Any]:
    return {"action": decision.action, "rule": decision.rule, "matches": decision.matches,
            "reserved": decision.reserved}


class Decision(NamedTuple):
    """What a screening journals: the action, the deciding rule, the matches with the counter values seen,
    the cumulative counts the payment holds (`give_back`) and everything it counted (``adds``).  (A named
    tuple: one is built for every screened payment, and it builds in a fraction of a frozen dataclass's time.)"""

    action: str
    rule: str | None
    matches: list[Mapping[str, Any]]
    reserved: Sequence[Reservation] = ()
    adds: Sequence[Add] = ()


class DryLedger(RiskLedger):
    """The same view for `kswitch risk explain`: reads counters and lists, locks and writes nothing."""

    _remembers = False  # a reader's connection: it reads the tables as committed

    def lookup(self, values: Iterable[str | None], names: Iterable[str | None],
               horizon_us: int = 0) -> tuple[Mapping[str, Sequence[BlockEntry]], dict[str, Window]]:
        listed = super().lookup(values, ())[0]
        ordered = sorted({name for name in names if name is not None})
        if not ordered:
            return listed, {}
        return listed, _counted(self._db, ordered, self.now_us, horizon_us)

    def save(self, windows: Iterable[Window]) -> None:
        return None

    def hold(self, kind: str, value: str, shown: str, source: str, expires_at: int) -> None:
        return None

    def decide(self, txn_id: str, action: str, rule: str | None, matches: list[Mapping[str, Any]],
               reserved: Sequence[Reservation] = ()) -> None:
        return None

    def record(self, txn_id: str, decision: Decision, windows: Iterable[Window], in_row: bool) -> None:
        return None


def _stored(db: Db, names: Sequence[str]) -> dict[str, Window]:
    """Counters ``names`` as their rows hold them."""
    terms, params = in_list("name", names)
    rows = db.all(f"SELECT name, slots, expires_at, through FROM risk_windows WHERE name IN {terms}", params)
    found = {row["name"]: stored_window(row["name"], row["slots"], row["expires_at"], row["through"]) for row in rows}
    return {name: found.get(name) or Window(name, []) for name in names}


def _counted(db: Db, names: Sequence[str], now_us: int, horizon_us: int) -> dict[str, Window]:
    """Counters ``names`` as the writer counts them: their rows and the adds journalled since with
    the payments of the last ``horizon_us`` (a reader's own reading, remembered nowhere)."""
    memo = Memo(None, 0, 0, 0, now_us - horizon_us)
    scan(db, memo, now_us, now_us - horizon_us, None)
    return {name: memo.merged(window) for name, window in _stored(db, names).items()}


def fold_journalled_counts(db: Db, now_us: int) -> int:
    """Write into the counters' rows the adds journalled with payments (`switch.journal.riskmemo`), ``through``
    the last of them: a copied journal starts with counter rows that hold every count by themselves (the
    writer counts the same either way).  How many counters were written."""
    memo = Memo(None, 0, 0, 0, 0)
    top = scan(db, memo, now_us, 0, None)
    names = sorted(memo.log)
    for i in range(0, len(names), 500):
        for window in _stored(db, names[i:i + 500]).values():
            window = memo.merged(window)
            db.execute(_SAVE_ONE, {"name": window.name, "slots": window.packed(), "expires_at": window.expires_at,
                                   "through": top})
    return len(names)


def _forget_lists(db: Db) -> None:
    """The blocklist changes: what the writer remembers of it goes (its counters stay right)."""
    memo: Memo | None = db.memo.get("risk")
    if memo is not None:
        memo.forget_lists()


def _ledger_work(db: Db, work: Callable[[RiskLedger], T], now_us: int) -> T:
    return work(RiskLedger(db, now_us))


def _block(db: Db, kind: str, value: str, shown: str, source: str, now: int) -> bool:
    row = db.one("SELECT expires_at FROM risk_blocklist WHERE kind = :kind AND value = :value",
                 {"kind": kind, "value": value})
    if row is not None and row["expires_at"] is None:
        return False
    _forget_lists(db)
    db.execute("DELETE FROM risk_blocklist WHERE kind = :kind AND value = :value", {"kind": kind, "value": value})
    db.execute("INSERT INTO risk_blocklist (kind, value, shown, source, created_at, expires_at) "
               "VALUES (:kind, :value, :shown, :source, :now, NULL)",
               {"kind": kind, "value": value, "shown": shown, "source": source, "now": now})
    return True


def _unblock(db: Db, kind: str, value: str) -> bool:
    _forget_lists(db)
    return db.execute("DELETE FROM risk_blocklist WHERE kind = :kind AND value = :value",
                      {"kind": kind, "value": value}) > 0


def _purge(db: Db, now: int) -> int:
    memo: Memo | None = db.memo.get("risk")
    if memo is not None:
        memo.forget(db)  # the counters queued with this batch go first; all are read again after
    db.flush()
    gone = db.execute("DELETE FROM risk_windows WHERE expires_at <= :now", {"now": now})
    return gone + db.execute("DELETE FROM risk_blocklist WHERE expires_at <= :now", {"now": now})


def _packed_reservations(reserved: Sequence[Reservation]) -> Derived | None:
    """Counter names the switch built (`Derived`) and integers: nothing the card-data guard need scan."""
    return Derived(orjson.dumps(reserved).decode()) if reserved else None


class RiskApi(JournalBase):
    """The journal's risk methods (mixed into `switch.journal.Journal`)."""

    def risk_unit(self, work: Callable[[RiskLedger], T], now: float) -> defer.Deferred[T]:
        """Run ``work`` in one writer transaction; fires once it is durable.  ``work`` goes to the writer as
        a unit does (`switch.journal.units`): what it found or did comes back as its result."""
        return self._writer.submit(Call(_ledger_work, work, int(now * 1_000_000)))

    def risk_dry_run(self, work: Callable[[RiskLedger], T], now: float) -> defer.Deferred[T]:
        """Run ``work`` against the risk tables as they are, changing nothing (`kswitch risk explain`)."""
        now_us = int(now * 1_000_000)
        return self._readers.read(lambda db: work(DryLedger(db, now_us)))

    def risk_block(self, kind: str, value: str, shown: str, source: str) -> defer.Deferred[bool]:
        """Block permanently (until unblocked); fires False if it already was."""
        return self._writer.submit(Call(_block, kind, value, shown, source, self._now()))

    def risk_unblock(self, kind: str, value: str) -> defer.Deferred[bool]:
        """Remove an entry (or a hold); fires False if there was none."""
        return self._writer.submit(Call(_unblock, kind, value))

    def risk_blocklist(self) -> defer.Deferred[list[BlockEntry]]:
        """Every live entry, permanent ones and unexpired holds."""
        now = self._now()
        return self._readers.read(lambda db: [entry_of(r) for r in db.all(
            "SELECT * FROM risk_blocklist WHERE expires_at IS NULL OR expires_at > :now ORDER BY kind, shown",
            {"now": now})])

    def risk_decision(self, txn_id: str) -> defer.Deferred[dict[str, Any] | None]:
        """The journalled decision for a payment: action, rule, and the matches with counter values."""

        def work(db: Db) -> dict[str, Any] | None:
            row = db.one("SELECT risk FROM transactions WHERE txn_id = :txn_id", {"txn_id": txn_id})
            if row is not None and row["risk"]:
                decision = json.loads(row["risk"])
                return {"action": decision["action"], "rule": decision["rule"], "matches": decision["matches"]}
            row = db.one("SELECT * FROM risk_decisions WHERE txn_id = :txn_id", {"txn_id": txn_id})
            if row is None:  # journalled apart from its payment's row (or before migration 13)
                return None
            return {"action": row["action"], "rule": row["rule"], "matches": json.loads(row["matches"])}

        return self._readers.read(work)

    def purge_risk_counters(self) -> defer.Deferred[int]:
        """Drop counter windows and holds that have expired; fires with how many rows went."""
        return self._writer.submit(Call(_purge, self._now()))
