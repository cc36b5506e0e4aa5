"""The issuer's decisions without a network: every response code, the ledger, reversals, duplicates."""

from __future__ import annotations

from dataclasses import replace

import pytest
from twisted.internet.task import Clock

from switch.iso.dialect import load_dialect
from switch.tools.banksim import Issuer, Ledger, load_accounts
from switch.tools.banksim.issuer import parse_original_data
from tests.tools.banksim.wire import (
    BLOCKED,
    DO_NOT_HONOUR,
    EXPIRED,
    LIMITED,
    MASTERCARD,
    NO_FUNDS,
    TODAY,
    UNKNOWN,
    VISA,
    YEN,
    code,
    network,
    request,
    reversal,
)

DIALECTS = ["iso87ascii", "iso93ascii"]


def make_issuer(dialect: str = "iso87ascii", **kwargs) -> tuple[Issuer, Clock]:
    clock = Clock()
    clock.advance(TODAY)
    return Issuer(Ledger(load_accounts()), load_dialect(dialect), clock, **kwargs), clock


OUTCOMES = [
    ("approved visa", VISA, {}, "00"),
    ("approved mastercard", MASTERCARD, {}, "00"),
    ("unknown card", UNKNOWN, {}, "14"),
    ("expired card", EXPIRED, {}, "54"),
    ("expiry in the request differs", VISA, {"14": "2912"}, "54"),
    ("wrong cvv", VISA, {"48": "999"}, "N7"),
    ("no cvv sent: not checked", VISA, {"48": ""}, "00"),
    ("blocked", BLOCKED, {}, "62"),
    ("do not honour", DO_NOT_HONOUR, {}, "05"),
    ("currency not the account's", VISA, {"49": "978"}, "12"),
    ("at the limit", LIMITED, {"4": "000000010000"}, "00"),
    ("over the limit", LIMITED, {"4": "000000010001"}, "61"),
    ("insufficient funds", NO_FUNDS, {}, "51"),
    ("yen account in yen", YEN, {"49": "392"}, "00"),
    ("yen account in dollars", YEN, {}, "12"),
    ("expired beats wrong cvv", EXPIRED, {"48": "999"}, "54"),
    ("wrong cvv beats blocked", BLOCKED, {"48": "999"}, "N7"),
    ("blocked beats no funds", BLOCKED, {"4": "999999999999"}, "62"),
    ("limit beats no funds", LIMITED, {"4": "999999999999"}, "61"),
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("kind", ["sale", "auth"])
@pytest.mark.parametrize("case, pan, extra, expected", OUTCOMES, ids=[o[0] for o in OUTCOMES])
def test_every_response_code(dialect, kind, case, pan, extra, expected):
    issuer, _ = make_issuer(dialect)
    version = issuer.version
    answer = issuer.answer(request(kind, version, pan=pan, **extra))
    assert answer["39"] == code(expected, version)
    assert answer["t"] == {"0100": "0110", "0200": "0210", "1100": "1110", "1200": "1210"}[request(kind, version)["t"]]
    if expected == "00":
        assert len(answer["38"]) == 6
    else:
        assert "38" not in answer


def test_answer_echoes_keys_but_never_card_secrets():
    issuer, _ = make_issuer()
    sent = request("sale", 1987)
    answer = issuer.answer(sent)
    for n in ("2", "3", "4", "7", "11", "32", "37", "41", "42", "49"):
        assert answer[n] == sent[n]
    assert not {"14", "35", "48", "52", "55"} & set(answer)


def test_cvv_answer_is_configurable():
    issuer, _ = make_issuer(cvv_code="05")
    assert issuer.answer(request("sale", 1987, **{"48": "999"}))["39"] == "05"
    with pytest.raises(ValueError, match="three-digit action code"):
        make_issuer("iso93ascii", cvv_code="X")


def test_card_is_valid_to_the_end_of_its_expiry_month():
    accounts = load_accounts()
    accounts[VISA] = replace(accounts[VISA], expiry="2606")
    clock = Clock()
    clock.advance(TODAY)
    issuer = Issuer(Ledger(accounts), load_dialect("iso87ascii"), clock)
    assert issuer.answer(request("sale", 1987, stan="000001", **{"14": "2606"}))["39"] == "00"
    clock.advance(20 * 24 * 3600)
    assert issuer.answer(request("sale", 1987, stan="000002", **{"14": "2606"}))["39"] == "54"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_sale_debits_and_reversal_restores(dialect):
    issuer, _ = make_issuer(dialect)
    v = issuer.version
    sale = request("sale", v, amount=2500)
    assert issuer.answer(sale)["39"] == code("00", v)
    assert issuer.ledger.balance(VISA) == 1000000 - 2500
    answer = issuer.answer(reversal(sale, v, stan="000002"))
    assert answer["t"] == ("0410" if v == 1987 else "1430")
    assert answer["39"] == code("00", v)
    assert issuer.ledger.balance(VISA) == 1000000


@pytest.mark.parametrize("dialect", DIALECTS)
def test_repeated_reversal_restores_once(dialect):
    issuer, _ = make_issuer(dialect)
    v = issuer.version
    sale = request("sale", v, amount=2500)
    issuer.answer(sale)
    issuer.answer(reversal(sale, v, stan="000002"))
    repeat = issuer.answer(reversal(sale, v, stan="000003", repeat=True))
    same_stan_repeat = issuer.answer(reversal(sale, v, stan="000002", repeat=True))
    assert repeat["39"] == same_stan_repeat["39"] == code("00", v)
    assert repeat["t"] == ("0410" if v == 1987 else "1430")
    assert issuer.ledger.balance(VISA) == 1000000


def test_reversal_falls_back_to_rrn():
    issuer, _ = make_issuer()
    sale = request("sale", 1987, amount=700, rrn="RRN000000042")
    issuer.answer(sale)
    issuer.answer(reversal(sale, 1987, stan="000002", by_rrn=True))
    assert issuer.ledger.balance(VISA) == 1000000


def test_reversal_with_unmatched_original_data_falls_back_to_rrn():
    issuer, _ = make_issuer()
    sale = request("sale", 1987, amount=700)
    issuer.answer(sale)
    rev = reversal(sale, 1987, stan="000002")
    rev["90"] = "0200" + "999999" + rev["90"][10:]
    issuer.answer(rev)
    assert issuer.ledger.balance(VISA) == 1000000


def test_reversal_of_unknown_original_is_approved_and_changes_nothing():
    issuer, _ = make_issuer()
    ghost = request("sale", 1987, amount=700, stan="000077", rrn="NEVERSEEN001")
    answer = issuer.answer(reversal(ghost, 1987, stan="000078"))
    assert answer["39"] == "00"
    assert issuer.ledger.balance(VISA) == 1000000


def test_reversal_of_a_decline_changes_nothing():
    issuer, _ = make_issuer()
    declined = request("sale", 1987, pan=NO_FUNDS, amount=700)
    assert issuer.answer(declined)["39"] == "51"
    assert issuer.answer(reversal(declined, 1987, stan="000002"))["39"] == "00"
    assert issuer.ledger.balance(NO_FUNDS) == 0


@pytest.mark.parametrize("dialect", DIALECTS)
def test_duplicate_is_answered_with_the_original_answer_and_debited_once(dialect):
    issuer, _ = make_issuer(dialect)
    v = issuer.version
    sale = request("sale", v, amount=300)
    first = issuer.answer(sale)
    again = issuer.answer(dict(sale))
    assert again == first
    assert issuer.ledger.balance(VISA) == 1000000 - 300


def test_same_keys_different_content_is_a_duplicate_transmission():
    issuer, _ = make_issuer()
    issuer.answer(request("sale", 1987, amount=300))
    answer = issuer.answer(request("sale", 1987, amount=301))
    assert answer["39"] == "94"
    assert issuer.ledger.balance(VISA) == 1000000 - 300


def test_same_stan_other_terminal_is_not_a_duplicate():
    issuer, _ = make_issuer()
    issuer.answer(request("sale", 1987, amount=300))
    assert issuer.answer(request("sale", 1987, amount=300, **{"41": "TERM0002"}))["39"] == "00"
    assert issuer.ledger.balance(VISA) == 1000000 - 600


def test_declined_duplicate_replays_the_decline():
    issuer, _ = make_issuer()
    sale = request("sale", 1987, pan=DO_NOT_HONOUR)
    assert issuer.answer(sale)["39"] == issuer.answer(dict(sale))["39"] == "05"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_preauth_holds_and_completion_debits_part(dialect):
    issuer, _ = make_issuer(dialect)
    v = issuer.version
    auth = request("auth", v, amount=5000, stan="000010")
    approved = issuer.answer(auth)
    assert approved["39"] == code("00", v)
    assert issuer.ledger.balance(VISA) == 1000000
    assert issuer.ledger.available(VISA) == 1000000 - 5000
    completion = request("completion", v, amount=4200, stan="000011", rrn=auth["37"])
    answer = issuer.answer(completion)
    assert answer["t"] == ("0230" if v == 1987 else "1230")
    assert answer["39"] == code("00", v)
    assert answer["38"] == approved["38"]
    assert issuer.ledger.balance(VISA) == 1000000 - 4200
    assert issuer.ledger.available(VISA) == 1000000 - 4200


def test_completion_found_by_original_data_elements():
    issuer, _ = make_issuer()
    auth = request("auth", 1987, amount=5000, stan="000010", rrn="AUTH00000001")
    issuer.answer(auth)
    completion = request("completion", 1987, amount=5000, stan="000011", rrn="OTHER0000001")
    completion["90"] = reversal(auth, 1987, stan="x")["90"]
    issuer.answer(completion)
    assert issuer.ledger.available(VISA) == issuer.ledger.balance(VISA) == 1000000 - 5000


def test_hold_counts_against_available_funds():
    issuer, _ = make_issuer()
    assert issuer.answer(request("auth", 1987, amount=900000, stan="000001"))["39"] == "00"
    assert issuer.answer(request("sale", 1987, amount=200000, stan="000002"))["39"] == "51"


def test_reversal_of_preauth_releases_the_hold():
    issuer, _ = make_issuer()
    auth = request("auth", 1987, amount=5000)
    issuer.answer(auth)
    issuer.answer(reversal(auth, 1987, stan="000002"))
    assert issuer.ledger.available(VISA) == 1000000


def test_reversal_of_completion_credits_it_back():
    issuer, _ = make_issuer()
    auth = request("auth", 1987, amount=5000, stan="000010")
    issuer.answer(auth)
    completion = request("completion", 1987, amount=4200, stan="000011", rrn=auth["37"])
    issuer.answer(completion)
    issuer.answer(reversal(completion, 1987, stan="000012"))
    assert issuer.ledger.balance(VISA) == issuer.ledger.available(VISA) == 1000000


def test_hold_expires_after_retention():
    issuer, clock = make_issuer(retention=3600)
    issuer.answer(request("auth", 1987, amount=5000))
    clock.advance(3601)
    issuer.answer(network(1987))
    assert issuer.ledger.available(VISA) == 1000000


@pytest.mark.parametrize("dialect", DIALECTS)
def test_refund_credits_and_its_reversal_debits_back(dialect):
    issuer, _ = make_issuer(dialect)
    v = issuer.version
    refund = request("sale", v, pan=NO_FUNDS, amount=1500, **{"3": "200000"})
    answer = issuer.answer(refund)
    assert answer["39"] == code("00", v)
    assert issuer.ledger.balance(NO_FUNDS) == 1500
    issuer.answer(reversal(refund, v, stan="000002"))
    assert issuer.ledger.balance(NO_FUNDS) == 0


def test_refund_is_not_limited_but_still_checks_the_card():
    issuer, _ = make_issuer()
    assert issuer.answer(request("sale", 1987, pan=LIMITED, amount=50000, **{"3": "200000"}))["39"] == "00"
    assert issuer.answer(request("sale", 1987, pan=BLOCKED, amount=1, stan="000002", **{"3": "200000"}))["39"] == "62"


def test_unsupported_processing_code_and_mti_are_invalid_transactions():
    issuer, _ = make_issuer()
    assert issuer.answer(request("sale", 1987, **{"3": "310000"}))["39"] == "12"
    reconciliation = issuer.answer({"t": "0500", "11": "000001"})
    assert reconciliation == {"t": "0510", "11": "000001", "39": "12"}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_missing_mandatory_field_is_a_format_error(dialect):
    issuer, _ = make_issuer(dialect)
    v = issuer.version
    sale = request("sale", v)
    del sale["4"]
    assert issuer.answer(sale)["39"] == code("30", v)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("kind", ["sign_on", "sign_off", "echo"])
def test_network_management_is_approved(dialect, kind):
    issuer, _ = make_issuer(dialect)
    v = issuer.version
    answer = issuer.answer(network(v, kind))
    assert answer["t"][:3] == ("081" if v == 1987 else "181")
    assert answer["39"] == code("00", v)
    assert answer["11"] == "000009"


def test_1804_is_answered_1814():
    issuer, _ = make_issuer("iso93ascii")
    assert issuer.answer(network(1993))["t"] == "1814"


def test_unknown_network_code_is_refused():
    issuer, _ = make_issuer()
    assert issuer.answer({"t": "0800", "11": "000001", "70": "161"})["39"] == "12"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_decline_all_leaves_the_ledger_and_reversals_alone(dialect):
    issuer, _ = make_issuer(dialect)
    v = issuer.version
    sale = request("sale", v)
    assert issuer.answer(sale, decline_all="05")["39"] == code("05", v)
    assert issuer.ledger.balance(VISA) == 1000000
    assert issuer.answer(reversal(sale, v, stan="000002"), decline_all="05")["39"] == code("00", v)
    assert issuer.answer(network(v), decline_all="05")["39"] == code("00", v)


def test_format_error_answer_for_an_unreadable_request():
    issuer, _ = make_issuer("iso93ascii")
    assert issuer.format_error("1200") == {"t": "1210", "39": "904"}


@pytest.mark.parametrize(
    "value, expected",
    [
        ("0200" "000001" "0615120000" "00000400001" "00000000000", ("0200", "000001", "0615120000", "400001")),
        ("1200" "000001" "260615120000" "06" "400001", ("1200", "000001", "260615120000", "400001")),
        ("1200" "000001" "260615120000", ("1200", "000001", "260615120000", "")),
        ("12345", None),
        ("x" * 42, None),
    ],
)
def test_original_data_elements_layouts(value, expected):
    ref = parse_original_data(value)
    assert (ref and (ref.mti, ref.stan, ref.time, ref.acquirer)) == expected
