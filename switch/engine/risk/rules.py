"""Risk rules as typed tables: what each kind checks, against a payment's `Facts` and the journal's counters.

Why typed rules and not a rule-evaluation library: the kinds are few and fixed, each needs
counters that must be exact under concurrency (so each is one atomic statement in
`switch.journal.risk`), and a typed table validates at load with errors naming the key.

A rule's `check` runs inside the risk stage's writer unit and returns what it saw (the
counter values, the matched list entry) when it matches, else None.  Counting rules count
every payment they see that the rules before them let through; a cumulative limit's
reservation is taken back when the payment is finally blocked, declined or fails
(`switch.engine.risk.stage.RiskStage.answered`).

A window opens with the first payment a counter counts and lasts the rule's ``window``
(or, for a cumulative limit with ``period = "day"``, is the calendar day in the rule's
time zone): exact and cheap (one row per rule and subject), at the price that it is not
a sliding window: a burst that starts late in one window is partly counted in the next.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from switch.journal.risk import BlockEntry, RiskLedger

Listed = Mapping[tuple[str, str], BlockEntry]
ACTIONS = ("allow", "block", "review", "step_up")
MODES = ("enforce", "shadow")
KINDS = ("blocklist", "amount_limit", "cumulative", "velocity", "card_testing", "country", "duplicate")
SUBJECTS = ("card", "customer", "merchant", "ip", "device", "email")
LIST_KINDS = ("card", "bin", "ip", "device", "email", "customer")


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules may know of one payment: never a clear PAN, never a clear email."""

    merchant_id: str
    amount: int
    currency: str
    instrument: str
    card: str  # keyed hash of the PAN or account (`tag`): the card's identity for counters and lists
    masked: str | None
    bin6: str | None
    bin8: str | None
    country: str | None  # the card's issuing country from the BIN table
    customer: str | None = None
    ip: str | None = None
    device: str | None = None
    email: str | None = None  # hash
    idempotency_key: str | None = None

    def subject(self, per: str) -> str | None:
        return {"card": self.card, "customer": self.customer, "merchant": self.merchant_id, "ip": self.ip,
                "device": self.device, "email": self.email}[per]


@dataclass(frozen=True, slots=True)
class Scope:
    """Which payments a rule looks at; None matches everything."""

    merchants: frozenset[str] | None = None
    currencies: frozenset[str] | None = None
    instruments: frozenset[str] | None = None

    def covers(self, f: Facts) -> bool:
        return ((self.merchants is None or f.merchant_id in self.merchants)
                and (self.currencies is None or f.currency in self.currencies)
                and (self.instruments is None or f.instrument in self.instruments))


@dataclass(frozen=True)
class Rule:
    """One rule: ``name`` in answers, logs and metrics; ``otherwise`` is what step_up does where the
    bank cannot ask the customer to confirm."""

    name: str
    kind: str
    action: str
    mode: str = "enforce"
    scope: Scope = field(default_factory=Scope)
    otherwise: str = "block"
    # blocklist
    lists: tuple[str, ...] = LIST_KINDS
    entries: frozenset[tuple[str, str]] = frozenset()  # (kind, value) from the config file
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # amount_limit, cumulative
    min_amount: int | None = None
    max_amount: int | None = None
    # cumulative, velocity, card_testing
    per: str = "card"
    max_count: int | None = None
    window: float = 60.0
    period: str | None = None  # "day": the calendar day in ``timezone``
    timezone: str = "UTC"
    # card_testing
    declines: int = 3
    hold: float = 1800.0
    # country
    allow: frozenset[str] | None = None
    deny: frozenset[str] = frozenset()
    unknown_matches: bool = False

    def check(self, ledger: RiskLedger, f: Facts, now: float, bumps: list[tuple[str, int, int]],
              listed: Listed) -> dict | None:
        """What it saw when it matches, else None; reservations to take back on a block go to ``bumps``;
        ``listed`` holds the journal's live entries among every rule's `lookups`, read in one query."""
        return _CHECKS[self.kind](self, ledger, f, now, bumps, listed)

    def lookups(self, f: Facts) -> list[tuple[str, str]]:
        """The journal blocklist entries (kind, value) this rule needs to see for ``f``."""
        if self.kind == "blocklist":
            return self.list_keys(f)
        subject = f.subject(self.per)
        return [(hold_kind(self), subject)] if self.kind == "card_testing" and subject is not None else []

    def counter(self, what: str, subject: str, now: float) -> tuple[str, int]:
        """A counter's name for ``subject`` and, should a window open at ``now``, when it ends (microseconds)."""
        name = f"{self.name}:{what}:{self.per}:{tag(hashlib.sha256(subject.encode()).digest()[:15])}"
        if self.period != "day":
            return name, int((now + self.window) * 1_000_000)
        day = datetime.fromtimestamp(now, ZoneInfo(self.timezone)).replace(hour=0, minute=0, second=0, microsecond=0)
        end = (day + timedelta(days=1)).timestamp()
        return f"{name}:{day.date().isoformat()}", int(end * 1_000_000)

    def list_keys(self, f: Facts) -> list[tuple[str, str]]:
        """The (kind, value) pairs of this payment a blocklist compares."""
        keys = {"card": f.card, "bin": f.bin6, "ip": f.ip, "device": f.device, "email": f.email,
                "customer": f.customer}
        found = [(kind, value) for kind, value in keys.items() if kind in self.lists and value is not None]
        if "bin" in self.lists and f.bin8 is not None:
            found.append(("bin", f.bin8))
        return found


