"""banksim's settlement file: the money postings of a business date (reversals with the references of what
they reverse, on their own date), from `settlement_lines`, `banksim settlement` and ``GET /settlement``."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.web.client import Agent, readBody

from switch.domain.settlementfile import HEADER, SettlementLine, parse_file
from switch.iso.dialect import load_dialect
from switch.tools.banksim import Issuer, Ledger, load_accounts
from switch.tools.banksim.settlement import settlement_lines
from switch.tools.banksim.web import customer_site
from tests.tools.banksim.test_cli import BANKSIM
from tests.tools.banksim.test_ledger import REFUND, completion_of
from tests.tools.banksim.wire import MASTERCARD, TODAY, VISA, request, reversal

DAY = 24 * 3600.0


def a_day_and_the_next(ledger: Ledger) -> tuple[dict, dict, dict]:
    """2026-06-15: a pre-authorization completed, a sale reversed the same day, a refund; 06-16: the refund
    reversed. Returns the sale, the refund and the completion as sent."""
    clock = Clock()
    clock.advance(TODAY)
    issuer = Issuer(ledger, load_dialect("iso87ascii"), clock)
    auth = request("auth", 1987, amount=5000, stan="000010")
    issuer.answer(auth)
    completion = completion_of(auth, 1987, 4200, "000011")
    issuer.answer(completion)
    sale = request("sale", 1987, amount=700, stan="000012")
    issuer.answer(sale)
    issuer.answer(reversal(sale, 1987, stan="000013"))
    refund = request("sale", 1987, pan=MASTERCARD, amount=300, stan="000014", **REFUND)
    issuer.answer(refund)
    clock.advance(DAY)
    issuer.answer(reversal(refund, 1987, stan="000015"))
    issuer.answer(request("auth", 1987, amount=100, stan="000016"))  # a hold: no money, not in the file
    return sale, refund, completion


def line(message: dict, date: str, amount: int, type_: str, auth_code: str, card: str = "411111******1111"):
    return SettlementLine(date, message["37"], message["11"], "TERM0001", card, amount, "USD", type_, auth_code)


def test_lines_of_each_date_with_reversals_naming_what_they_reverse():
    ledger = Ledger(load_accounts())
    sale, refund, completion = a_day_and_the_next(ledger)
    codes = {p.stan: p.auth_code for p in ledger.postings()}
    assert settlement_lines(ledger.postings(), "2026-06-15") == [
        line(completion, "2026-06-15", 4200, "debit", codes["000010"]),
        line(sale, "2026-06-15", 700, "debit", codes["000012"]),
        line(sale, "2026-06-15", 700, "debit_reversal", codes["000012"]),
        line(refund, "2026-06-15", 300, "credit", codes["000014"], "555555******4444"),
    ]
    assert settlement_lines(ledger.postings(), "2026-06-16") == [
        line(refund, "2026-06-16", 300, "credit_reversal", codes["000014"], "555555******4444")]
    assert settlement_lines(ledger.postings(), "2026-06-14") == []


def test_banksim_settlement_writes_the_file_from_a_ledger_file(tmp_path):
    path = tmp_path / "bank.ledger"
    ledger = Ledger(load_accounts(), path)
    a_day_and_the_next(ledger)
    expected = settlement_lines(ledger.postings(), "2026-06-15")
    ledger.close()
    out = tmp_path / "settlement.csv"
    done = subprocess.run([*BANKSIM, "settlement", "--ledger", str(path), "--date", "2026-06-15", "--output",
                           str(out)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout == done.stderr == "", done
    assert parse_file(out.read_bytes()) == expected
    printed = subprocess.run([*BANKSIM, "settlement", "--ledger", str(path), "--date", "2026-06-16"],
                             capture_output=True, timeout=30)
    assert printed.returncode == 0 and printed.stdout.startswith(HEADER.encode() + b"\n")
    assert [x.type for x in parse_file(printed.stdout)] == ["credit_reversal"]
    assert b"4111111111111111" not in out.read_bytes() + printed.stdout


def test_banksim_settlement_mistakes_are_one_line(tmp_path):
    missing = subprocess.run([*BANKSIM, "settlement", "--ledger", str(tmp_path / "none.db"), "--date", "2026-06-15"],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2
    assert missing.stderr == f"banksim settlement: {tmp_path / 'none.db'}: no such ledger file\n"
    bad_date = subprocess.run([*BANKSIM, "settlement", "--ledger", str(tmp_path / "none.db"), "--date", "15/06/2026"],
                              capture_output=True, text=True, timeout=30)
    assert bad_date.returncode == 2 and "expected a date YYYY-MM-DD, got '15/06/2026'" in bad_date.stderr
    ledger = Ledger(load_accounts(), tmp_path / "bank.ledger")
    ledger.close()
    unwritable = subprocess.run([*BANKSIM, "settlement", "--ledger", str(tmp_path / "bank.ledger"), "--date",
                                 "2026-06-15", "--output", str(tmp_path / "no-dir" / "f.csv")],
                                capture_output=True, text=True, timeout=30)
    assert unwritable.returncode == 2 and unwritable.stderr.startswith("banksim settlement: cannot write ")
    assert unwritable.stderr.count("\n") == 1


@pytest_twisted.ensureDeferred
async def test_get_settlement_serves_the_file_and_refuses_a_bad_date():
    ledger = Ledger(load_accounts())
    a_day_and_the_next(ledger)
    site = reactor.listenTCP(0, customer_site(SimpleNamespace(ledger=ledger)), interface="127.0.0.1")
    try:
        base = f"http://127.0.0.1:{site.getHost().port}/settlement"
        good = await Agent(reactor).request(b"GET", f"{base}?date=2026-06-15".encode())
        body = await readBody(good)
        bad = await Agent(reactor).request(b"GET", f"{base}?date=2026-6-15".encode())
        error = await readBody(bad)
    finally:
        await site.stopListening()
    assert good.code == 200 and good.headers.getRawHeaders(b"content-type") == [b"text/csv; charset=us-ascii"]
    assert parse_file(body) == settlement_lines(ledger.postings(), "2026-06-15")
    assert bad.code == 400 and b"expected a date YYYY-MM-DD" in error


def test_a_dropped_posting_is_left_out_and_a_doubled_one_listed_twice():
    clock = Clock()
    clock.advance(TODAY)
    ledger = Ledger(load_accounts())
    issuer = Issuer(ledger, load_dialect("iso87ascii"), clock)
    ledger.business_date = "2026-06-14"  # banksim's own business date wins over the clock's day
    for stan, weight in (("000001", 1), ("000002", 0), ("000003", 2)):
        ledger.settle_weight = weight
        issuer.answer(request("sale", 1987, amount=100 + int(stan), stan=stan))
    lines = settlement_lines(ledger.postings(), "2026-06-14")
    assert [(x.stan, x.amount) for x in lines] == [("000001", 101), ("000003", 103), ("000003", 103)]
    assert ledger.balance(VISA) == 1000000 - 101 - 102 - 103, "the books move as usual"
    assert settlement_lines(ledger.postings(), "2026-06-15") == []
