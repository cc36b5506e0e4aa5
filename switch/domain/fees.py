"""Fee arithmetic: what a bank earns and what a merchant pays when money moves.

Why this exists: a fee is money, so it is computed once, here, in integer minor units,
with one rounding rule, and every caller (the journal when it settles a payment, the
reports of a later issue) gets the same number.  Nothing here knows a database or a
wire format.

Rules (stated once, tested by property tests in tests/domain/test_fees.py):

* A plan's fee on an amount is ``round_half_up(amount * basis_points / 10000) + fixed``,
  then raised to ``min`` and lowered to ``max`` (per currency), and never more than the
  amount itself (a fee cannot exceed the money it is taken from).  Amounts are already in
  the currency's minor unit, so "rounded to the minor unit" is rounding to an integer.
* Reversal is proportional and *cumulative*: after refunds totalling ``r`` of a charged
  base ``b`` with fee ``f``, ``round_half_up(f * r / b)`` has been reversed in total; each
  refund reverses that total minus what earlier refunds reversed.  So the sum of reversals
  never exceeds the fee, and the refund that brings ``r`` to ``b`` takes the exact
  remainder.  A plan with ``on_refund = keep`` reverses nothing.
* Fixed amounts, minimums and maximums are written in major units ("0.10") in the
  configuration and turned into minor units with the currency's exponent; a value with
  more decimals than the currency has is refused rather than rounded.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from switch.domain.currency import by_alpha

BASIS = 10_000


class RefundEffect(enum.StrEnum):
    REVERSE = "reverse"
    KEEP = "keep"


def round_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half up, for a non-negative numerator and positive denominator."""
    if numerator < 0 or denominator <= 0:
        raise ValueError("round_half_up takes a non-negative numerator and a positive denominator")
    return (2 * numerator + denominator) // (2 * denominator)


def to_minor(value: str, currency: str) -> int:
    """A non-negative major-unit amount such as ``"0.10"`` in minor units of ``currency`` (``10`` for USD)."""
    found = by_alpha(currency)
    if found is None:
        raise ValueError(f"{currency!r} is not a current ISO 4217 currency")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal amount such as \"0.10\"") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{value!r} must be a non-negative amount")
    minor = amount.scaleb(found.exponent)
    if minor != minor.to_integral_value():
        raise ValueError(f"{value!r} has more decimals than {currency} has ({found.exponent})")
    return int(minor)


@dataclass(frozen=True)
class FeeSubject:
    """What a plan is chosen by: the payment's currency, card scheme and instrument (None when unknown)."""

    currency: str
    scheme: str | None = None
    instrument: str | None = None


@dataclass(frozen=True)
class FeePlan:
    """One fee rule; amounts per currency in minor units. Filters left as None match everything."""

    basis_points: int = 0
    fixed: Mapping[str, int] = field(default_factory=dict)
    minimum: Mapping[str, int] = field(default_factory=dict)
    maximum: Mapping[str, int] = field(default_factory=dict)
    on_refund: RefundEffect = RefundEffect.REVERSE
    schemes: frozenset[str] | None = None
    instruments: frozenset[str] | None = None
    currencies: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.basis_points < 0:
            raise ValueError("basis_points must not be negative")
        for name in ("fixed", "minimum", "maximum"):
            if any(value < 0 for value in getattr(self, name).values()):
                raise ValueError(f"{name} amounts must not be negative")
        for currency, low in self.minimum.items():
            high = self.maximum.get(currency)
            if high is not None and high < low:
                raise ValueError(f"minimum {low} is above maximum {high} for {currency}")

    def matches(self, subject: FeeSubject) -> bool:
        return all(
            allowed is None or value in allowed
            for allowed, value in (
                (self.currencies, subject.currency),
                (self.schemes, subject.scheme),
                (self.instruments, subject.instrument),
            )
        )

    def fee(self, amount: int, currency: str) -> int:
        """The fee on ``amount`` minor units of ``currency`` (see the module's rules)."""
        if amount < 0:
            raise ValueError("amount must not be negative")
        fee = round_half_up(amount * self.basis_points, BASIS) + self.fixed.get(currency, 0)
        fee = max(fee, self.minimum.get(currency, 0))
        if currency in self.maximum:
            fee = min(fee, self.maximum[currency])
        return min(fee, amount)


def first_match(plans: Sequence[FeePlan], subject: FeeSubject) -> FeePlan | None:
    """The first plan whose filters match ``subject`` (configuration order), or None: no fee."""
    return next((plan for plan in plans if plan.matches(subject)), None)


def reversed_so_far(fee: int, base: int, refunded: int) -> int:
    """The part of ``fee`` (charged on ``base``) reversed in total once ``refunded`` of it is refunded."""
    if fee < 0 or base < 0 or not 0 <= refunded <= base:
        raise ValueError("need 0 <= refunded <= base and a non-negative fee")
    if base == 0:
        return fee
    return round_half_up(fee * refunded, base)


def reversal(fee: int, base: int, refunded_before: int, amount: int, effect: RefundEffect) -> int:
    """What a refund (or void) of ``amount`` reverses of ``fee`` charged on ``base``, given
    ``refunded_before`` already refunded: a non-negative number to subtract."""
    if effect is RefundEffect.KEEP:
        return 0
    return reversed_so_far(fee, base, refunded_before + amount) - reversed_so_far(fee, base, refunded_before)


@dataclass(frozen=True)
class FeeSchedule:
    """Every fee plan: per bank (connector name) and per merchant id, each an ordered list of rules."""

    banks: Mapping[str, Sequence[FeePlan]] = field(default_factory=dict)
    merchants: Mapping[str, Sequence[FeePlan]] = field(default_factory=dict)
    _chosen: dict[tuple[bool, str, FeeSubject], FeePlan | None] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def bank_plan(self, bank: str, subject: FeeSubject) -> FeePlan | None:
        return self._plan(True, bank, subject)

    def merchant_plan(self, merchant: str, subject: FeeSubject) -> FeePlan | None:
        return self._plan(False, merchant, subject)

    def _plan(self, of_bank: bool, owner: str, subject: FeeSubject) -> FeePlan | None:
        """The first match, remembered: every approved sale asks, and the answer depends only on the
        key. Only configured owners are remembered, so the memory is bounded by the configuration
        times the currencies, schemes and instruments there are."""
        key = (of_bank, owner, subject)
        try:
            return self._chosen[key]
        except KeyError:
            pass
        plans = (self.banks if of_bank else self.merchants).get(owner)
        if plans is None:
            return None
        plan = self._chosen[key] = first_match(plans, subject)
        return plan


NO_FEES = FeeSchedule()
