"""The accounts file: the shipped defaults, and mistakes named by file, account and key."""

from __future__ import annotations

import pytest

from switch.tools.banksim import AccountsError, load_accounts
from tests.tools.banksim.wire import BLOCKED, DO_NOT_HONOUR, EXPIRED, LIMITED, MASTERCARD, NO_FUNDS, VISA, YEN


def test_default_accounts():
    accounts = load_accounts()
    confirm, bank_accounts = "5200000000001005", {"000123456789", "000987654321", "TRUEMONEY:0812345678"}
    assert set(accounts) == {VISA, MASTERCARD, DO_NOT_HONOUR, NO_FUNDS, EXPIRED, BLOCKED, LIMITED, YEN, confirm} | bank_accounts
    assert all(a.cvv == "123" for pan, a in accounts.items() if pan not in bank_accounts)
    assert accounts[confirm].status == accounts["000987654321"].status == "confirm"
    assert accounts[VISA].balance == 1000000 and accounts[VISA].currency.numeric == "840"
    assert accounts[YEN].currency.alpha == "JPY" and accounts[LIMITED].limit == 10000
    assert (accounts[BLOCKED].status, accounts[DO_NOT_HONOUR].status) == ("blocked", "do_not_honour")


GOOD = 'pan = "4111111111111111"\nexpiry = "3012"\ncvv = "123"\nbalance = 100\ncurrency = "USD"\n'


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[account]]\n" + GOOD.replace('"3012"', '"3013"'), "account #1.expiry: got '3013'; expected a YYMM string"),
        ("[[account]]\n" + GOOD.replace('"123"', '"12"'), "account #1.cvv: got '12'; expected a string of 3 to 4 digits"),
        ("[[account]]\n" + GOOD.replace('"USD"', '"XYZ"'), "account #1.currency: got 'XYZ'; expected an ISO 4217"),
        ("[[account]]\n" + GOOD.replace("100", "1.5"), "account #1.balance: got 1.5; expected an integer"),
        ("[[account]]\n" + GOOD + 'status = "frozen"\n', "account #1.status: got 'frozen'; expected one of active"),
        ("[[account]]\n" + GOOD + "limit = -1\n", "account #1.limit: got -1; expected at least 0"),
        ("[[account]]\n" + GOOD + "colour = 1\n", "account #1: unknown key(s) ['colour']"),
        ("[[account]]\n" + GOOD + "[[account]]\n" + GOOD, "account #2.pan: the same PAN is already listed earlier"),
        ("[[account]]\ncvv = \"123\"\n", "account #1: missing key(s) ['pan', 'expiry', 'balance', 'currency']"),
        ("", "expected at least one [[account]] table"),
        ("cards = 1\n", "unknown key(s) ['cards']"),
        ("[[account]\n", "not valid TOML"),
    ],
)
def test_mistakes_are_named(tmp_path, text, message):
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    with pytest.raises(AccountsError) as e:
        load_accounts(path)
    assert str(e.value).startswith(str(path)) and message in str(e.value)
