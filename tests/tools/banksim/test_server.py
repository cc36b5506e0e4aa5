"""The simulator as the switch sees it: real sockets on 127.0.0.1, ISO 8583 bytes on the wire."""

from __future__ import annotations

import json
import time

import pytest
import pytest_twisted
from structlog.testing import capture_logs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, TimeoutError

from switch.iso.dialect import MessageError, load_dialect
from switch.iso.framing import Framing
from switch.tools.banksim.faults import Faults
from tests.sockets import nagle_off
from tests.tools.banksim.wire import (
    BLOCKED,
    DO_NOT_HONOUR,
    EXPIRED,
    LIMITED,
    NO_FUNDS,
    UNKNOWN,
    VISA,
    YEN,
    code,
    network,
    request,
    reversal,
)

WIRE_DIALECTS = ["iso87ascii", "iso93ascii", "iso87binary", "iso93binary"]
WIRE_OUTCOMES = [
    ("approved", VISA, {}, "00"),
    ("unknown card", UNKNOWN, {}, "14"),
    ("expired", EXPIRED, {}, "54"),
    ("wrong cvv", VISA, {"48": "321"}, "N7"),
    ("blocked", BLOCKED, {}, "62"),
    ("do not honour", DO_NOT_HONOUR, {}, "05"),
    ("wrong currency", YEN, {}, "12"),
    ("over limit", LIMITED, {"4": "000000020000"}, "61"),
    ("insufficient funds", NO_FUNDS, {}, "51"),
]


def sleep(seconds: float) -> Deferred:
    d: Deferred = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


@pytest.mark.parametrize("dialect", WIRE_DIALECTS)
@pytest.mark.parametrize("case, pan, extra, expected", WIRE_OUTCOMES, ids=[o[0] for o in WIRE_OUTCOMES])
@pytest_twisted.inlineCallbacks
def test_response_codes_on_the_wire(banks, dialect, case, pan, extra, expected):
    bank = yield banks(dialect)
    client = yield bank.connect()
    v = bank.dialect.version
    answer = yield client.exchange(request("sale", v, pan=pan, **extra))
    assert answer["t"] == ("0210" if v == 1987 else "1210")
    assert answer["39"] == code(expected, v)
    assert answer["11"] == "000001" and answer["37"] == "616600000100" and answer["41"] == "TERM0001"
    assert ("38" in answer) == (expected == "00")


@pytest.mark.parametrize("dialect", ["iso87ascii", "iso87binary", "iso93ascii"])
@pytest_twisted.inlineCallbacks
def test_balance_debited_then_restored_once_by_reversal(banks, dialect):
    bank = yield banks(dialect)
    client = yield bank.connect()
    v = bank.dialect.version
    sale = request("sale", v, amount=12345)
    yield client.exchange(sale)
    assert bank.sim.balance(VISA) == 1000000 - 12345
    first = yield client.exchange(reversal(sale, v, stan="000002"))
    repeat = yield client.exchange(reversal(sale, v, stan="000003", repeat=True))
    assert first["39"] == repeat["39"] == code("00", v)
    assert first["t"] == repeat["t"] == ("0410" if v == 1987 else "1430")
    assert bank.sim.balance(VISA) == 1000000
    assert bank.sim.received[sale["t"]] == 1


@pytest_twisted.inlineCallbacks
def test_the_bank_answers_without_waiting_for_nagle(banks):
    """A switch that sends nothing more acknowledges an answer late (Linux's delayed ACK, 40 ms): with Nagle's
    algorithm on, the simulator's next answer on the link would wait for that, as a real host's should not."""
    bank = yield banks("iso87binary")
    client = yield bank.connect()
    yield client.exchange(request("sale", 1987, amount=500))
    (connection,) = bank.sim._connections
    assert nagle_off(connection.transport)


@pytest_twisted.inlineCallbacks
def test_duplicate_on_the_wire_is_debited_once(banks):
    bank = yield banks("iso87binary")
    client = yield bank.connect()
    sale = request("sale", 1987, amount=500)
    first = yield client.exchange(sale)
    second = yield client.exchange(sale)
    assert first == second
    assert bank.sim.balance(VISA) == 1000000 - 500


@pytest_twisted.inlineCallbacks
def test_preauth_hold_then_completion(banks):
    bank = yield banks("iso93ascii")
    client = yield bank.connect()
    auth = request("auth", 1993, amount=8000)
    answer = yield client.exchange(auth)
    assert answer["39"] == "000"
    assert (bank.sim.balance(VISA), bank.sim.available(VISA)) == (1000000, 1000000 - 8000)
    done = yield client.exchange(request("completion", 1993, amount=7500, stan="000002", rrn=auth["37"]))
    assert done["t"] == "1230" and done["39"] == "000"
    assert (bank.sim.balance(VISA), bank.sim.available(VISA)) == (1000000 - 7500, 1000000 - 7500)


