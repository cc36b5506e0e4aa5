"""The simulated issuer's books: balances, holds, postings and remembered answers, in SQLite.

Every movement of money is a posting row with a business kind (`KINDS`), and every
answer the issuer gave is remembered for duplicate detection, so a checker can read
what the bank did and a restarted banksim answers repeats exactly as before.

One code path for both modes: ``Ledger(accounts)`` keeps everything in an in-memory
SQLite database; ``Ledger(accounts, path)`` in a file (WAL, ``synchronous=FULL``).
The issuer wraps each message in `Ledger.transaction`, which commits before the answer
is written to the network, so a banksim killed at any moment and started again on the
same file still holds every balance, hold, posting and remembered answer.

The writes are synchronous on the reactor thread: banksim is a test tool and a local
SQLite commit per message (an fsync with a file, microseconds in memory) is acceptable
there; the switch itself never does this.

No card number is stored: an account is keyed by `account_key` (a truncated SHA-256
of the card or account number) and shown by its masked number; remembered answers
are kept without field 2 and the request's fingerprint is hashed.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from switch.domain.cardcheck import mask_last4, mask_pan
from switch.tools.banksim.accounts import Account

SCHEMA_VERSION = 2
_UPGRADES = {1: ("ALTER TABLE postings ADD COLUMN business_date TEXT",
                 "ALTER TABLE postings ADD COLUMN settled INTEGER NOT NULL DEFAULT 1")}
"""Statements bringing a file of an older schema version to `SCHEMA_VERSION`."""

HOLD, RELEASE, DEBIT, CREDIT, NONE = "hold", "release", "debit", "credit", "none"
"""What a posting does to its account: held amount up or down, balance down or up, nothing."""

KINDS = {
    "authorization_hold": HOLD,  # 0100 approved: a hold reduces what is available
    "sale_debit": DEBIT,  # 0200 approved
    "refund_credit": CREDIT,  # 0200 with processing code 20 approved
    "completion_debit": DEBIT,  # 0220: the completion amount is debited
    "hold_release": RELEASE,  # the hold a completion consumed
    "hold_expiry": RELEASE,  # a hold still open after the retention period
    "reversal_credit": CREDIT,  # a sale or completion reversed
    "reversal_debit": DEBIT,  # a refund reversed
    "reversal_release": RELEASE,  # a pre-authorization reversed (0 when its hold was already gone)
    "reversal": NONE,  # a reversal of nothing known: only ever with anomaly reversal_of_unknown
}
ORIGINAL_KINDS = ("authorization_hold", "sale_debit", "refund_credit", "completion_debit")
"""Postings a reversal (or a completion, or a refund) can point at."""

ANOMALIES = ("completion_without_hold", "double_completion", "duplicate_refund", "reversal_of_unknown")
"""What the bank answered as usual but a checker should look at (see the README, banksim ledger)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT PRIMARY KEY,
    masked_pan TEXT NOT NULL,
    currency TEXT NOT NULL,
    opening_balance INTEGER NOT NULL,
    balance INTEGER NOT NULL,
    held INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS postings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    account TEXT,
    masked_pan TEXT,
    kind TEXT NOT NULL,
    effect TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT,
    mti TEXT,
    stan TEXT,
    rrn TEXT,
    terminal TEXT,
    auth_code TEXT,
    times TEXT NOT NULL DEFAULT '',
    acquirer TEXT NOT NULL DEFAULT '',
    original INTEGER REFERENCES postings(id),
    anomaly TEXT,
    reversed_by INTEGER REFERENCES postings(id),
    closed_by INTEGER REFERENCES postings(id),
    business_date TEXT,
    settled INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS postings_stan ON postings(stan);
