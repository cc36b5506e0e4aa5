"""The risk stage's durable state: counters per rule window, the blocklist, and decisions.

Why here: velocity and cumulative limits must survive restarts and stay exact when
payments race (or when several nodes share one PostgreSQL journal), so every count is
one atomic ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` on the counter's row, and a
limit is checked *in* that statement (``WHERE count + n <= max``): two payments can
never both take the last unit of a limit.  A window opens with the first payment it
counts and lasts the rule's window (or ends at the end of a calendar day).  The engine's risk stage runs a whole
evaluation as one writer unit through `RiskLedger`, so the counts it bumped for a
payment it then blocks are taken back in the same database transaction.

Blocklist values are what the rules compare: a card as its keyed PAN hash (base32), a BIN,
an IP address or CIDR, a device id, an email hash, a customer id; ``shown`` is what an
operator may see (a masked PAN).  An entry with ``expires_at`` is a hold (the
card-testing guard's), gone when it expires.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet import defer

from switch.journal.base import JournalBase
from switch.journal.db import Db

T = TypeVar("T")

_FRESH = "risk_counters.expires_at <= :now"
_ADD = (
    "INSERT INTO risk_counters (name, window_start, count, amount, expires_at) "
    "VALUES (:name, :now, :count, :amount, :expires) "
    "ON CONFLICT (name) DO UPDATE SET "
    + ", ".join(f"{column} = CASE WHEN {_FRESH} THEN excluded.{column} ELSE {old} END" for column, old in (
        ("window_start", "risk_counters.window_start"), ("count", "risk_counters.count + excluded.count"),
        ("amount", "risk_counters.amount + excluded.amount"), ("expires_at", "risk_counters.expires_at")))
    + f" WHERE {_FRESH} OR (risk_counters.count + excluded.count <= :max_count "
    "AND risk_counters.amount + excluded.amount <= :max_amount) "
    "RETURNING count, amount"
)
_NO_LIMIT = 2**62


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
        keys = list(keys)
        if not keys:
            return []
        params: dict[str, Any] = {"now": self.now_us}
        terms = []
        for i, (kind, value) in enumerate(keys):
            params[f"k{i}"], params[f"v{i}"] = kind, value
            terms.append(f"(kind = :k{i} AND value = :v{i})")
        rows = self._db.all(
            f"SELECT * FROM risk_blocklist WHERE ({' OR '.join(terms)}) "
            "AND (expires_at IS NULL OR expires_at > :now)", params)
        return [_entry(r) for r in rows]

    def add(self, name: str, expires: int, count: int, amount: int,
            max_count: int | None = None, max_amount: int | None = None) -> tuple[int, int] | None:
        """Add to counter ``name`` and return its new (count, amount); None (nothing added) when that
        would pass ``max_count`` or ``max_amount``.  A counter whose window has ended starts a new
        window now, ending at ``expires``: a window opens with the first payment it counts."""
        limit_count = _NO_LIMIT if max_count is None else max_count
        limit_amount = _NO_LIMIT if max_amount is None else max_amount
        if count > limit_count or amount > limit_amount:
            return None
        row = self._db.one(_ADD, {"name": name, "now": self.now_us, "count": count, "amount": amount,
                                  "expires": expires, "max_count": limit_count, "max_amount": limit_amount})
        return None if row is None else (int(row["count"]), int(row["amount"]))

    def take_back(self, name: str, count: int, amount: int, added_at: int | None = None) -> None:
        """Undo an `add` made at ``added_at`` (this unit's time by default); nothing when the counter's
        window has since ended and a new one opened, which never held that add."""
        self._db.execute(
            "UPDATE risk_counters SET count = CASE WHEN count >= :count THEN count - :count ELSE 0 END, "
            "amount = CASE WHEN amount >= :amount THEN amount - :amount ELSE 0 END "
            "WHERE name = :name AND window_start <= :added_at",
            {"name": name, "count": count, "amount": amount,
             "added_at": self.now_us if added_at is None else added_at})

    def seen(self, name: str) -> tuple[int, int]:
        """The (count, amount) of counter ``name``'s current window; (0, 0) when it has none."""
        row = self._db.one("SELECT count, amount FROM risk_counters WHERE name = :name AND expires_at > :now",
                           {"name": name, "now": self.now_us})
        return (0, 0) if row is None else (int(row["count"]), int(row["amount"]))

    def hold(self, kind: str, value: str, shown: str, source: str, expires_at: int) -> None:
        """Block ``value`` until ``expires_at`` (a later hold extends it; a permanent entry stays)."""
        self._db.execute(
            "INSERT INTO risk_blocklist (kind, value, shown, source, created_at, expires_at) "
            "VALUES (:kind, :value, :shown, :source, :now, :expires) ON CONFLICT (kind, value) DO UPDATE "
            "SET expires_at = excluded.expires_at, source = excluded.source "
            "WHERE risk_blocklist.expires_at IS NOT NULL AND risk_blocklist.expires_at < excluded.expires_at",
            {"kind": kind, "value": value, "shown": shown, "source": source, "now": self.now_us,
             "expires": expires_at})

    def decide(self, txn_id: str, action: str, rule: str | None, matches: list[Mapping[str, Any]]) -> None:
        self._db.execute(
            "INSERT INTO risk_decisions (txn_id, action, rule, matches, decided_at) "
            "VALUES (:txn_id, :action, :rule, :matches, :now)",
            {"txn_id": txn_id, "action": action, "rule": rule, "matches": json.dumps(matches, separators=(",", ":")),
             "now": self.now_us})


class DryLedger(RiskLedger):
    """The same view for `kswitch risk explain`: reads counters and lists, writes nothing."""

    def add(self, name: str, expires: int, count: int, amount: int,
            max_count: int | None = None, max_amount: int | None = None) -> tuple[int, int] | None:
        seen_count, seen_amount = self.seen(name)
        total = (seen_count + count, seen_amount + amount)
        if (max_count is not None and total[0] > max_count) or (max_amount is not None and total[1] > max_amount):
            return None
        return total

    def take_back(self, name: str, count: int, amount: int, added_at: int | None = None) -> None:
        return None

    def hold(self, kind: str, value: str, shown: str, source: str, expires_at: int) -> None:
        return None

    def decide(self, txn_id: str, action: str, rule: str | None, matches: list[Mapping[str, Any]]) -> None:
        return None


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
            db.execute("DELETE FROM risk_blocklist WHERE kind = :kind AND value = :value",
                       {"kind": kind, "value": value})
            db.execute("INSERT INTO risk_blocklist (kind, value, shown, source, created_at, expires_at) "
                       "VALUES (:kind, :value, :shown, :source, :now, NULL)",
                       {"kind": kind, "value": value, "shown": shown, "source": source, "now": now})
            return True

        return self._writer.submit(unit)

    def risk_unblock(self, kind: str, value: str) -> defer.Deferred[bool]:
        """Remove an entry (or a hold); fires False if there was none."""
        return self._writer.submit(lambda db: db.execute(
            "DELETE FROM risk_blocklist WHERE kind = :kind AND value = :value", {"kind": kind, "value": value}) > 0)

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
            gone = db.execute("DELETE FROM risk_counters WHERE expires_at <= :now", {"now": now})
            return gone + db.execute("DELETE FROM risk_blocklist WHERE expires_at <= :now", {"now": now})

        return self._writer.submit(unit)
