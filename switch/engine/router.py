"""Routing: which connector (bank) gets a payment.

Rules are tried in the order written.  Among the rules that match, the one whose
BIN/IIN prefix matches the most digits wins (so an 8-digit range carved out of a
6-digit one needs no careful ordering); ties go to the rule written first.  A rule
names one connector or an ordered fallback list; the gateway falls back only while
nothing has been written to a bank.

Rules that can never match (shadowed by an earlier, wider rule) are configuration
mistakes and refused at start-up, because a rule that silently never fires sends
money to the wrong bank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from switch.ops.settings import ConfigError, Table

INSTRUMENTS = ("card", "bank_account", "wallet")


@dataclass(frozen=True)
class RouteQuery:
    """What the router may look at: never the full PAN, only its first 8 digits."""

    instrument: str
    amount: int
    currency: str
    merchant_id: str
    bin8: str = ""
    scheme: str | None = None
    bank: str | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    connectors: tuple[str, ...]
    instruments: frozenset[str] | None = None
    prefixes: tuple[str, ...] = ()
    schemes: frozenset[str] | None = None
    banks: frozenset[str] | None = None
    currencies: frozenset[str] | None = None
    merchants: frozenset[str] | None = None
    min_amount: int | None = None
    max_amount: int | None = None

    def specificity(self, q: RouteQuery) -> int | None:
        """Length of the matching prefix (0 without BIN criteria), or None when the rule does not match."""
        for allowed, value in (
            (self.instruments, q.instrument),
            (self.schemes, q.scheme),
            (self.banks, q.bank),
            (self.currencies, q.currency),
            (self.merchants, q.merchant_id),
        ):
            if allowed is not None and value not in allowed:
                return None
        if self.min_amount is not None and q.amount < self.min_amount:
            return None
        if self.max_amount is not None and q.amount > self.max_amount:
            return None
        if not self.prefixes:
            return 0
        lengths = [len(p) for p in self.prefixes if q.bin8.startswith(p)]
        return max(lengths) if lengths else None

    def covers(self, other: Rule) -> bool:
        """True when every payment ``other`` matches is taken by this rule first."""
        for mine, theirs in (
            (self.instruments, other.instruments),
            (self.schemes, other.schemes),
            (self.banks, other.banks),
            (self.currencies, other.currencies),
            (self.merchants, other.merchants),
        ):
            if mine is not None and (theirs is None or not theirs <= mine):
                return False
        if self.min_amount is not None and (other.min_amount is None or other.min_amount < self.min_amount):
            return False
        if self.max_amount is not None and (other.max_amount is None or other.max_amount > self.max_amount):
            return False
        if not self.prefixes:
            return not other.prefixes
        return bool(other.prefixes) and all(p in self.prefixes for p in other.prefixes)

    def describe(self) -> str:
        parts = []
        for label, values in (
            ("instrument", self.instruments), ("scheme", self.schemes), ("bank", self.banks),
            ("currency", self.currencies), ("merchant", self.merchants),
        ):
            if values is not None:
                parts.append(f"{label} in {sorted(values)}")
        if self.prefixes:
            parts.append(f"BIN prefix in {list(self.prefixes)}")
        if self.min_amount is not None:
            parts.append(f"amount >= {self.min_amount}")
        if self.max_amount is not None:
            parts.append(f"amount <= {self.max_amount}")
        return " and ".join(parts) or "everything"


@dataclass(frozen=True)
class Decision:
    rule: Rule | None
    connectors: tuple[str, ...]
    explanation: str


class Router:
    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)

    def route(self, q: RouteQuery) -> Decision:
        best: tuple[int, Rule] | None = None
        for rule in self.rules:
            s = rule.specificity(q)
            if s is not None and (best is None or s > best[0]):
                best = (s, rule)
        if best is None:
            return Decision(None, (), "no rule matches")
        rule = best[1]
        return Decision(rule, rule.connectors, f"rule {rule.name!r} ({rule.describe()}) -> {' then '.join(rule.connectors)}")


def _set(t: Table, key: str, lower: bool = False) -> frozenset[str] | None:
    if not t.has(key):
        return None
    values = t.str_list(key)
    if not values:
        raise t.error(key, "empty list; leave the key out to match everything")
    return frozenset(v.lower() if lower else v for v in values)


def parse_rules(tables: Iterable[Table], connectors: Iterable[str]) -> Router:
    """Build the router from ``[[routes]]`` tables, refusing unknown connectors and shadowed rules."""
    known = set(connectors)
    rules: list[Rule] = []
    for i, t in enumerate(tables):
        name = t.str("name", f"route-{i + 1}")
        targets = t.str_list("connectors") if t.has("connectors") else [t.str("connector")]
        if not targets:
            raise t.error("connectors", "expected at least one connector name")
        for target in targets:
            if target not in known:
                raise t.error("connectors", f"unknown connector {target!r}; configured: {', '.join(sorted(known))}")
        instruments = _set(t, "instruments")
        if instruments is not None and not instruments <= set(INSTRUMENTS):
            raise t.error("instruments", f"got {sorted(instruments)}; expected some of {', '.join(INSTRUMENTS)}")
        prefixes = tuple(t.str_list("bin_prefixes", []))
        for p in prefixes:
            if not p.isdigit() or not 1 <= len(p) <= 8:
                raise t.error("bin_prefixes", f"got {p!r}; expected 1 to 8 digits (6- or 8-digit BINs)")
        rule = Rule(
            name=name,
            connectors=tuple(targets),
            instruments=instruments,
            prefixes=prefixes,
            schemes=_set(t, "schemes", lower=True),
            banks=_set(t, "banks"),
            currencies=_set(t, "currencies"),
            merchants=_set(t, "merchants"),
            min_amount=t.int("min_amount", None, lo=0),
            max_amount=t.int("max_amount", None, lo=0),
        )
        t.done()
        for earlier in rules:
            if earlier.covers(rule):
                raise ConfigError(
                    f"{t.where()}: rule {name!r} can never match: rule {earlier.name!r} "
                    f"({earlier.describe()}) comes first and takes every payment it would"
                )
        rules.append(rule)
    return Router(rules)