CREATE INDEX IF NOT EXISTS postings_rrn ON postings(rrn);
CREATE INDEX IF NOT EXISTS postings_open_holds ON postings(at) WHERE effect = 'hold' AND closed_by IS NULL;
CREATE TABLE IF NOT EXISTS answered (
    key TEXT PRIMARY KEY,
    at REAL NOT NULL,
    fingerprint TEXT NOT NULL,
    answer TEXT NOT NULL,
    echoes_pan INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS answered_at ON answered(at);
"""


class LedgerError(ValueError):
    """The ledger file cannot be used; the message names the file and why."""


def account_key(number: str) -> str:
    """The stored key of a card or account number: 12 hex digits of its SHA-256, never the number."""
    return hashlib.sha256(number.encode()).hexdigest()[:12]


def mask_number(number: str) -> str:
    """A card number as first six and last four; an account or wallet id as its last four."""
    return mask_pan(number) if number.isdigit() and 13 <= len(number) <= 19 else mask_last4(number)


def fingerprint(values: Sequence[str | None]) -> str:
    """What makes two requests with the same keys the same request, hashed (it holds the card number)."""
    return hashlib.sha256(repr(tuple(values)).encode()).hexdigest()


def answer_key(values: Sequence[str | None]) -> str:
    """The stored form of a duplicate-detection key (MTI, STAN, RRN, terminal)."""
    return json.dumps(list(values))


@dataclass(frozen=True)
class Posting:
    """One row of the ledger; ``original`` is the posting this one completes, releases or reverses."""

    id: int
    at: float
    account: str | None
    masked_pan: str | None
    kind: str
    effect: str
    amount: int
    currency: str | None
    mti: str | None
    stan: str | None
    rrn: str | None
    terminal: str | None
    auth_code: str | None
    times: tuple[str, ...]
    acquirer: str
    original: int | None
    anomaly: str | None
    reversed_by: int | None
    closed_by: int | None
    business_date: str | None = None
    settled: int = 1
    """How many times the posting counts in the bank's day totals: 1, or 0 / 2 under the
    ``drop_posting`` / ``double_posting`` faults (the books themselves are never wrong)."""

    @property
    def reversed(self) -> bool:
        return self.reversed_by is not None

    @property
    def open(self) -> bool:
        """A hold still counting against the available balance."""
        return self.effect == HOLD and self.closed_by is None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Posting:
        values = dict(row)
        values["times"] = tuple(values["times"].split())
        return cls(**values)

    def public(self) -> dict[str, Any]:
        """The posting as JSON shows it (no matching internals: times, acquirer)."""
        out = {k: v for k, v in vars(self).items() if k not in ("times", "acquirer")}
        out["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at))
        return out


@dataclass(frozen=True)
class Remembered:
    """An earlier answer for duplicate detection: ``answer`` without field 2 (see `Ledger.remember`)."""

    fingerprint: str
    answer: dict[str, str]
    echoes_pan: bool


def _connect(path: Path | str | None, read_only: bool = False) -> sqlite3.Connection:
    target = ":memory:" if path is None else str(path)
    if read_only and not Path(target).is_file():
        raise LedgerError(f"{target}: no such ledger file")
    try:
        if read_only:
            db = sqlite3.connect(f"file:{Path(target).resolve()}?mode=ro", uri=True, isolation_level=None)
        else:
            db = sqlite3.connect(target, isolation_level=None)
    except sqlite3.Error as e:
        raise LedgerError(f"{target}: cannot open ({e})") from None
    try:
        db.row_factory = sqlite3.Row
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as e:
        db.close()
        raise LedgerError(f"{target}: not a banksim ledger ({e})") from None
    if tables and not read_only and version in _UPGRADES:
        for statement in _UPGRADES[version]:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        version = SCHEMA_VERSION
    if (tables or read_only) and (version != SCHEMA_VERSION or not {"accounts", "postings", "answered"} <= tables):
        db.close()
        raise LedgerError(f"{target}: not a banksim ledger (schema version {version}, expected {SCHEMA_VERSION})")
    return db


class Ledger:
    """Balances and holds of the accounts, every posting, and remembered answers.

    Amounts are integers in the account currency's minor units.  A hold does not change
    the balance, only what is available (``balance - held``), which is what an
    insufficient-funds decision looks at.  Accounts are looked up by card or account
    number; a number the accounts file does not list has no account.

    With ``path`` the file is created on first use; an existing file keeps its balances
    (the accounts file's balance is only the opening balance of an account new to it).
    One banksim writes a file at a time (posting ids are counted in memory); any number of
    readers (`read_snapshot`) may look on.
    """

    def __init__(self, accounts: Mapping[str, Account], path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._accounts = dict(accounts)
        self._depth = 0
        self.business_date: str | None = None
        """Stamped on every new posting (`switch.tools.banksim.day.BankDay` keeps it)."""
        self.settle_weight = 1
        """``settled`` of new sale, completion and refund postings (see `Posting.settled`)."""
        self._db = _connect(path)
        try:
            if self.path is not None:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = FULL")
            with self.transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._db.executemany(
                    "INSERT OR IGNORE INTO accounts (account, masked_pan, currency, opening_balance, balance) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(account_key(a.pan), mask_number(a.pan), a.currency.alpha, a.balance, a.balance)
                     for a in accounts.values()],
                )
            self._last_id: int = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM postings").fetchone()[0]
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise LedgerError(f"{self.path}: cannot be used as a ledger ({e})") from None

    def close(self) -> None:
        """Close the database (a file ledger is complete on disk after every message anyway)."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside is committed together, or not at all; nesting joins the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0

    # -- accounts ---------------------------------------------------------------------------

    def account(self, number: str) -> Account | None:
        return self._accounts.get(number)

    def _row(self, number: str) -> sqlite3.Row:
        row = self._db.execute("SELECT * FROM accounts WHERE account = ?", (account_key(number),)).fetchone()
        if row is None:
            raise KeyError(mask_number(number))
        return row

    def balance(self, number: str) -> int:
        """Ledger balance: approved sales and completions debited, refunds credited."""
        return int(self._row(number)["balance"])

    def available(self, number: str) -> int:
        """What the cardholder can still spend: balance less open holds."""
        row = self._row(number)
        return int(row["balance"] - row["held"])

    # -- postings ---------------------------------------------------------------------------

    def post(
        self, number: str | None, kind: str, amount: int, at: float, *, mti: str | None = None, stan: str | None = None,
        rrn: str | None = None, terminal: str | None = None, times: Sequence[str] = (), acquirer: str = "",
        auth_code: str | None = None, new_auth_code: bool = False, original: int | None = None,
        anomaly: str | None = None, account_of: Posting | None = None,
    ) -> Posting:
        """Write one posting and apply its effect to the account, in the current transaction.

        The account is ``number``'s (none for a number the accounts file does not list), or
        ``account_of``'s when given.  ``new_auth_code`` gives the posting an authorization
        code of its own (from its id).
        """
        effect = KINDS[kind]
        if anomaly is not None and anomaly not in ANOMALIES:
            raise ValueError(f"anomaly {anomaly!r}: expected one of {ANOMALIES}")
        if account_of is not None:
            key, masked, currency = account_of.account, account_of.masked_pan, account_of.currency
        else:
            account = self._accounts.get(number or "")
            key = account_key(number) if account is not None and number else None
            masked = mask_number(number) if number else None
            currency = account.currency.alpha if account is not None else None
        posting = Posting(
            id=self._last_id + 1, at=at, account=key, masked_pan=masked, kind=kind, effect=effect, amount=amount,
            currency=currency, mti=mti, stan=stan, rrn=rrn, terminal=terminal,
            auth_code=f"{self._last_id + 1:06d}"[-6:] if new_auth_code else auth_code, times=tuple(times),
            acquirer=acquirer, original=original, anomaly=anomaly, reversed_by=None, closed_by=None,
            business_date=self.business_date,
            settled=self.settle_weight if kind in ORIGINAL_KINDS and effect in (DEBIT, CREDIT) else 1,
        )
        with self.transaction():
            self._db.execute(
                "INSERT INTO postings (id, at, account, masked_pan, kind, effect, amount, currency, mti, stan, rrn, "
                "terminal, auth_code, times, acquirer, original, anomaly, business_date, settled) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (posting.id, at, key, masked, kind, effect, amount, currency, mti, stan, rrn, terminal,
                 posting.auth_code, " ".join(times), acquirer, original, anomaly, posting.business_date,
                 posting.settled),
            )
            self._last_id = posting.id
            change = {HOLD: ("held", amount), RELEASE: ("held", -amount), DEBIT: ("balance", -amount),
                      CREDIT: ("balance", amount)}.get(effect)
            if change is not None and key is not None:
                self._db.execute(f"UPDATE accounts SET {change[0]} = {change[0]} + ? WHERE account = ?", (change[1], key))
        return posting

    def posting(self, posting_id: int) -> Posting:
        return Posting.from_row(self._db.execute("SELECT * FROM postings WHERE id = ?", (posting_id,)).fetchone())

    def close_hold(self, hold: Posting, by: int) -> None:
        """Mark ``hold`` no longer open (its release posting moves the amount)."""
        self._db.execute("UPDATE postings SET closed_by = ? WHERE id = ?", (by, hold.id))

    def mark_reversed(self, original: Posting, by: int) -> None:
        self._db.execute("UPDATE postings SET reversed_by = ? WHERE id = ?", (by, original.id))

    def find(self, kinds: Sequence[str], since: float, number: str | None = None, **equal: Any) -> list[Posting]:
        """Postings of ``kinds`` made since ``since``, newest first; on ``number``'s account when given,
        and with each column in ``equal`` (stan, rrn, amount ...) equal to its value."""
        where = [f"kind IN ({', '.join('?' * len(kinds))})", "at >= ?"]
        args: list[Any] = [*kinds, since]
        if number is not None:
            where.append("account = ?")
            args.append(account_key(number))
        for column, value in equal.items():
            if column not in ("stan", "rrn", "amount", "terminal", "original"):
                raise ValueError(f"find: unknown column {column!r}")
            where.append(f"{column} IS ?")
            args.append(value)
        rows = self._db.execute(f"SELECT * FROM postings WHERE {' AND '.join(where)} ORDER BY id DESC", args)
        return [Posting.from_row(r) for r in rows]

    def postings(
        self, kinds: Sequence[str] | None = None, anomalies_only: bool = False, number: str | None = None
    ) -> list[Posting]:
        """Every posting in order: of ``kinds`` when given, only flagged ones with ``anomalies_only``,
        only on the account of card or account ``number`` when given."""
        where, args = ["1"], []
        if kinds is not None:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args += list(kinds)
        if number is not None:
            where.append("account = ?")
            args.append(account_key(number))
        if anomalies_only:
            where.append("anomaly IS NOT NULL")
        rows = self._db.execute(f"SELECT * FROM postings WHERE {' AND '.join(where)} ORDER BY id", args)
        return [Posting.from_row(r) for r in rows]

    def expire_holds(self, horizon: float, now: float) -> None:
        """Release every hold placed before ``horizon`` that is still open (a ``hold_expiry`` posting each)."""
        rows = self._db.execute(
            "SELECT * FROM postings WHERE effect = 'hold' AND closed_by IS NULL AND at < ? ORDER BY at, id", (horizon,)
        ).fetchall()
        for row in rows:
            hold = Posting.from_row(row)
            with self.transaction():
                release = self.post(None, "hold_expiry", hold.amount, now, mti=hold.mti, stan=hold.stan, rrn=hold.rrn,
                                    terminal=hold.terminal, original=hold.id, account_of=hold)
                self.close_hold(hold, release.id)

    # -- remembered answers -------------------------------------------------------------------

    def remembered(self, key: str) -> Remembered | None:
        """The answer remembered for ``key`` (an `answer_key`), None when there is none."""
        row = self._db.execute("SELECT * FROM answered WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return Remembered(row["fingerprint"], json.loads(row["answer"]), bool(row["echoes_pan"]))

    def remember(self, key: str, at: float, print_: str, answer: Mapping[str, str]) -> None:
        """Keep ``answer`` for repeats of ``key``; field 2 is dropped (a replay takes it from the repeat)."""
        kept = {n: v for n, v in answer.items() if n != "2"}
        self._db.execute(
            "INSERT OR REPLACE INTO answered (key, at, fingerprint, answer, echoes_pan) VALUES (?, ?, ?, ?, ?)",
            (key, at, print_, json.dumps(kept), "2" in answer),
        )

    def forget_answers(self, horizon: float) -> None:
        self._db.execute("DELETE FROM answered WHERE at < ?", (horizon,))

    # -- reading from outside ---------------------------------------------------------------

    def discrepancies(self) -> list[str]:
        """Accounts whose balance or held amount is not what their postings add up to; empty when
        the books are consistent (a check for the suite after restarts and kills)."""
        return discrepancies(self._db)

    def snapshot(self) -> dict[str, Any]:
        """``{"accounts": [...], "postings": [...], "anomalies": {kind: count}, "discrepancies": [...]}``,
        as ``GET /ledger`` serves it."""
        return snapshot(self._db)


def discrepancies(db: sqlite3.Connection) -> list[str]:
    rows = db.execute("""
        SELECT a.masked_pan, a.balance, a.held,
               a.opening_balance + COALESCE(SUM(CASE p.effect WHEN 'credit' THEN p.amount
                                                             WHEN 'debit' THEN -p.amount END), 0),
               COALESCE(SUM(CASE p.effect WHEN 'hold' THEN p.amount WHEN 'release' THEN -p.amount END), 0),
               COALESCE(SUM(CASE WHEN p.effect = 'hold' AND p.closed_by IS NULL THEN p.amount END), 0)
        FROM accounts a LEFT JOIN postings p ON p.account = a.account
        GROUP BY a.account ORDER BY a.masked_pan""")
    return [
        f"{masked}: balance {balance}, held {held}; postings say balance {posted}, held {moved} "
        f"(open holds {still_open})"
        for masked, balance, held, posted, moved, still_open in rows
        if (balance, held, held) != (posted, moved, still_open)
    ]


def snapshot(db: sqlite3.Connection) -> dict[str, Any]:
    holds: dict[str, list[dict[str, Any]]] = {}
    for row in db.execute("SELECT * FROM postings WHERE effect = 'hold' AND closed_by IS NULL ORDER BY id"):
        holds.setdefault(row["account"], []).append(
            {"posting": row["id"], "amount": row["amount"], "auth_code": row["auth_code"], "stan": row["stan"],
             "rrn": row["rrn"]}
        )
    accounts = [
        {"account": r["account"], "masked_pan": r["masked_pan"], "currency": r["currency"],
         "opening_balance": r["opening_balance"], "balance": r["balance"], "available": r["balance"] - r["held"],
         "held": r["held"], "holds": holds.get(r["account"], [])}
        for r in db.execute("SELECT * FROM accounts ORDER BY masked_pan, account")
    ]
    postings = [Posting.from_row(r).public() for r in db.execute("SELECT * FROM postings ORDER BY id")]
    anomalies = {r[0]: r[1] for r in db.execute(
        "SELECT anomaly, COUNT(*) FROM postings WHERE anomaly IS NOT NULL GROUP BY anomaly ORDER BY anomaly")}
    return {"accounts": accounts, "postings": postings, "anomalies": anomalies, "discrepancies": discrepancies(db)}


def read_snapshot(path: Path | str) -> dict[str, Any]:
    """`snapshot` of a ledger file, read-only (a running banksim may keep writing it). LedgerError if unusable."""
    db = _connect(path, read_only=True)
    try:
        return snapshot(db)
    except sqlite3.DatabaseError as e:
        raise LedgerError(f"{path}: cannot be read ({e})") from None
    finally:
        db.close()