def tag(digest: bytes) -> str:
    """A hash as lower-case base32: the journal's card-data guard scans text for card numbers, and
    hex digests hold long digit runs that now and then pass Luhn with a scheme's prefix; base32
    has six digits in 32 symbols."""
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def _blocklist(rule: Rule, ledger: RiskLedger, f: Facts, now: float, bumps: list, listed: Listed) -> dict | None:
    keys = rule.list_keys(f)
    for kind, value in keys:
        if (kind, value) in rule.entries:
            return {"list": kind, "entry": "config"}
    if f.ip is not None and "ip" in rule.lists and rule.networks:
        address = ipaddress.ip_address(f.ip)
        for network in rule.networks:
            if address in network:
                return {"list": "ip", "entry": str(network)}
    for key in keys:
        entry = listed.get(key)
        if entry is not None:
            return {"list": entry.kind, "entry": entry.shown}
    return None


def _amount_limit(rule: Rule, ledger: RiskLedger, f: Facts, now: float, bumps: list, listed: Listed) -> dict | None:
    if (rule.max_amount is not None and f.amount > rule.max_amount) or (
            rule.min_amount is not None and f.amount < rule.min_amount):
        return {"amount": f.amount}
    return None


def _cumulative(rule: Rule, ledger: RiskLedger, f: Facts, now: float, bumps: list, listed: Listed) -> dict | None:
    subject = f.subject(rule.per)
    if subject is None:
        return None
    name, end = rule.counter("sum", subject, now)
    total = ledger.add(name, end, 1, f.amount, max_count=rule.max_count, max_amount=rule.max_amount)
    if total is None:
        count, amount = ledger.seen(name)
        return {"count": count, "amount": amount, "asked": f.amount}
    bumps.append((name, 1, f.amount))
    return None


def _velocity(rule: Rule, ledger: RiskLedger, f: Facts, now: float, bumps: list, listed: Listed) -> dict | None:
    subject = f.subject(rule.per)
    if subject is None:
        return None
    name, end = rule.counter("attempts", subject, now)
    count, _ = ledger.add(name, end, 1, 0) or (0, 0)
    return {"count": count} if rule.max_count is not None and count > rule.max_count else None


def _card_testing(rule: Rule, ledger: RiskLedger, f: Facts, now: float, bumps: list, listed: Listed) -> dict | None:
    subject = f.subject(rule.per)
    if subject is None:
        return None
    entry = listed.get((hold_kind(rule), subject))
    return None if entry is None else {"held_until_us": entry.expires_at}


def hold_kind(rule: Rule) -> str:
    """The blocklist kind of a card-testing rule's holds: its own, so only that rule enforces them."""
    return f"hold:{rule.name}:{rule.per}"


def feed_decline(rule: Rule, ledger: RiskLedger, f: Facts, now: float) -> int | None:
    """Count a bank decline for a card-testing rule; the count when it put a hold, else None."""
    subject = f.subject(rule.per)
    if subject is None:
        return None
    name, end = rule.counter("declines", subject, now)
    count, _ = ledger.add(name, end, 1, 0) or (0, 0)
    if count < rule.declines:
        return None
    shown = f.masked if rule.per == "card" and f.masked else subject
    ledger.hold(hold_kind(rule), subject, shown, f"rule {rule.name}", int((now + rule.hold) * 1_000_000))
    return count


def _country(rule: Rule, ledger: RiskLedger, f: Facts, now: float, bumps: list, listed: Listed) -> dict | None:
    if f.country is None:
        return {"country": None} if rule.unknown_matches else None
    if f.country in rule.deny or (rule.allow is not None and f.country not in rule.allow):
        return {"country": f.country}
    return None


def _duplicate(rule: Rule, ledger: RiskLedger, f: Facts, now: float, bumps: list, listed: Listed) -> dict | None:
    if f.idempotency_key is not None:
        return None
    same = f"{f.card}|{f.amount}|{f.currency}|{f.merchant_id}"
    name, end = rule.counter("same", same, now)
    count, _ = ledger.add(name, end, 1, 0) or (0, 0)
    return {"count": count} if count > 1 else None


_CHECKS = {"blocklist": _blocklist, "amount_limit": _amount_limit, "cumulative": _cumulative,
           "velocity": _velocity, "card_testing": _card_testing, "country": _country, "duplicate": _duplicate}

