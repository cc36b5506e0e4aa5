"""Router: longest BIN prefix, rule order, criteria, shadowed-rule refusal."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from switch.engine.router import RouteQuery
from switch.ops.routes import parse_rules
from switch.ops.settings import ConfigError, Table

CONNECTORS = ["bank_a", "bank_b", "bank_c"]


def _router(text: str):
    doc = tomllib.loads(text)
    return parse_rules(Table(doc, Path("routes.toml")).tables("routes"), CONNECTORS)


def _q(bin8="41111111", **kw):
    base = dict(instrument="card", amount=1000, currency="USD", merchant_id="M1", bin8=bin8)
    base.update(kw)
    return RouteQuery(**base)


RULES = """
[[routes]]
name = "visa"
bin_prefixes = ["4"]
connectors = ["bank_a", "bank_b"]
[[routes]]
name = "acme-visa-range"
bin_prefixes = ["41111111"]
connector = "bank_c"
[[routes]]
name = "accounts"
instruments = ["bank_account"]
banks = ["ABA"]
connector = "bank_b"
[[routes]]
name = "big-usd"
instruments = ["card"]
currencies = ["USD"]
min_amount = 100000
connector = "bank_b"
"""


def test_longest_prefix_wins_regardless_of_order():
    r = _router(RULES)
    assert r.route(_q("41111111")).connectors == ("bank_c",)
    assert r.route(_q("42424242")).connectors == ("bank_a", "bank_b")


def test_bank_code_and_instrument():
    r = _router(RULES)
    assert r.route(_q("", instrument="bank_account", bank="ABA")).connectors == ("bank_b",)
    assert r.route(_q("", instrument="bank_account", bank="XYZ")).rule is None


def test_amount_range_and_explanation():
    r = _router(RULES)
    d = r.route(_q("55555555", amount=200000))
    assert d.connectors == ("bank_b",) and "big-usd" in d.explanation and "amount >= 100000" in d.explanation
    assert r.route(_q("55555555", amount=100)).explanation == "no rule matches"


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[routes]]\nbin_prefixes=["4"]\nconnector="nope"\n', "unknown connector 'nope'"),
        ('[[routes]]\nbin_prefixes=["4x"]\nconnector="bank_a"\n', "routes[0].bin_prefixes"),
        ('[[routes]]\ninstruments=["cash"]\nconnector="bank_a"\n', "routes[0].instruments"),
        ('[[routes]]\nconnector="bank_a"\ncolour="red"\n', "routes[0].colour: unknown key"),
        (
            '[[routes]]\nname="all-visa"\nbin_prefixes=["4"]\nconnector="bank_a"\n'
            '[[routes]]\nname="usd-visa"\nbin_prefixes=["4"]\ncurrencies=["USD"]\nconnector="bank_b"\n',
            "rule 'usd-visa' can never match: rule 'all-visa'",
        ),
    ],
)
def test_bad_rules_are_refused_with_file_and_key(text, message):
    with pytest.raises(ConfigError) as e:
        _router(text)
    assert "routes.toml" in str(e.value) and message in str(e.value)
