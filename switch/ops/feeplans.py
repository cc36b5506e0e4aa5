"""Building the journal's `FeeSchedule` from the validated ``[fees]`` tables.

The keys are in `switch.ops.schema.FeeRule`; what needs more than one key is checked here:
a rule names a configured bank or merchant, its amounts name current currencies and have
no more decimals than the currency has, and its minimum is not above its maximum.  A fee
rule that silently never applies is money nobody collects, so a mistake stops the switch.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from switch.domain.currency import by_alpha
from switch.domain.fees import FeePlan, FeeSchedule, RefundEffect, to_minor
from switch.ops.schema import FeeRule, FeesSection
from switch.ops.settings import at


def _set(values: list[str] | None, lower: bool = False) -> frozenset[str] | None:
    return None if values is None else frozenset(v.lower() if lower else v for v in values)


def _plan(file: Path, where: tuple[str | int, ...], rule: FeeRule) -> FeePlan:
    amounts: dict[str, dict[str, int]] = {"fixed": {}, "minimum": {}, "maximum": {}}
    seen: set[str] = set()
    for i, entry in enumerate(rule.per_currency):
        if by_alpha(entry.currency) is None:
            raise at(file, (*where, "per_currency", i, "currency"),
                     f"{entry.currency!r} is not a current ISO 4217 currency")
        if entry.currency in seen:
            raise at(file, (*where, "per_currency", i, "currency"), f"{entry.currency} is listed twice")
        seen.add(entry.currency)
        for key, table in amounts.items():
            value = getattr(entry, key)
            if value is None:
                continue
            try:
                table[entry.currency] = to_minor(value, entry.currency)
            except ValueError as e:
                raise at(file, (*where, "per_currency", i, key), str(e)) from None
    try:
        return FeePlan(
            basis_points=rule.basis_points, fixed=amounts["fixed"], minimum=amounts["minimum"],
            maximum=amounts["maximum"], on_refund=RefundEffect(rule.on_refund),
            schemes=_set(rule.schemes, lower=True), instruments=_set(rule.instruments),
            currencies=_set(rule.currencies),
        )
    except ValueError as e:
        raise at(file, where, str(e)) from None


def _plans(file: Path, section: str, key: str, rules: Sequence[FeeRule],
           known: Collection[str]) -> Mapping[str, list[FeePlan]]:
    plans: dict[str, list[FeePlan]] = {}
    for i, rule in enumerate(rules):
        name = getattr(rule, key)
        if name not in known:
            raise at(file, ("fees", section, i, key), f"unknown {key} {name!r}; configured: {', '.join(sorted(known))}")
        plans.setdefault(name, []).append(_plan(file, ("fees", section, i), rule))
    return plans


def build_fee_schedule(file: Path, fees: FeesSection, banks: Collection[str],
                       merchants: Collection[str]) -> FeeSchedule:
    """The fee schedule for ``fees``, refusing unknown banks and merchants and malformed amounts."""
    return FeeSchedule(
        banks=_plans(file, "banks", "bank", fees.banks, banks),
        merchants=_plans(file, "merchants", "merchant", fees.merchants, merchants),
    )
