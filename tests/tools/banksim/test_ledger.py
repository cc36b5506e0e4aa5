"""banksim's books as a checker reads them: postings by kind, anomalies flagged, a ledger file that
survives a restart (in process and after SIGKILL), `banksim ledger`, ``GET /ledger``, no PAN at rest."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.web.client import Agent, readBody

from switch.iso.dialect import load_dialect
from switch.iso.framing import Framing
from switch.tools.banksim import ANOMALIES, ORIGINAL_KINDS, Issuer, Ledger, LedgerError, load_accounts
from switch.tools.banksim.web import customer_site
from tests.cardscan import scan
from tests.tools.banksim.test_cli import BANKSIM, read_listening
from tests.tools.banksim.test_issuer import make_issuer
from tests.tools.banksim.wire import (
    MASTERCARD,
    NO_FUNDS,
    TODAY,
    VISA,
    blocking_exchange,
    code,
    network,
    original_data,
    request,
    reversal,
)

REFUND = {"3": "200000"}


def kinds(ledger: Ledger) -> list[tuple[str, int, str | None]]:
    return [(p.kind, p.amount, p.anomaly) for p in ledger.postings()]


def completion_of(auth: dict, v: int, amount: int, stan: str) -> dict:
    """A 0220/1220 pointing at ``auth`` by its RRN and original data elements, as the switch sends it."""
    number, value = original_data(auth, v)
    return request("completion", v, amount=amount, stan=stan, rrn=auth["37"], **{number: value})


# -- postings and anomalies (the issuer over an in-memory ledger) --------------------------------------


@pytest.mark.parametrize("dialect", ["iso87ascii", "iso93ascii"])
def test_every_movement_is_a_posting_with_its_kind_and_references(dialect):
    issuer, _ = make_issuer(dialect)
    v, ledger = issuer.version, issuer.ledger
    auth = request("auth", v, amount=5000, stan="000010")
    auth_code = issuer.answer(auth)["38"]
    assert issuer.answer(completion_of(auth, v, 4200, "000011"))["38"] == auth_code
    sale = request("sale", v, amount=700, stan="000012")
    issuer.answer(sale)
    issuer.answer(request("sale", v, amount=300, stan="000013", **REFUND))
    issuer.answer(reversal(sale, v, stan="000014"))
    assert kinds(ledger) == [
        ("authorization_hold", 5000, None), ("completion_debit", 4200, None), ("hold_release", 5000, None),
        ("sale_debit", 700, None), ("refund_credit", 300, None), ("reversal_credit", 700, None),
    ]
    hold, completion, release, sale_posting, refund, reversal_posting = ledger.postings()
    assert completion.original == release.original == hold.id and hold.closed_by == completion.id
    assert sale_posting.reversed_by == reversal_posting.id and reversal_posting.original == sale_posting.id
    assert (hold.masked_pan, hold.currency, hold.stan, hold.rrn, hold.terminal, hold.auth_code) == (
        "411111******1111", "USD", "000010", auth["37"], "TERM0001", auth_code)
    assert ledger.postings(ORIGINAL_KINDS, number=VISA) == [hold, completion, sale_posting, refund]
    assert ledger.postings(number=MASTERCARD) == []
    assert ledger.balance(VISA) == ledger.available(VISA) == 1000000 - 4200 + 300
    assert not ledger.postings(anomalies_only=True)
    assert ledger.discrepancies() == []


def test_discrepancies_name_an_account_whose_books_do_not_add_up(tmp_path):
    issuer = file_issuer(tmp_path / "bank.ledger")
    issuer.answer(request("auth", 1987, amount=5000, stan="000001"))
    issuer.answer(request("sale", 1987, amount=700, stan="000002"))
    assert issuer.ledger.discrepancies() == []
    with sqlite3.connect(tmp_path / "bank.ledger") as someone_else:
        someone_else.execute("UPDATE accounts SET balance = balance - 1 WHERE masked_pan = '411111******1111'")
    assert issuer.ledger.discrepancies() == issuer.ledger.snapshot()["discrepancies"] == [
        "411111******1111: balance 999299, held 5000; postings say balance 999300, held 5000 (open holds 5000)"]


def test_completion_without_hold_is_posted_and_flagged():
    issuer, _ = make_issuer()
    answer = issuer.answer(request("completion", 1987, amount=900, stan="000020", rrn="NOHOLD000001"))
    assert answer["39"] == "00" and len(answer["38"]) == 6
    [posting] = issuer.ledger.postings()
    assert (posting.kind, posting.amount, posting.anomaly, posting.original) == (
        "completion_debit", 900, "completion_without_hold", None)
    assert issuer.ledger.balance(VISA) == 1000000 - 900


def test_completion_of_a_reversed_hold_is_a_completion_without_hold():
    issuer, _ = make_issuer()
    auth = request("auth", 1987, amount=5000, stan="000010")
    issuer.answer(auth)
    issuer.answer(reversal(auth, 1987, stan="000011"))
    issuer.answer(completion_of(auth, 1987, 5000, "000012"))
    assert kinds(issuer.ledger)[-1] == ("completion_debit", 5000, "completion_without_hold")
    assert issuer.ledger.available(VISA) == 1000000 - 5000


def test_second_completion_of_one_hold_is_a_double_completion():
    issuer, _ = make_issuer()
    auth = request("auth", 1987, amount=5000, stan="000010")
    issuer.answer(auth)
    issuer.answer(completion_of(auth, 1987, 5000, "000011"))
    again = issuer.answer(completion_of(auth, 1987, 5000, "000012"))
    assert again["39"] == "00"
    [flagged] = issuer.ledger.postings(anomalies_only=True)
    assert (flagged.kind, flagged.anomaly, flagged.stan) == ("completion_debit", "double_completion", "000012")
    assert flagged.original == issuer.ledger.postings()[0].id
    assert issuer.ledger.balance(VISA) == 1000000 - 10000, "the bank still debits as it always did"


def test_repeated_completion_with_the_same_keys_is_a_duplicate_not_an_anomaly():
    issuer, _ = make_issuer()
    auth = request("auth", 1987, amount=5000, stan="000010")
    issuer.answer(auth)
    first = issuer.answer(completion_of(auth, 1987, 5000, "000011"))
    repeat = completion_of(auth, 1987, 5000, "000011") | {"t": "0221"}
    assert issuer.answer(repeat) == first
    assert not issuer.ledger.postings(anomalies_only=True) and issuer.ledger.balance(VISA) == 1000000 - 5000


@pytest.mark.parametrize("same", ["rrn", "stan"])
def test_refund_repeating_an_earlier_refund_is_flagged(same):
    issuer, _ = make_issuer()
    first = request("sale", 1987, amount=1500, stan="000030", rrn="REFUND000030", **REFUND)
    issuer.answer(first)
    if same == "rrn":
        repeat = request("sale", 1987, amount=1500, stan="000031", rrn="REFUND000030", **REFUND)
    else:
        repeat = request("sale", 1987, amount=1500, stan="000030", rrn="REFUND000031", **REFUND)
    assert issuer.answer(repeat)["39"] == "00"
    assert [(p.kind, p.anomaly) for p in issuer.ledger.postings()] == [
        ("refund_credit", None), ("refund_credit", "duplicate_refund")]
    assert issuer.ledger.balance(VISA) == 1000000 + 3000


def test_two_refunds_of_the_same_amount_with_their_own_keys_are_not_duplicates():
    issuer, _ = make_issuer()
    issuer.answer(request("sale", 1987, amount=1500, stan="000030", rrn="REFUND000030", **REFUND))
    issuer.answer(request("sale", 1987, amount=1500, stan="000031", rrn="REFUND000031", **REFUND))
    issuer.answer(request("sale", 1987, amount=1500, stan="000032", rrn="REFUND000030", **REFUND, **{"2": MASTERCARD}))
    assert not issuer.ledger.postings(anomalies_only=True)


@pytest.mark.parametrize("dialect", ["iso87ascii", "iso93ascii"])
def test_refund_advice_is_credited_and_its_repeat_flagged(dialect):
    issuer, _ = make_issuer(dialect)
    v = issuer.version
    advice = request("completion", v, pan=NO_FUNDS, amount=1200, stan="000050", rrn="RFADVICE0050", **REFUND)
    answer = issuer.answer(advice)
    assert answer["t"] == ("0230" if v == 1987 else "1230") and answer["39"] == code("00", v)
    issuer.answer(advice | {"11": "000051"})
    assert kinds(issuer.ledger) == [("refund_credit", 1200, None), ("refund_credit", 1200, "duplicate_refund")]
    assert issuer.ledger.balance(NO_FUNDS) == 2400


def test_refund_pointing_at_its_sale_carries_the_reference():
    issuer, _ = make_issuer()
    sale = request("sale", 1987, amount=2000, stan="000040")
    issuer.answer(sale)
    number, value = original_data(sale, 1987)
    issuer.answer(request("sale", 1987, amount=800, stan="000041", **REFUND, **{number: value}))
    sale_posting, refund = issuer.ledger.postings()
    assert (refund.kind, refund.original, refund.anomaly) == ("refund_credit", sale_posting.id, None)


def test_reversal_of_something_unknown_is_flagged_and_moves_nothing():
    issuer, _ = make_issuer()
    ghost = request("sale", 1987, amount=700, stan="000077", rrn="NEVERSEEN001")
    assert issuer.answer(reversal(ghost, 1987, stan="000078"))["39"] == "00"
    [posting] = issuer.ledger.postings()
    assert (posting.kind, posting.effect, posting.amount, posting.anomaly, posting.rrn) == (
        "reversal", "none", 700, "reversal_of_unknown", "NEVERSEEN001")
    assert issuer.ledger.balance(VISA) == issuer.ledger.available(VISA) == 1000000


def test_reversal_of_a_preauth_releases_its_hold_once():
    issuer, _ = make_issuer()
    auth = request("auth", 1987, amount=5000)
    issuer.answer(auth)
    issuer.answer(reversal(auth, 1987, stan="000002"))
    issuer.answer(reversal(auth, 1987, stan="000003", repeat=True))
    assert kinds(issuer.ledger) == [("authorization_hold", 5000, None), ("reversal_release", 5000, None)]
    assert issuer.ledger.available(VISA) == 1000000


def test_an_expired_hold_is_released_by_a_posting():
    issuer, clock = make_issuer(retention=3600)
    issuer.answer(request("auth", 1987, amount=5000))
    clock.advance(3601)
    issuer.answer(network(1987))
    hold, expiry = issuer.ledger.postings()
    assert (expiry.kind, expiry.amount, expiry.original, hold.closed_by) == ("hold_expiry", 5000, hold.id, expiry.id)
    assert issuer.ledger.available(VISA) == 1000000


def test_snapshot_has_accounts_postings_and_anomaly_counts():
    issuer, _ = make_issuer()
    issuer.answer(request("auth", 1987, amount=5000, stan="000001"))
    issuer.answer(request("completion", 1987, amount=100, stan="000002", rrn="NOHOLD000002", **{"2": MASTERCARD}))
    book = issuer.ledger.snapshot()
    visa = next(a for a in book["accounts"] if a["masked_pan"] == "411111******1111")
    assert (visa["balance"], visa["available"], visa["held"], visa["currency"]) == (1000000, 995000, 5000, "USD")
    assert [h["amount"] for h in visa["holds"]] == [5000] and len(visa["account"]) == 12
    assert [(p["kind"], p["masked_pan"]) for p in book["postings"]] == [
        ("authorization_hold", "411111******1111"), ("completion_debit", "555555******4444")]
    assert book["postings"][0]["time"] == "2026-06-15T12:00:00Z"
    assert book["anomalies"] == {"completion_without_hold": 1} and set(book["anomalies"]) <= set(ANOMALIES)


def test_not_a_ledger_file_is_refused_with_its_name(tmp_path):
    other = tmp_path / "journal.db"
    sqlite3.connect(other).execute("CREATE TABLE transactions (id TEXT)").connection.commit()
    with pytest.raises(LedgerError, match="journal.db: not a banksim ledger"):
        Ledger(load_accounts(), other)
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a database at all " * 40)
    with pytest.raises(LedgerError, match="notes.txt: not a banksim ledger"):
        Ledger(load_accounts(), text)
    with pytest.raises(LedgerError, match="cannot open"):
        Ledger(load_accounts(), tmp_path / "missing-dir" / "ledger.db")


# -- a ledger file across restarts -------------------------------------------------------------------


def file_issuer(path) -> Issuer:
    """An issuer on a ledger file, its clock at ``TODAY``."""
    clock = Clock()
    clock.advance(TODAY)
    return Issuer(Ledger(load_accounts(), path), load_dialect("iso87ascii"), clock)


def test_a_reopened_file_answers_repeats_and_reversals_as_before(tmp_path):
    path = tmp_path / "bank.ledger"
    first = file_issuer(path)
    sale = request("sale", 1987, amount=2500, stan="000001")
    answer = first.answer(sale)
    declined = request("sale", 1987, pan=NO_FUNDS, amount=100, stan="000002")
    first.answer(declined)
    first.answer(reversal(sale, 1987, stan="000003"))
    first.ledger.close()

    again = file_issuer(path)
    assert again.answer(dict(sale)) == answer, "the duplicate is answered with the original answer"
    assert again.answer(dict(declined))["39"] == "51"
    assert again.answer(reversal(sale, 1987, stan="000004", repeat=True))["39"] == "00"
    assert again.ledger.balance(VISA) == 1000000, "reversed once, before and after the restart"
    assert kinds(again.ledger) == [("sale_debit", 2500, None), ("reversal_credit", 2500, None)]
    sale2 = again.answer(request("sale", 1987, amount=10, stan="000005"))
    assert sale2["38"] != answer["38"], "authorization codes go on from the file"


def test_an_existing_file_keeps_its_balances_over_the_accounts_file(tmp_path):
    path = tmp_path / "bank.ledger"
    issuer = file_issuer(path)
    issuer.answer(request("sale", 1987, amount=2500))
    issuer.ledger.close()
    assert Ledger(load_accounts(), path).balance(VISA) == 1000000 - 2500


@pytest_twisted.ensureDeferred
async def test_restarted_banksim_on_the_same_file_completes_the_hold_over_the_wire(banks, tmp_path):
    path = tmp_path / "bank.ledger"
    bank = await banks("iso93ascii", ledger_path=path)
    v = bank.dialect.version
    client = await bank.connect()
    auth = request("auth", v, amount=8000, stan="000101")
    approved = await client.exchange(auth)
    assert approved["39"] == code("00", v)

    bank.sim = await bank.sim.restart()
    assert bank.sim.available(VISA) == 1000000 - 8000 and bank.sim.received == {}
    client = await bank.connect()  # the same port
    repeat = await client.exchange(dict(auth))
    assert repeat == approved, "the repeat of the authorization is recognised after the restart"
    done = await client.exchange(completion_of(auth, v, 7500, "000102"))
    assert done["39"] == code("00", v) and done["38"] == approved["38"]
    assert (bank.sim.balance(VISA), bank.sim.available(VISA)) == (1000000 - 7500, 1000000 - 7500)
    assert kinds(bank.sim.ledger) == [
        ("authorization_hold", 8000, None), ("completion_debit", 7500, None), ("hold_release", 8000, None)]
    assert bank.sim.ledger.discrepancies() == []


@pytest_twisted.ensureDeferred
async def test_restart_without_a_file_keeps_the_ledger_in_memory(banks):
    bank = await banks()
    client = await bank.connect()
    await client.exchange(request("sale", 1987, amount=100))
    bank.sim = await bank.sim.restart()
    client = await bank.connect()
    assert (await client.exchange(request("sale", 1987, amount=100)))["38"] == "000001"
    assert bank.sim.balance(VISA) == 1000000 - 100


@pytest_twisted.ensureDeferred
async def test_get_ledger_serves_the_snapshot_as_json(banks):
    bank = await banks()
    client = await bank.connect()
    await client.exchange(request("auth", 1987, amount=4000, stan="000001"))
    await client.exchange(request("completion", 1987, amount=50, stan="000002", rrn="NOHOLD000002"))
    site = reactor.listenTCP(0, customer_site(bank.sim), interface="127.0.0.1")
    try:
        response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{site.getHost().port}/ledger".encode())
        body = await readBody(response)
    finally:
        await site.stopListening()
    assert response.code == 200 and response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    book = json.loads(body)
    assert book == json.loads(json.dumps(bank.sim.ledger.snapshot()))
    visa = next(a for a in book["accounts"] if a["masked_pan"] == "411111******1111")
    assert (visa["balance"], visa["available"]) == (1000000 - 50, 1000000 - 4050)
    assert book["anomalies"] == {"completion_without_hold": 1}
    assert VISA.encode() not in body


# -- the process: SIGKILL, restart on the file, banksim ledger ----------------------------------------


def start(path, log):
    process = subprocess.Popen(
        [*BANKSIM, "--listen", "127.0.0.1:0", "--dialect", "iso87ascii", "--framing", "2b", "--plain",
         "--ledger", str(path)], stdout=subprocess.PIPE, stderr=log, text=True)
    return process, read_listening(process)


def exchange(port: int, message: dict) -> dict:
    dialect, framing = load_dialect("iso87ascii"), Framing("2b")
    return dialect.decode(blocking_exchange(port, framing, framing.frame(dialect.encode(message))).payload)


@pytest.mark.timeout(120)
def test_sigkilled_banksim_restarted_on_its_file_completes_the_hold_and_banksim_ledger_shows_it(tmp_path):
    path = tmp_path / "bank.ledger"
    auth = request("auth", 1987, amount=6000, stan="000201")
    with (tmp_path / "banksim.log").open("w") as log:
        process, port = start(path, log)
        try:
            approved = exchange(port, auth)
            refund = request("sale", 1987, pan=MASTERCARD, amount=300, stan="000202", **REFUND)
            exchange(port, refund)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            process.stdout.close()
        process, port = start(path, log)
        try:
            assert exchange(port, dict(auth)) == approved
            done = exchange(port, completion_of(auth, 1987, 6000, "000203"))
            assert done["39"] == "00" and done["38"] == approved["38"]
            exchange(port, request("sale", 1987, pan=MASTERCARD, amount=300, stan="000204", rrn=refund["37"],
                                   **REFUND))
            shown = subprocess.run([*BANKSIM, "ledger", "--ledger", str(path), "--json"], capture_output=True,
                                   text=True, timeout=30)
            text = subprocess.run([*BANKSIM, "ledger", "--ledger", str(path)], capture_output=True, text=True,
                                  timeout=30)
        finally:
            process.terminate()
            process.wait(10)
            process.stdout.close()
    assert shown.returncode == 0, shown.stderr
    book = json.loads(shown.stdout)
    assert [(p["kind"], p["amount"], p["anomaly"]) for p in book["postings"]] == [
        ("authorization_hold", 6000, None), ("refund_credit", 300, None), ("completion_debit", 6000, None),
        ("hold_release", 6000, None), ("refund_credit", 300, "duplicate_refund")]
    balances = {a["masked_pan"]: (a["balance"], a["available"]) for a in book["accounts"]}
    assert balances["411111******1111"] == (1000000 - 6000, 1000000 - 6000)
    assert balances["555555******4444"] == (1000000 + 600, 1000000 + 600)
    assert book["discrepancies"] == []
    assert text.returncode == 0
    assert "books add up" in text.stdout and "5 postings; anomalies: duplicate_refund 1" in text.stdout
    assert "411111******1111" in text.stdout and "anomaly=duplicate_refund" in text.stdout


def test_banksim_ledger_mistakes_are_one_line(tmp_path):
    missing = subprocess.run([*BANKSIM, "ledger", "--ledger", str(tmp_path / "none.db")], capture_output=True,
                             text=True, timeout=30)
    assert missing.returncode == 2 and missing.stderr == f"banksim ledger: {tmp_path / 'none.db'}: no such ledger file\n"
    (tmp_path / "junk").write_text("junk " * 500)
    junk = subprocess.run([*BANKSIM, "ledger", "--ledger", str(tmp_path / "junk")], capture_output=True, text=True,
                          timeout=30)
    assert junk.returncode == 2 and junk.stderr.startswith("banksim ledger: ") and junk.stderr.count("\n") == 1
    started = subprocess.run([*BANKSIM, "--listen", "127.0.0.1:0", "--dialect", "iso87ascii", "--framing", "2b",
                              "--plain", "--ledger", str(tmp_path / "junk")], capture_output=True, text=True,
                             timeout=30)
    assert started.returncode == 2 and "not a banksim ledger" in started.stderr and started.stderr.count("\n") == 1


# -- no card number at rest --------------------------------------------------------------------------


def on(number: str, message: dict) -> dict:
    """``message`` for a card (field 2) or, for a bank account or wallet, field 102."""
    if number.isdigit() and len(number) >= 13:
        return message | {"2": number}
    return {k: v for k, v in message.items() if k not in ("2", "14", "48")} | {"102": number}


def test_no_card_or_account_number_in_the_ledger_file(tmp_path):
    path = tmp_path / "bank.ledger"
    issuer = file_issuer(path)
    accounts = load_accounts()
    for i, number in enumerate(accounts):
        auth = on(number, request("auth", 1987, amount=100, stan=f"{i * 10 + 1:06d}"))
        issuer.answer(auth)
        issuer.answer(on(number, completion_of(auth, 1987, 100, f"{i * 10 + 2:06d}")))
        issuer.answer(on(number, request("sale", 1987, amount=50, stan=f"{i * 10 + 3:06d}", **REFUND)))
        issuer.answer(on(number, reversal(auth, 1987, stan=f"{i * 10 + 4:06d}")))
    assert len(issuer.ledger.postings()) >= 2 * len(accounts)
    stored = b"".join(f.read_bytes() for f in tmp_path.glob("bank.ledger*"))
    for number in accounts:
        assert number.encode() not in stored, f"{number[:6]}… is stored in the ledger file"
    book = json.dumps(issuer.ledger.snapshot(), indent=1)
    assert not list(scan(book.splitlines())), "card data in the ledger snapshot"


# -- a restart anywhere changes nothing ----------------------------------------------------------------

CARDS = (VISA, MASTERCARD, NO_FUNDS)
OPS = st.lists(
    st.tuples(st.sampled_from(["auth", "sale", "refund", "completion", "reversal", "repeat"]),
              st.integers(0, len(CARDS) - 1), st.integers(1, 600_000), st.integers(0, 10**6), st.booleans()),
    min_size=1, max_size=25,
)


def play(issuer: Issuer, ops: list, reopen=None) -> list[dict]:
    """Send ``ops`` (each may point at an earlier message); ``reopen`` after a message, when it asks."""
    sent: list[dict] = []
    answers = []
    for n, (op, card, amount, pick, restart_after) in enumerate(ops, start=1):
        stan = f"{n:06d}"
        earlier = sent[pick % len(sent)] if sent else None
        if op in ("auth", "sale", "refund") or earlier is None:
            extra = REFUND if op == "refund" else {}
            message = request("sale" if op != "auth" else "auth", 1987, pan=CARDS[card], amount=amount, stan=stan,
                              **extra)
        elif op == "completion":
            message = completion_of(earlier, 1987, amount, stan) | {"2": earlier["2"]}
        elif op == "reversal":
            message = reversal(earlier, 1987, stan=stan)
        else:
            message = dict(earlier)
        answers.append(issuer.answer(message))
        sent.append(message)
        if restart_after and reopen is not None:
            issuer = reopen(issuer)
    return answers


@settings(max_examples=40, deadline=None)
@given(ops=OPS)
def test_a_ledger_file_reopened_anywhere_answers_and_books_exactly_as_one_never_stopped(ops):
    steady, _ = make_issuer()
    expected = play(steady, ops)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bank.ledger"

        def reopen(issuer: Issuer) -> Issuer:
            issuer.ledger.close()
            return file_issuer(path)

        restarted = file_issuer(path)
        assert play(restarted, ops, reopen) == expected
        again = file_issuer(path)
        assert again.ledger.snapshot() == steady.ledger.snapshot()
        assert again.ledger.discrepancies() == []
        reversals = Counter(p.original for p in again.ledger.postings(kinds=("reversal_credit", "reversal_debit",
                                                                               "reversal_release")))
        assert all(count == 1 for count in reversals.values()), "an original reversed twice"
