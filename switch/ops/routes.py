"""Reading the ``[[routes]]`` tables into the engine's `Router`.

Every mistake names the file, the route and the key; a rule shadowed by an earlier,
wider one is refused, because a rule that silently never fires sends money to the
wrong bank.
"""

from __future__ import annotations

from typing import Iterable

from switch.engine.router import INSTRUMENTS, Router, Rule
from switch.ops.settings import ConfigError, Table


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
