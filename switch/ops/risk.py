"""Building the risk stage's rules from the validated ``[risk]`` table.

The keys and their types are in `switch.ops.schema.RiskRule`; what is checked here needs
the rule's kind: which keys a kind takes (a `max_count` on a blocklist is a mistake, not
something to ignore), the keys a kind needs, names used twice, addresses, time zones and
the BIN table file.  Every error names the file, the rule (by index and name) and the key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from switch.domain.cardcheck import luhn_valid
from switch.domain.panscan import looks_like_pan
from switch.engine.risk import LIST_KINDS, BinTableError, RiskRules, Rule, Scope, load_bin_table
from switch.ops.schema import RiskRule, RiskSection
from switch.ops.settings import ConfigError, at

_COMMON = {"name", "kind", "action", "mode", "otherwise", "merchants", "currencies", "instruments"}
_KEYS = {
    "blocklist": {"lists", "cards", "bins", "ips", "devices", "emails", "customers"},
    "amount_limit": {"min_amount", "max_amount"},
    "cumulative": {"per", "max_amount", "max_count", "window", "period", "timezone"},
    "velocity": {"per", "max_count", "window"},
    "card_testing": {"per", "declines", "window", "hold"},
    "country": {"allow_countries", "deny_countries", "unknown_country"},
    "duplicate": {"window"},
}
_NEEDS = {
    "amount_limit": ({"min_amount", "max_amount"}, "min_amount or max_amount"),
    "cumulative": ({"max_amount", "max_count"}, "max_amount or max_count"),
    "velocity": ({"max_count"}, "max_count"),
    "country": ({"allow_countries", "deny_countries"}, "allow_countries or deny_countries"),
}


_EMAIL = re.compile(r"[\x21-\x3f\x41-\x7e]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z0-9-]{2,63}")
_RULE_PATH = re.compile(r"(: risk\.rules\[(\d+)\][^:]*): ")


def name_the_rule(error: ConfigError, doc: Mapping[str, Any]) -> ConfigError:
    """A schema error about a risk rule, with the rule's name at the end (the schema knows only its index)."""
    found = _RULE_PATH.search(str(error))
    if found is None:
        return error
    try:
        name = doc["risk"]["rules"][int(found.group(2))]["name"]
    except (KeyError, IndexError, TypeError):
        return error
    if not isinstance(name, str):
        return error
    return ConfigError(f"{error} (in rule {name!r})")


def build_risk(file: Path, section: RiskSection) -> RiskRules:
    """The rules of ``section`` in order, with the BIN table it names."""
    bins = None
    if section.bin_table is not None:
        path = Path(section.bin_table)
        path = path if path.is_absolute() else file.resolve().parent / path
        try:
            bins = load_bin_table(path)
        except BinTableError as e:
            raise at(file, ("risk", "bin_table"), str(e)) from None
    seen: set[str] = set()
    rules = []
    for i, r in enumerate(section.rules):
        where = ("risk", "rules", i)
        if looks_like_pan(r.name):  # a name goes into answers, logs and the journal's counter names
            raise at(file, (*where, "name"), "a rule's name must not look like a card number")
        if r.name in seen:
            raise at(file, (*where, "name"), f"rule {r.name!r}: another rule has this name")
        seen.add(r.name)
        rules.append(_rule(file, where, r))
    if bins is None and any(r.kind == "country" for r in rules):
        raise at(file, ("risk", "bin_table"), "country rules need a BIN table: set bin_table")
    return RiskRules(tuple(rules), bins)


def _rule(file: Path, where: tuple[str | int, ...], r: RiskRule) -> Rule:
    def error(key: str, message: str) -> ConfigError:
        return at(file, (*where, key), f"rule {r.name!r}: {message}")

    allowed = _COMMON | _KEYS[r.kind]
    for key in sorted(r.model_fields_set - allowed):
        raise error(key, f"kind {r.kind} does not take {key}; it takes {', '.join(sorted(_KEYS[r.kind]))}")
    needs = _NEEDS.get(r.kind)
    if needs is not None and not needs[0] & r.model_fields_set:
        raise error(sorted(needs[0])[0], f"kind {r.kind} needs {needs[1]}")
    if r.kind == "amount_limit" and r.min_amount and r.max_amount and r.min_amount > r.max_amount:
        raise error("min_amount", f"min_amount {r.min_amount} is above max_amount {r.max_amount}")
    try:
        ZoneInfo(r.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise error("timezone", f"unknown time zone {r.timezone!r}; expected an IANA name such as Asia/Phnom_Penh") \
            from None
    entries: set[tuple[str, str]] = set()
    for j, pan in enumerate(r.cards):
        if not (pan.isascii() and pan.isdigit() and 12 <= len(pan) <= 19 and luhn_valid(pan)):
            raise error(f"cards[{j}]", "expected a card number of 12-19 digits passing the Luhn check")
        entries.add(("card-pan", pan))
    networks = []
    for j, text in enumerate(r.ips):
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise error(f"ips[{j}]", f"expected an IP address or CIDR network, got {text!r}") from None
        if network.num_addresses == 1:
            entries.add(("ip", str(network.network_address)))
        else:
            networks.append(network)
    entries |= {("bin", b) for b in r.bins} | {("device", d) for d in r.devices}
    for j, email in enumerate(r.emails):
        if not _EMAIL.fullmatch(email):
            raise error(f"emails[{j}]", "expected an email address such as ana@example.com (ASCII)")
    entries |= {("email-clear", e.strip().lower()) for e in r.emails} | {("customer", c) for c in r.customers}
    return Rule(
        name=r.name, kind=r.kind, action=r.action, mode=r.mode, otherwise=r.otherwise,
        scope=Scope(_set(r.merchants), _set(r.currencies), _set(r.instruments)),
        lists=tuple(r.lists) if r.lists else LIST_KINDS, entries=frozenset(entries), networks=tuple(networks),
        min_amount=r.min_amount, max_amount=r.max_amount, per=r.per, max_count=r.max_count, window=r.window,
        period=r.period, timezone=r.timezone, declines=r.declines, hold=r.hold,
        allow=_set(r.allow_countries), deny=frozenset(r.deny_countries),
        unknown_matches=r.unknown_country == "match",
    )


def _set(values: Sequence[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)
