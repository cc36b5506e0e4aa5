"""`kswitch risk block|unblock|list|explain`: the operator's side of the risk stage.

Works on the journal directly (beside a running switch, like `kswitch saf`): the risk
stage reads the blocklist in every evaluation, so a change applies to the next payment.
A card is stored only as its keyed PAN hash and shown masked; an email only as its hash.
`explain` evaluates the configured rules for a payment described on the command line,
reading the live counters and lists and changing nothing.
"""

from __future__ import annotations

import argparse
import ipaddress
import time
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock

from switch.domain.cardcheck import luhn_valid, mask_pan
from switch.domain.currency import by_alpha
from switch.domain.customer import Customer
from switch.domain.model import AuthorizeRequest, CardInstrument
from switch.engine.risk import RiskRules, RiskStage
from switch.journal.errors import InvalidRecord

LIST_HELP = "card (a card number), bin (6 or 8 digits), ip (an address), device, email or customer (an id)"


def add_parser(sub: Any, config: argparse.ArgumentParser) -> None:
    risk = sub.add_parser("risk", help="risk management: blocklist, explain a decision", parents=[config])
    risk_sub = risk.add_subparsers(dest="action", required=True)
    for name, text in (("block", "add an entry to the blocklist"), ("unblock", "remove an entry (or a hold)")):
        p = risk_sub.add_parser(name, help=text, parents=[config])
        p.add_argument("kind", choices=("card", "bin", "ip", "device", "email", "customer"), help=LIST_HELP)
        p.add_argument("value")
        if name == "block":
            p.add_argument("--operator", required=True)
    risk_sub.add_parser("list", help="list the blocklist and the holds in force", parents=[config])
    explain = risk_sub.add_parser("explain", help="which rules a payment would match (sends and counts nothing)",
                                  parents=[config])
    explain.add_argument("--pan", required=True, help="card number")
    explain.add_argument("--amount", type=int, required=True, help="amount in minor units")
    explain.add_argument("--currency", required=True)
    explain.add_argument("--merchant", required=True)
    explain.add_argument("--ip")
    explain.add_argument("--device")
    explain.add_argument("--email")
    explain.add_argument("--customer")
    explain.add_argument("--idempotency-key")


def list_entry(stage: RiskStage, kind: str, value: str) -> tuple[str, str]:
    """The stored value of an entry and what may be shown of it; InvalidRecord for a bad value."""
    if kind == "card":
        if not (value.isascii() and value.isdigit() and 12 <= len(value) <= 19 and luhn_valid(value)):
            raise InvalidRecord("expected a card number of 12-19 digits passing the Luhn check")
        return stage.card_key(value), mask_pan(value)
    if kind == "bin" and not (value.isascii() and value.isdigit() and len(value) in (6, 8)):
        raise InvalidRecord(f"expected a BIN of 6 or 8 digits, got {value!r}")
    if kind == "ip":
        try:
            value = str(ipaddress.ip_address(value))
        except ValueError:
            raise InvalidRecord(f"expected an IP address, got {value!r} (networks go in the config file)") from None
    if kind == "email":
        local, _, domain = value.partition("@")
        if not (value.isascii() and local and domain):
            raise InvalidRecord("expected an email address such as ana@example.com")
        return stage.email_key(value), f"{local[:1]}***@{domain}"
    return value, value


async def run(journal: Any, args: argparse.Namespace, rules: RiskRules) -> list[str]:
    now = Clock()
    now.advance(time.time())
    stage = RiskStage(now, journal, rules, CollectorRegistry())
    if args.action == "block":
        value, shown = list_entry(stage, args.kind, args.value)
        added = await journal.risk_block(args.kind, value, shown, f"operator {args.operator}")
        return [f"{args.kind} {shown} {'blocked' if added else 'was already blocked'}"]
    if args.action == "unblock":
        value, shown = list_entry(stage, args.kind, args.value)
        gone = await journal.risk_unblock(args.kind, value)
        if not gone:
            raise InvalidRecord(f"{args.kind} {shown} is not on the blocklist")
        return [f"{args.kind} {shown} unblocked"]
    if args.action == "list":
        return [f"{e.kind:<28} {e.shown:<24} {e.source:<24} "
                f"{'permanent' if e.expires_at is None else 'until ' + _utc(e.expires_at)}"
                for e in await journal.risk_blocklist()]
    return await _explain(stage, args, rules)


async def _explain(stage: RiskStage, args: argparse.Namespace, rules: RiskRules) -> list[str]:
    currency = by_alpha(args.currency.upper())
    if currency is None:
        raise InvalidRecord(f"unknown currency {args.currency!r}")
    if not (args.pan.isdigit() and 12 <= len(args.pan) <= 19):
        raise InvalidRecord("expected --pan of 12-19 digits")
    request = AuthorizeRequest(
        merchant_id=args.merchant, store_id="explain", order_id="explain", amount=args.amount, currency=currency,
        capture=True, instrument=CardInstrument(args.pan, "9912"), idempotency_key=args.idempotency_key,
        customer=Customer(id=args.customer, email=args.email, ip=args.ip, device_id=args.device),
    )
    facts = stage.facts(request)
    verdict = await stage.explain(facts)
    names = {m["rule"]: m for m in verdict.matches}
    lines = [f"{mask_pan(args.pan)} {args.amount} {currency.alpha} at {args.merchant}"
             f" (issuing country {facts.country or 'unknown'}): {len(rules.rules)} rule(s)"]
    for rule in rules.rules:
        match = names.get(rule.name)
        if not rule.scope.covers(facts):
            state = "out of scope"
        elif match is None:
            state = "no match"
        else:
            state = f"MATCH {match['seen']}"
        lines.append(f"  {rule.name:<24} {rule.kind:<13} {rule.action:<8} {rule.mode:<8} {state}")
    decided = f" by {verdict.rule}" if verdict.rule else ""
    if verdict.action == "step_up":
        otherwise = next(r.otherwise for r in rules.rules if r.name == verdict.rule)
        decided += f" ({otherwise} where the connector cannot ask the customer to confirm)"
    lines.append(f"decision: {verdict.action}{decided}")
    return lines


def _utc(microseconds: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(microseconds / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
