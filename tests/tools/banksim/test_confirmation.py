"""Bank accounts, wallets and payments the customer confirms at the bank."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.tools.banksim.issuer import confirmation_asked
from tests.tools.banksim.test_issuer import make_issuer
from tests.tools.banksim.wire import VISA, code, request, reversal

DIALECTS = Path(__file__).resolve().parents[3] / "specs" / "dialects"

CONFIRM_CARD, CONFIRM_ACCOUNT, ACCOUNT = "5200000000001005", "000987654321", "000123456789"


def account_request(kind, version, account, **fields):
    message = request(kind, version, pan=CONFIRM_CARD, **fields)
    for n in ("2", "14", "48"):
        message.pop(n, None)
    message["102"] = account
    return message


@pytest.mark.parametrize("dialect", ["iso87ascii", "iso93ascii"])
def test_bank_account_sale_and_reversal_use_field_102(dialect):
    issuer, _ = make_issuer(dialect)
    v = issuer.version
    sale = account_request("sale", v, ACCOUNT, amount=700)
    assert issuer.answer(sale)["39"] == code("00", v)
    assert issuer.ledger.balance(ACCOUNT) == 500000 - 700
    issuer.answer(reversal(sale, v, stan="000002"))
    assert issuer.ledger.balance(ACCOUNT) == 500000


@pytest.mark.parametrize("dialect", ["iso87ascii", "iso93ascii"])
def test_confirm_account_answers_pending_with_a_url_and_moves_money_only_on_approval(dialect):
    issuer, _ = make_issuer(dialect)
    v = issuer.version
    answer = issuer.answer(request("sale", v, pan=CONFIRM_CARD, amount=900))
    assert answer["39"] == ("09" if v == 1987 else "923")
    [ref] = issuer.pending
    assert answer["62"] == f"http://127.0.0.1/confirm/{ref}" and issuer.ledger.balance(CONFIRM_CARD) == 1000000
    pending, rc, auth = issuer.decide_pending(ref, approve=True)
    assert rc == code("00", v) and len(auth) == 6 and issuer.ledger.balance(CONFIRM_CARD) == 1000000 - 900
    assert not issuer.pending
    with pytest.raises(KeyError):
        issuer.decide_pending(ref, approve=True)


def test_rejected_confirmation_is_do_not_honour_and_moves_nothing():
    issuer, _ = make_issuer("iso93ascii")
    issuer.answer(account_request("sale", 1993, CONFIRM_ACCOUNT, amount=900))
    _, rc, auth = issuer.decide_pending(next(iter(issuer.pending)), approve=False)
    assert (rc, auth) == ("100", None) and issuer.ledger.balance(CONFIRM_ACCOUNT) == 500000


def test_a_sakura_request_asking_for_confirmation_waits_for_the_customer_even_for_an_active_card():
    issuer, _ = make_issuer(str(DIALECTS / "sakura.toml"))
    order = "01004SHOP02003o-1"
    assert issuer.answer(request("sale", 1993, amount=900, **{"48": order, "126": "123"}))["39"] == "000"
    asked = issuer.answer(request("sale", 1993, amount=900, stan="000002", **{"48": order + "040011", "126": "123"}))
    [ref] = issuer.pending
    assert (asked["39"], asked["62"]) == ("923", f"http://127.0.0.1/confirm/{ref}")
    assert issuer.ledger.balance(VISA) == 1000000 - 900  # only the first sale so far
    assert issuer.decide_pending(ref, approve=True)[1] == "000" and issuer.ledger.balance(VISA) == 1000000 - 1800


@pytest.mark.parametrize(("field", "asked"), [
    ("040011", True), ("01004SHOP040011", True), ("040010", False), ("01004SHOP", False), ("123", False),
    ("04", False), ("01009SHOP", False), ("", False),
])
def test_only_a_well_formed_tag_04_asks_for_confirmation(field, asked):
    assert confirmation_asked({"48": field}) is asked