@pytest_twisted.inlineCallbacks
def test_refund_credits(banks):
    bank = yield banks()
    client = yield bank.connect()
    answer = yield client.exchange(request("sale", 1987, pan=NO_FUNDS, amount=999, **{"3": "200000"}))
    assert answer["39"] == "00"
    assert bank.sim.balance(NO_FUNDS) == 999


@pytest.mark.parametrize("dialect", ["iso87ascii", "iso93binary"])
@pytest.mark.parametrize("kind", ["sign_on", "echo", "sign_off"])
@pytest_twisted.inlineCallbacks
def test_network_management_answered(banks, dialect, kind):
    bank = yield banks(dialect)
    client = yield bank.connect()
    v = bank.dialect.version
    answer = yield client.exchange(network(v, kind))
    assert answer["t"][:3] == ("081" if v == 1987 else "181")
    assert answer["39"] == code("00", v) and answer["11"] == "000009"


@pytest_twisted.inlineCallbacks
def test_tpdu_is_swapped_and_length_may_include_header(banks):
    framing = Framing("2b", tpdu=True, includes_header=True)
    bank = yield banks("iso87ascii", framing, expected_tpdu=bytes.fromhex("6000010000"))
    client = yield bank.connect()
    client.send(network(1987), bytes.fromhex("6000010002"))
    frame = yield client.next_frame()
    assert frame.tpdu == bytes.fromhex("6000020001")
    assert bank.dialect.decode(frame.payload)["39"] == "00"


@pytest_twisted.inlineCallbacks
def test_pipelined_requests_on_4a_framing(banks):
    bank = yield banks("iso87ascii", Framing("4a"))
    client = yield bank.connect()
    for stan in ("000001", "000002", "000003"):
        client.send(request("sale", 1987, amount=100, stan=stan))
    stans = []
    for _ in range(3):
        frame = yield client.next_frame()
        stans.append(bank.dialect.decode(frame.payload)["11"])
    assert stans == ["000001", "000002", "000003"]
    assert bank.sim.balance(VISA) == 1000000 - 300
    assert bank.sim.received["0200"] == 3 and bank.sim.sent["0210"] == 3


# -- faults ------------------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_delay_can_be_switched_on_and_off_at_run_time(banks):
    bank = yield banks()
    client = yield bank.connect()
    bank.sim.set_faults(delay=0.4)
    started = time.monotonic()
    yield client.exchange(network(1987))
    assert time.monotonic() - started >= 0.35
    bank.sim.set_faults(delay=0)
    started = time.monotonic()
    yield client.exchange(network(1987, stan="000010"))
    assert time.monotonic() - started < 0.3


@pytest_twisted.inlineCallbacks
def test_delayed_answer_is_dropped_with_its_connection(banks):
    bank = yield banks(faults=Faults(delay=0.3))
    client = yield bank.connect()
    client.send(network(1987))
    yield sleep(0.05)
    client.close()
    yield sleep(0.4)
    assert bank.sim.sent == {}


@pytest_twisted.inlineCallbacks
def test_dropped_answer_still_moves_money(banks):
    bank = yield banks(faults=Faults(drop_ratio=1.0))
    client = yield bank.connect()
    sale = request("sale", 1987, amount=4000)
    with pytest.raises(TimeoutError):
        yield client.exchange(sale, timeout=0.3)
    assert bank.sim.balance(VISA) == 1000000 - 4000
    echo = yield client.exchange(network(1987))
    assert echo["39"] == "00", "network management is never dropped"
    bank.sim.set_faults(drop_ratio=0)
    yield client.exchange(reversal(sale, 1987, stan="000002"))
    assert bank.sim.balance(VISA) == 1000000


@pytest_twisted.inlineCallbacks
def answered_stans(bank, count: int):
    """STANs answered out of ``count`` pipelined sales; an echo marks the end."""
    client = yield bank.connect()
    for n in range(1, count + 1):
        client.send(request("sale", 1987, amount=1, stan=f"{n:06d}"))
    client.send(network(1987, stan="999999"))
    answered = []
    while True:
        frame = yield client.next_frame()
        stan = bank.dialect.decode(frame.payload)["11"]
        if stan == "999999":
            return answered
        answered.append(stan)


@pytest_twisted.inlineCallbacks
def test_drop_ratio_is_repeatable_with_a_seed(banks):
    first = yield banks(faults=Faults(drop_ratio=0.5, seed=7))
    second = yield banks(faults=Faults(drop_ratio=0.5, seed=7))
    a = yield answered_stans(first, 20)
    b = yield answered_stans(second, 20)
    assert a == b
    assert 0 < len(a) < 20


@pytest_twisted.inlineCallbacks
def test_disconnect_after_n_messages(banks):
    bank = yield banks(faults=Faults(disconnect_after=2))
    client = yield bank.connect()
    first = yield client.exchange(network(1987, stan="000001"))
    assert first["39"] == "00"
    client.send(network(1987, stan="000002"))
    yield client.lost
    assert client.frames.pending == []
    assert bank.sim.received["0800"] == 2 and bank.sim.sent["0810"] == 1


