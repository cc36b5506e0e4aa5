"""Fee plans in the configuration: the demo plans load, and mistakes name the key."""

from __future__ import annotations

import pytest

from switch.domain.fees import FeeSubject, RefundEffect
from switch.ops.config import load_config
from switch.ops.settings import ConfigError
from tests.ops.test_config import _variant


def test_the_demo_fee_plans_load_in_minor_units():
    fees = load_config().journal.fees
    usd = FeeSubject("USD", "visa", "card")
    bank_a, bank_b, m100 = fees.bank_plan("bank_a", usd), fees.bank_plan("bank_b", usd), fees.merchant_plan("M100", usd)
    assert (bank_a.basis_points, dict(bank_a.minimum)) == (50, {"USD": 10})
    assert (bank_b.basis_points, dict(bank_b.fixed)) == (40, {"USD": 5})
    assert m100.basis_points == 250
    assert {p.on_refund for p in (bank_a, bank_b, m100)} == {RefundEffect.REVERSE}


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ('bank = "bank_a"', 'bank = "bank_z"', "fees.banks[0].bank: unknown bank 'bank_z'; configured: bank_a, bank_b"),
        ('merchant = "M100"', 'merchant = "M999"', "fees.merchants[0].merchant: unknown merchant 'M999'"),
        ('minimum = "0.10"', 'minimum = "0.105"',
         "fees.banks[0].per_currency[0].minimum: '0.105' has more decimals than USD has (2)"),
        ('currency = "USD", minimum', 'currency = "XYZ", minimum',
         "fees.banks[0].per_currency[0].currency: 'XYZ' is not a current ISO 4217 currency"),
        ('minimum = "0.10"', 'minimum = 0.10', "fees.banks[0].per_currency[0].minimum: got 0.1; expected a decimal"),
        ('minimum = "0.10"', 'minimum = "-1"', "fees.banks[0].per_currency[0].minimum: got '-1'; expected a decimal"),
        ('minimum = "0.10"', 'minimum = "0.10", maximum = "0.05"',
         "fees.banks[0]: minimum 10 is above maximum 5 for USD"),
        ('minimum = "0.10" }]', 'minimum = "0.10" }, { currency = "USD" }]',
         "fees.banks[0].per_currency[1].currency: USD is listed twice"),
        ('basis_points = 250', 'basis_points = -1', "fees.merchants[0].basis_points: got -1"),
        ('on_refund = "reverse"\n', 'on_refund = "refund"\n', "fees.banks[0].on_refund: got 'refund'; expected one of reverse, keep"),
    ],
)
def test_fee_plan_mistakes_name_the_key(tmp_path, old, new, expected):
    path = _variant(tmp_path, old, new)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert expected in str(e.value)
