"""banksim's business day on the wire: field 15 in answers, cutover both ways, totals and 0500/1500 answers."""

from __future__ import annotations

import json
import sqlite3
from datetime import date

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.web.client import Agent, readBody

from switch.iso.mti import response_mti
from switch.iso.totals import request_fields
from switch.tools.banksim import Ledger, load_accounts
from switch.tools.banksim import ledger as ledger_module
from switch.tools.banksim.web import customer_site
from tests.tools.banksim.wire import MASTERCARD, VISA, code, network, request, reversal

ZERO = dict.fromkeys(("debits_count", "debits_amount", "debit_reversals_count", "debit_reversals_amount",
                      "credits_count", "credits_amount", "credit_reversals_count", "credit_reversals_amount",
                      "authorizations_count", "authorization_reversals_count", "net"), 0)


def cutover(version: int, stan: str, new: str | None = None) -> dict[str, str]:
    message = network(version, "echo", stan)
    message["70" if version == 1987 else "24"] = "201" if version == 1987 else "821"
    if new is not None:
        message["15"] = new
    return message


def reconciliation(version: int, stan: str, day: date, totals: dict[str, int]) -> dict[str, str]:
    return {"t": "0500" if version == 1987 else "1500", "7": "0615120000", "11": stan, "32": "400001",
            **request_fields(totals, "840", day, version)}


@pytest.mark.parametrize("dialect", ["iso87ascii", "iso93binary"])
@pytest_twisted.inlineCallbacks
def test_a_day_of_postings_is_counted_like_the_switch_and_reconciled(banks, dialect):
    bank = yield banks(dialect)
    client = yield bank.connect()
    v = bank.dialect.version
    day = bank.sim.day.business_date
    sale = request("sale", v, amount=10_000, stan="000001")
    answer = yield client.exchange(sale)
    assert answer["15"] == day[5:7] + day[8:10]
    yield client.exchange(request("sale", v, amount=400, stan="000002", **{"3": "200000"}))  # a refund
    voided = request("sale", v, pan=MASTERCARD, amount=700, stan="000003")
    yield client.exchange(voided)
    yield client.exchange(reversal(voided, v, stan="000004"))  # reversed the same day: counts nowhere
    yield client.exchange(request("auth", v, amount=300, stan="000005"))
    late = request("sale", v, amount=250, stan="000006")
    yield client.exchange(late)

    closed = yield client.exchange(cutover(v, "000007"))
    assert closed["t"] == response_mti(cutover(v, "x")["t"]) and closed["39"] == code("00", v)
    opened = bank.sim.day.business_date
    assert opened > day and closed["15"] == opened[5:7] + opened[8:10]
    yield client.exchange(reversal(late, v, stan="000008"))  # reversed on the next date

    expected = {**ZERO, "debits_count": 2, "debits_amount": 10_250, "credits_count": 1, "credits_amount": 400,
                "authorizations_count": 1, "net": 10_250 - 400}
    assert bank.sim.day.totals(day) == {"USD": expected}
    assert bank.sim.day.totals(opened)["USD"]["debit_reversals_amount"] == 250

    balanced = yield client.exchange(reconciliation(v, "000009", date.fromisoformat(day), expected))
    assert balanced["t"] == response_mti(reconciliation(v, "x", date.today(), ZERO)["t"])
    assert (balanced["39"], balanced["66"], balanced["88"]) == (code("00", v), "1", f"{10_250:016d}")
    assert balanced["97"] == f"C{9_850:016d}"
    off = yield client.exchange(reconciliation(v, "000010", date.fromisoformat(day), {**expected, "debits_count": 3}))
    assert (off["66"], off["76"]) == ("2", "0000000002")


@pytest.mark.parametrize("fault, count", [("drop_posting", 0), ("double_posting", 2)])
@pytest_twisted.inlineCallbacks
def test_a_dropped_or_doubled_posting_moves_the_books_but_not_the_totals(banks, fault, count):
    bank = yield banks()
    client = yield bank.connect()
    bank.sim.set_faults(**{fault: True})
    answer = yield client.exchange(request("sale", 1987, amount=500))
    bank.sim.set_faults(**{fault: False})
    yield client.exchange(request("sale", 1987, amount=900, stan="000002"))
    assert answer["39"] == "00" and bank.sim.balance(VISA) == 1_000_000 - 1_400
    totals = bank.sim.day.totals(bank.sim.day.business_date)["USD"]
    assert (totals["debits_count"], totals["debits_amount"]) == (count + 1, count * 500 + 900)
    with pytest.raises(ValueError, match="at most one"):
        bank.sim.set_faults(drop_posting=True, double_posting=True)


