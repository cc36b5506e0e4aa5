"""Bank accounts, wallets and payments the customer confirms at the bank."""

from __future__ import annotations

import pytest

from tests.tools.banksim.test_issuer import make_issuer
from tests.tools.banksim.wire import code, request, reversal

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
