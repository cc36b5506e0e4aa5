"""Building the engine's `Router` from the validated ``[[routes]]`` tables.

The keys and their types are in `switch.ops.schema.Route`; what is checked here needs more
than one key: a rule names connectors that are configured, and a rule shadowed by an
earlier, wider one is refused, because a rule that silently never fires sends money to
the wrong bank.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from switch.engine.router import Router, Rule
from switch.ops.schema import Route
from switch.ops.settings import at


def _set(values: list[str] | None, lower: bool = False) -> frozenset[str] | None:
    return None if values is None else frozenset(v.lower() if lower else v for v in values)


def build_router(file: Path, routes: Sequence[Route], connectors: Iterable[str]) -> Router:
    """The router for ``routes``, refusing unknown connectors and rules that can never match."""
    known = set(connectors)
    rules: list[Rule] = []
    for i, route in enumerate(routes):
        where = ("routes", i)
        if (route.connector is None) == (route.connectors is None):
            raise at(file, where, 'expected either connector = "name" or connectors = ["name", ...]')
        key = "connector" if route.connector is not None else "connectors"
        targets = [route.connector] if route.connector is not None else list(route.connectors or ())
        for target in targets:
            if target not in known:
                raise at(file, (*where, key), f"unknown connector {target!r}; configured: {', '.join(sorted(known))}")
        rule = Rule(
            name=route.name or f"route-{i + 1}",
            connectors=tuple(targets),
            instruments=_set(route.instruments),
            prefixes=tuple(route.bin_prefixes),
            schemes=_set(route.schemes, lower=True),
            banks=_set(route.banks),
            currencies=_set(route.currencies),
            merchants=_set(route.merchants),
            min_amount=route.min_amount,
            max_amount=route.max_amount,
        )
        for earlier in rules:
            if earlier.covers(rule):
                raise at(file, where, f"rule {rule.name!r} can never match: rule {earlier.name!r} "
                                      f"({earlier.describe()}) comes first and takes every payment it would")
        rules.append(rule)
    return Router(rules)
