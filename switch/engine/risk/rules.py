"""Risk rules as typed tables: each kind's parameters, what a rule reads of a payment's `Facts`, its counters' names.

Why typed rules and not a rule-evaluation library: the kinds are few and fixed, each needs
counters that must be exact under concurrency (so each is one atomic statement in
`switch.journal.risk`), and a typed table validates at load with errors naming the key.

What each kind checks is in `switch.engine.risk.compiled`, which turns a scope's rules into one
function run inside the risk stage's writer unit.  Counting rules count every payment they see
that the rules before them let through; a cumulative limit's reservation is taken back when the
payment is finally blocked, declined or fails (`switch.engine.risk.stage.RiskStage.answered`).

Windows slide: a counter's window is cut into `SLOTS` slots of a tenth of ``window`` each,
and a payment counts everything in the slot it falls in and the `SLOTS` slots before it,
so a count drops slot by slot as time passes instead of resetting.  The granularity is
strict, never lenient: what is counted covers at least the last ``window`` seconds (at
most ``window`` plus one slot), so a limit "N in a window" holds for every window of that
length.  A cumulative limit with ``period = "day"`` counts the calendar day in the rule's
time zone (one slot a day).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

from switch.journal.guard import Derived
from switch.journal.risk import Window

K = TypeVar("K")
V = TypeVar("V")
ACTIONS = ("allow", "block", "review", "step_up")
MODES = ("enforce", "shadow")
KINDS = ("blocklist", "amount_limit", "cumulative", "velocity", "card_testing", "country", "duplicate")
SUBJECTS = ("card", "customer", "merchant", "ip", "device", "email")
LIST_KINDS = ("card", "bin", "ip", "device", "email", "customer")


SLOTS = 10
"""Slots a window is cut into: a count slides in steps of a tenth of the window."""
_ATTRIBUTE = {"card": "card", "customer": "customer", "merchant": "merchant_id", "ip": "ip", "device": "device",
              "email": "email"}
_LETTERS = str.maketrans("0123456789", "ghijklmnop")
_BASE32 = b"abcdefghijklmnopqrstuvwxyz234567"
_TO_BASE32 = bytes(_BASE32[i] if i < 32 else 0 for i in range(256))
_LANES = 64  # 5-bit groups spread at once: 320 bits, a digest of up to 40 bytes


def _spreading() -> tuple[tuple[int, int, int], ...]:
    """The steps that move each of `_LANES` 5-bit groups of an integer into a byte of its own: group j (from
    the top) moves up by 3 bits for every group below it, done bit by bit of that count, largest first,
    so a step moves half of the groups at once (an integer's masks and shifts run in C)."""
    at = [5 * (_LANES - 1 - j) for j in range(_LANES)]
    steps = []
    for bit in range(_LANES.bit_length() - 2, -1, -1):
        keep = move = 0
        for j in range(_LANES):
            if (_LANES - 1 - j) >> bit & 1:
                move |= 31 << at[j]
                at[j] += 3 << bit
            else:
                keep |= 31 << at[j]
        steps.append((keep, move, 3 << bit))
    return tuple(steps)


_SPREAD = _spreading()


class Facts(NamedTuple):
    """What the rules may know of one payment: never a clear PAN, never a clear email.  (A named
    tuple: one is built for every authorization, and a tuple is the cheapest immutable record.)"""

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
    pan_hash: bytes | None = None  # the keyed hash ``card`` spells, for the journal's row (computed once)

    def subject(self, per: str) -> str | None:
        value: str | None = getattr(self, _ATTRIBUTE[per])
        return value


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

    def __getstate__(self) -> dict[str, Any]:
        """The rule's fields, not what it remembers (counter names spelt by closures, the last day found):
        rules are pickled for a writer process (`switch.engine.risk.stage.RiskRules`), which remembers its own."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @functools.cached_property
    def lookups(self) -> tuple[tuple[str, int], ...]:
        """The journal blocklist entries this rule needs to see for a payment: (kind, index in `Facts` of
        the value), the kinds in `LIST_KINDS` order (a BIN at 6 digits, then, last, at 8); a card-testing
        rule's holds of its subject."""
        if self.kind == "blocklist":
            return tuple((kind, Facts._fields.index(attribute)) for kind, attribute in self._listed_facts)
        if self.kind == "card_testing":
            return ((self.hold_kind, Facts._fields.index(_ATTRIBUTE[self.per])),)
        return ()

    @functools.cached_property
    def counts(self) -> bool:
        """Whether this rule counts the authorizations it sees (and so has a counter per payment)."""
        return self.kind in _COUNTS

    @functools.cached_property
    def counted(self) -> str:
        """What this rule's counter of authorizations counts (its name's part after the rule's)."""
        return _COUNTS[self.kind]

    def counter(self, f: Facts, now_us: int, what: str | None = None) -> Counter | None:
        """Counter ``what`` of this rule's for ``f`` at ``now_us`` (by default the authorizations it counts; a
        card-testing rule's ``declines``), None when it counts nothing for ``f``.  The compiled screen
        (`switch.engine.risk.compiled`) names and places its counters the same way, inline."""
        what = what or self.counted
        if self.kind == "duplicate":
            if f.idempotency_key is not None:
                return None
            name = Derived(self.prefix(what) + letters(f"{f.card}|{f.amount}|{f.currency}|{f.merchant_id}"))
        else:
            subject = f[self.subject_at]
            if subject is None:
                return None
            name = self.names(what)[subject]
        if self.period == "day":
            start, end = self.day(now_us)
            return Counter(name, start, start, end)
        width = self.slot_us
        start = now_us - now_us % width
        return Counter(name, start, start - SLOTS * width, start + (SLOTS + 1) * width)

    @functools.cached_property
    def subject_at(self) -> int:
        """Where in `Facts` the subject this rule counts or holds per is."""
        return Facts._fields.index(_ATTRIBUTE[self.per])

    def prefix(self, what: str) -> str:
        """Counter names of ``what`` up to the subject."""
        return self._prefixes[what]

    def names(self, what: str) -> Remembered[str, Derived]:
        """Counter names of ``what`` by subject (`_names`)."""
        return self._names[what]

    @functools.cached_property
    def _prefixes(self) -> dict[str, str]:
        """Counter names up to the subject, by what is counted: built once, not per payment."""
        return {what: f"{self.name}:{what}:{self.per}:" for what in ("sum", "attempts", "same", "declines")}

    @functools.cached_property
    def _names(self) -> dict[str, Remembered[str, Derived]]:
        """Counter names by what is counted, then by subject as `Facts` holds it.  The card and email are keyed
        hashes already; anything else (an IP, a customer id) is hashed to `letters`, which the journal's
        card-data guard passes.  Names are validated rule names and hashes, hence `Derived`."""
        def spelling(prefix: str) -> Callable[[str], Derived]:
            if self.per in ("card", "email"):
                return lambda subject: Derived(prefix + subject)
            return lambda subject: Derived(prefix + letters(subject))

        return {what: Remembered(spelling(prefix), NAMES_REMEMBERED) for what, prefix in self._prefixes.items()}

    def day(self, now_us: int) -> tuple[int, int]:
        """The calendar day in the rule's time zone holding ``now_us``: [start, end) in µs, the last one
        found kept (time zone arithmetic costs more than the rest of a counter)."""
        last = self.__dict__.get("_last_day")
        if last is not None and last[0] <= now_us < last[1]:
            return last
        day = datetime.fromtimestamp(now_us / 1e6, ZoneInfo(self.timezone)).replace(
            hour=0, minute=0, second=0, microsecond=0)
        found = (int(day.timestamp() * 1_000_000), int((day + timedelta(days=1)).timestamp() * 1_000_000))
        self.__dict__["_last_day"] = found  # a frozen dataclass: a cache, like cached_property's
        return found

    @functools.cached_property
    def slot_us(self) -> int:
        """A slot's length: a tenth of the window, in microseconds."""
        return max(int(self.window * 1_000_000) // SLOTS, 1)

    @functools.cached_property
    def _listed_facts(self) -> tuple[tuple[str, str], ...]:
        """(list kind, `Facts` attribute) for each list this rule checks; a BIN is checked at 6 and 8 digits."""
        pairs = [(kind, _ATTRIBUTE.get(kind, "bin6")) for kind in LIST_KINDS if kind in self.lists]
        return tuple(pairs + [("bin", "bin8")] if "bin" in self.lists else pairs)

    @functools.cached_property
    def hold_kind(self) -> str:
        """The blocklist kind of a card-testing rule's holds: its own, so only that rule enforces them."""
        return f"hold:{self.name}:{self.per}"


class Counter(NamedTuple):
    """Where a payment counts: counter ``name``'s slot ``start``; the window holds the slots from
    ``since``; the slot leaves the window at ``expires`` (all microseconds)."""

    name: str
    start: int
    since: int
    expires: int


def letters(text: str) -> str:
    """A short unkeyed hash of ``text`` spelt in letters only: a counter name's subject."""
    return hashlib.blake2b(text.encode(), digest_size=15).hexdigest().translate(_LETTERS)


class Remembered(dict[K, V]):
    """Names spelt from hashes for the counters and lists (a counter's name, a card's `tag`), remembered by
    what they spell: the same subjects come back while they count, and hashing and building the text is
    most of what naming them costs.  A hit is one dict lookup in C (``remembered[key]``); past ``limit``
    all are forgotten at once (a bound, and no bookkeeping per hit)."""

    def __init__(self, spell: Callable[[K], V], limit: int) -> None:
        super().__init__()
        self.spell, self.limit = spell, limit

    def __missing__(self, key: K) -> V:
        if len(self) >= self.limit:
            self.clear()
        value = self[key] = self.spell(key)
        return value


NAMES_REMEMBERED = 10_000
"""Counter names (per rule and what it counts) and card keys remembered by their subject, at most."""


def tag(digest: bytes) -> Derived:
    """A hash as lower-case base32 (no padding): the journal's card-data guard scans text for card
    numbers, and hex digests hold long digit runs that now and then pass Luhn with a scheme's prefix;
    base32 has six digits in 32 symbols.  The same text as ``base64.b32encode`` (lower case, unpadded), which
    is Python code in 3.11, spelt with a few integer operations: a card's tag is made for nearly every
    payment (most cards are new in the stage's memory)."""
    if len(digest) > _LANES * 5 // 8:
        return Derived(base64.b32encode(digest).decode("ascii").lower().rstrip("="))
    n = int.from_bytes(digest, "big") << (_LANES * 5 - len(digest) * 8)
    for keep, move, shift in _SPREAD:
        n = (n & keep) | ((n & move) << shift)
    return Derived(n.to_bytes(_LANES, "big")[:-(-len(digest) * 8 // 5)].translate(_TO_BASE32).decode("ascii"))


def feed_decline(rule: Rule, window: Window, c: Counter, f: Facts) -> tuple[str, str, str] | None:
    """Count a bank decline in a card-testing rule's ``window``; the hold to put (kind, value, shown)
    when the declines in the window reach the rule's ``declines``, else None."""
    declines = window.add(c.start, 1, 0, c.since, c.expires)
    subject = f.subject(rule.per)
    if subject is None or declines < rule.declines:
        return None
    return rule.hold_kind, subject, f.masked if rule.per == "card" and f.masked else subject


_COUNTS = {"cumulative": "sum", "velocity": "attempts", "duplicate": "same"}