@pytest_twisted.inlineCallbacks
def test_garbage_every_second_answer(banks):
    bank = yield banks("iso87binary", faults=Faults(garbage_every=2))
    client = yield bank.connect()
    for stan in ("000001", "000002", "000003"):
        client.send(network(1987, stan=stan))
    frames = []
    for _ in range(3):
        frames.append((yield client.next_frame()))
    assert bank.dialect.decode(frames[0].payload)["11"] == "000001"
    with pytest.raises(MessageError):
        bank.dialect.decode(frames[1].payload)
    assert bank.dialect.decode(frames[2].payload)["11"] == "000003"
    assert bank.sim.sent["undecodable"] == 1


@pytest.mark.parametrize("dialect", ["iso87ascii", "iso93ascii"])
@pytest_twisted.inlineCallbacks
def test_decline_all_then_back_to_normal(banks, dialect):
    bank = yield banks(dialect, faults=Faults(decline_all="05"))
    client = yield bank.connect()
    v = bank.dialect.version
    declined = yield client.exchange(request("sale", v, stan="000001"))
    assert declined["39"] == code("05", v)
    assert bank.sim.balance(VISA) == 1000000
    bank.sim.set_faults(decline_all=None)
    approved = yield client.exchange(request("sale", v, stan="000002"))
    assert approved["39"] == code("00", v)


@pytest_twisted.inlineCallbacks
def test_bad_fault_setting_is_refused_and_changes_nothing(banks):
    bank = yield banks()
    with pytest.raises(ValueError, match="drop_ratio"):
        bank.sim.set_faults(delay=1, drop_ratio=2)
    with pytest.raises(ValueError, match="1987 dialect expects two"):
        bank.sim.set_faults(decline_all="100")
    with pytest.raises(ValueError, match="answer_fields: got field '1'"):
        bank.sim.set_faults(answer_fields=(("4", "000000000001"), ("1", "x")))
    assert bank.sim.faults == Faults()


# -- bad input ---------------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_undecodable_body_with_readable_mti_is_a_format_error(banks):
    bank = yield banks()
    client = yield bank.connect()
    whole = bank.dialect.encode(request("sale", 1987))
    with capture_logs() as logs:
        client.sendFrame(whole[:30])
        frame = yield client.next_frame()
    assert bank.dialect.decode(frame.payload) == {"t": "0210", "39": "30"}
    bad = [e for e in logs if e["event"] == "banksim_bad_message"]
    assert bad and bad[0]["field"] is not None and bad[0]["offset"] is not None and bad[0]["mti"] == "0200"
    echo = yield client.exchange(network(1987))
    assert echo["39"] == "00"


@pytest_twisted.inlineCallbacks
def test_unreadable_mti_is_ignored_and_the_link_survives(banks):
    bank = yield banks()
    client = yield bank.connect()
    client.sendFrame(b"\xff\xfe\xfd\xfc\xfb")
    client.sendFrame(b"0210" + bank.dialect.encode(network(1987))[4:])
    echo = yield client.exchange(network(1987))
    assert echo["11"] == "000009"
    assert bank.sim.received["undecodable"] == 1 and bank.sim.received["0210"] == 1
    assert client.frames.pending == []


@pytest_twisted.inlineCallbacks
def test_field_the_dialect_does_not_define_is_a_format_error(banks, tmp_path):
    narrow = tmp_path / "narrow.toml"
    narrow.write_text(
        'name = "narrow"\nversion = 1987\n[fields]\n'
        '11 = { class = "IFA_NUMERIC", length = 6 }\n39 = { class = "IF_CHAR", length = 2 }\n'
    )
    bank = yield banks(str(narrow))
    client = yield bank.connect()
    client.sendFrame(load_dialect("iso87ascii").encode({"t": "0200", "4": "000000000100", "11": "000001"}))
    frame = yield client.next_frame()
    assert bank.dialect.decode(frame.payload) == {"t": "0210", "39": "30"}


@pytest_twisted.inlineCallbacks
def test_broken_framing_closes_only_that_connection(banks):
    bank = yield banks("iso87ascii", Framing("4a"))
    rude = yield bank.connect()
    polite = yield bank.connect()
    rude.transport.write(b"12x4garbage")
    yield rude.lost
    answer = yield polite.exchange(network(1987))
    assert answer["39"] == "00"


@pytest_twisted.inlineCallbacks
def test_logs_are_masked(banks):
    bank = yield banks()
    client = yield bank.connect()
    with capture_logs() as logs:
        yield client.exchange(request("sale", 1987, **{"35": "4111111111111111=30121010000000000000"}))
    text = json.dumps(logs)
    assert "4111111111111111" not in text
    inbound = next(e for e in logs if e["event"] == "banksim_in")
    assert inbound["fields"]["2"] == "411111******1111"
    assert inbound["fields"]["48"] == "[3 masked]" and inbound["fields"]["14"] == "[4 masked]"
    outbound = next(e for e in logs if e["event"] == "banksim_out")
    assert outbound["rc"] == "00" and outbound["stan"] == "000001" and outbound["mti"] == "0210"
