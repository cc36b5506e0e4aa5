"""Routing: which connector (bank) gets a payment.

Rules are tried in the order written.  Among the rules that match, the one whose
BIN/IIN prefix matches the most digits wins (so an 8-digit range carved out of a
6-digit one needs no careful ordering); ties go to the rule written first.  A rule
names one connector or an ordered fallback list; the gateway falls back only while
nothing has been written to a bank.

Rules that can never match (shadowed by an earlier, wider rule) are configuration
mistakes and refused at start-up (`switch.ops.routes.parse_rules` reads the
``[[routes]]`` tables), because a rule that silently never fires sends money to the
wrong bank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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
        # Written out, not a loop over pairs: every payment runs this for every rule.
        if self.instruments is not None and q.instrument not in self.instruments:
            return None
        if self.schemes is not None and q.scheme not in self.schemes:
            return None
        if self.banks is not None and q.bank not in self.banks:
            return None
        if self.currencies is not None and q.currency not in self.currencies:
            return None
        if self.merchants is not None and q.merchant_id not in self.merchants:
            return None
        if self.min_amount is not None and q.amount < self.min_amount:
            return None
        if self.max_amount is not None and q.amount > self.max_amount:
            return None
        if not self.prefixes:
            return 0
        bin8 = q.bin8
        return max((len(p) for p in self.prefixes if bin8.startswith(p)), default=None)

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

    @property
    def explanation(self) -> str:
        """Why (`kswitch route`): built on demand, since every payment is routed and almost none explained."""
        if self.rule is None:
            return "no rule matches"
        return f"rule {self.rule.name!r} ({self.rule.describe()}) -> {' then '.join(self.connectors)}"


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
            return Decision(None, ())
        return Decision(best[1], best[1].connectors)