@pytest_twisted.inlineCallbacks
def test_the_switch_may_name_the_new_date_and_the_bank_may_cut_over_itself(banks):
    bank = yield banks("iso93ascii")
    client = yield bank.connect()
    yield client.exchange(request("sale", 1993, amount=100))  # the bank learns where to send
    start = bank.sim.day.business_date
    answer = yield client.exchange(cutover(1993, "000002", new="1231"))
    assert bank.sim.day.business_date.endswith("-12-31") and answer["15"] == "1231"
    acknowledged = bank.sim.cutover()
    frame = yield client.next_frame()
    told = bank.dialect.decode(frame.payload)
    assert (told["t"], told["24"], told["15"]) == ("1804", "821", "0101")
    client.send({"t": "1814", "11": told["11"], "24": "821", "39": "000"})
    assert (yield acknowledged) == "000"
    assert bank.sim.day.closed == [start, bank.sim.day.closed[1]] and bank.sim.day.business_date.endswith("-01-01")


@pytest_twisted.inlineCallbacks
def test_an_unreadable_reconciliation_is_a_format_error(banks):
    bank = yield banks()
    client = yield bank.connect()
    message = reconciliation(1987, "000001", date(2026, 6, 15), ZERO)
    message["97"] = "X0000000000000000"
    answer = yield client.exchange(message)
    assert (answer["39"], answer["66"]) == ("30", "3")


@pytest_twisted.ensureDeferred
async def test_the_banks_web_page_ends_its_day_and_shows_its_totals(banks):
    bank = await banks()
    site = reactor.listenTCP(0, customer_site(bank.sim), interface="127.0.0.1")
    base = f"http://127.0.0.1:{site.getHost().port}"
    try:
        status, body = await http("POST", f"{base}/cutover")
        assert status == 503 and "no connection" in body["error"]  # nobody to tell: the date stays
        client = await bank.connect()
        day = bank.sim.day.business_date
        await client.exchange(request("sale", 1987, amount=600))
        posted = Deferred()
        reactor.callLater(0, lambda: http("POST", f"{base}/cutover").addCallback(posted.callback))
        told = bank.dialect.decode((await client.next_frame()).payload)
        assert (told["t"], told["70"]) == ("0800", "201")
        client.send({"t": "0810", "11": told["11"], "70": "201", "39": "00"})
        status, body = await posted
        assert (status, body) == (200, {"closed": day, "opened": bank.sim.day.business_date, "acknowledged": "00"})
        status, body = await http("GET", f"{base}/day?date={day}")
        assert status == 200 and body["closed"] == [day] and body["totals"]["USD"]["debits_amount"] == 600
        status, body = await http("GET", f"{base}/day?date=15-06-2026")
        assert status == 400 and "YYYY-MM-DD" in body["error"]
    finally:
        await site.stopListening()


def test_a_ledger_file_of_the_first_schema_is_upgraded_in_place(tmp_path):
    path = tmp_path / "bank.ledger"
    old = sqlite3.connect(path)
    old.executescript(ledger_module._SCHEMA.replace(",\n    business_date TEXT,\n    settled INTEGER NOT NULL DEFAULT 1", ""))
    old.execute("PRAGMA user_version = 1")
    old.close()
    book = Ledger(load_accounts(), path)
    book.business_date = "2026-06-15"
    with book.transaction():
        posting = book.post(VISA, "sale_debit", 100, 1.0)
    assert (book.posting(posting.id).business_date, book.posting(posting.id).settled) == ("2026-06-15", 1)
    book.close()


def http(method: str, url: str) -> Deferred:
    async def go() -> tuple[int, dict]:
        response = await Agent(reactor).request(method.encode(), url.encode())
        return response.code, json.loads(await readBody(response))

    return ensureDeferred(go())
