"""Link life cycle over real loopback sockets: sign-on, echo, reconnect, bank-initiated
messages, bad frames, stop.  Time-driven parts run on a `Clock`; I/O on the reactor."""

from __future__ import annotations

import random

import pytest_twisted
from twisted.internet.task import Clock

from switch.bank.connector import LinkState
from switch.iso.dialect import load_dialect
from switch.iso.framing import Framing
from tests.bank.isohost import eventually, sleep
from tests.bank.support import events, sale, sample
from tests.sockets import nagle_off

ISO93 = load_dialect("iso93ascii")
ISO87_ECHO = {"t": "0800", "7": "0101120000", "11": "000779", "70": "301"}


def by_state(connector, state):
    return lambda: connector.links[0].state is state


@pytest_twisted.ensureDeferred
async def test_sign_on_before_traffic(harness):
    host = harness.host()
    connector = harness.connector(host.port, link={"sign_on": True})
    await connector.when_ready()
    assert [(m["t"], m["70"]) for m in host.requests()] == [("0800", "001")]
    answer = await connector.request(sale())
    assert answer["39"] == "00"
    assert [m["t"] for m in host.requests()] == ["0800", "0200"]
    assert nagle_off(connector.links[0]._protocol.transport)  # a request never waits for the bank's late ACK


@pytest_twisted.ensureDeferred
async def test_state_changes_are_observable(harness):
    host = harness.host()
    connector = harness.connector(host.port, link={"sign_on": True}, start=False)
    seen = []
    connector.add_observer(lambda link, old, new: seen.append((link.name, old.value, new.value)))
    connector.start()
    await connector.when_ready()
    await eventually(lambda: len(seen) == 3)
    assert seen == [("link1", "stopped", "connecting"), ("link1", "connecting", "signing_on"), ("link1", "signing_on", "ready")]
    assert connector.states == {"link1": LinkState.READY}


@pytest_twisted.ensureDeferred
async def test_declined_sign_on_drops_and_retries_with_backoff(harness, logs):
    host = harness.host()
    host.handler = lambda m, p: {**m, "t": "0810", "39": "05"}
    clock = Clock()
    connector = harness.connector(host.port, link={"sign_on": True}, clock=clock, rng=random.Random(1))
    await eventually(by_state(connector, LinkState.DOWN), what="down after declined sign-on")
    assert events(logs, "link_sign_on_failed")[0]["rc"] == "05"
    assert not connector.ready
    (delay,) = [c.getTime() for c in clock.getDelayedCalls()]
    assert 0.4 <= delay <= 0.5
    clock.advance(delay)
    await eventually(lambda: host.accepted == 2, what="second attempt")
    await eventually(by_state(connector, LinkState.DOWN))
    (second,) = [c.getTime() - clock.seconds() for c in clock.getDelayedCalls()]
    assert 0.8 <= second <= 1.0, "backoff grows while sign-on keeps failing"


@pytest_twisted.ensureDeferred
async def test_unanswered_sign_on_times_out_and_drops(harness, logs):
    host = harness.host()
    host.handler = lambda m, p: None
    clock = Clock()
    connector = harness.connector(host.port, link={"sign_on": True, "echo_timeout": 5.0}, clock=clock)
    await eventually(by_state(connector, LinkState.SIGNING_ON))
    await eventually(lambda: host.requests("0800"))
    clock.advance(5.0)
    await eventually(by_state(connector, LinkState.DOWN))
    assert "sign-on unanswered" in events(logs, "link_disconnected")[0]["reason"]


@pytest_twisted.ensureDeferred
async def test_1993_sign_on_uses_1804_function_code_801(harness):
    host = harness.host(dialect=ISO93)
    host.handler = lambda m, p: {"t": "1814", "11": m["11"], "24": m["24"], "39": "000"}
    connector = harness.connector(host.port, dialect=ISO93, link={"sign_on": True})
    await connector.when_ready()
    assert [(m["t"], m["24"]) for m in host.requests()] == [("1804", "801")]


@pytest_twisted.ensureDeferred
async def test_sign_on_code_is_configurable(harness):
    host = harness.host()
    connector = harness.connector(host.port, link={"sign_on": True, "sign_on_code": "061"})
    await connector.when_ready()
    assert host.requests()[0]["70"] == "061"


@pytest_twisted.ensureDeferred
async def test_echo_after_idle_and_not_while_the_bank_talks(harness, registry):
    host = harness.host()
    clock = Clock()
    connector = harness.connector(host.port, clock=clock)
    await connector.when_ready()
    clock.advance(20)
    await connector.request(sale())  # the answer is traffic from the bank
    clock.advance(20)
    await sleep(0.05)
    assert host.requests("0800") == [], "an answer 20 s ago postpones the echo"
    clock.advance(10)
    await eventually(lambda: host.requests("0800"), what="echo")
    assert host.requests("0800")[0]["70"] == "301"
    await eventually(lambda: host.responses or sample(registry, "kswitch_link_messages_total", connector="bank", link="link1", direction="in", mti="0810"))
    assert connector.links[0].ready
    assert sample(registry, "kswitch_link_echo_failures_total", connector="bank", link="link1") == 0


@pytest_twisted.ensureDeferred
async def test_failed_echoes_drop_and_reestablish_the_link(harness, registry, logs):
    host = harness.host()
    host.handler = lambda m, p: None if m.get("70") == "301" else {**m, "t": "0810", "39": "00"}
    clock = Clock()
    connector = harness.connector(host.port, clock=clock, link={"echo_max_failures": 3})
    await connector.when_ready()
    clock.advance(30)
    for attempt in range(1, 4):
        await eventually(lambda: len(host.requests("0800")) == attempt, what=f"echo {attempt}")
        assert connector.links[0].ready, "a link stays in rotation until the limit"
        clock.advance(10)
        clock.advance(0)
    await eventually(by_state(connector, LinkState.DOWN), what="drop after 3 failed echoes")
    assert sample(registry, "kswitch_link_echo_failures_total", connector="bank", link="link1") == 3
    assert "3 consecutive echo tests failed" in events(logs, "link_disconnected")[0]["reason"]
    clock.advance(0.5)
    await eventually(lambda: connector.links[0].ready, what="re-established")
    assert host.accepted == 2
    assert sample(registry, "kswitch_link_reconnects_total", connector="bank", link="link1") == 1


@pytest_twisted.ensureDeferred
async def test_declined_echo_counts_as_a_failure(harness, registry):
    host = harness.host()
    host.handler = lambda m, p: {**m, "t": "0810", "39": "91"}
    clock = Clock()
    connector = harness.connector(host.port, clock=clock, link={"echo_max_failures": 1})
    await connector.when_ready()
    clock.advance(30)
    await eventually(by_state(connector, LinkState.DOWN))
    assert sample(registry, "kswitch_link_echo_failures_total", connector="bank", link="link1") == 1


@pytest_twisted.ensureDeferred
async def test_reconnects_after_the_host_restarts(harness):
    host = harness.host()
    connector = harness.connector(host.port, link={"reconnect_initial": 0.05, "reconnect_max": 0.2, "sign_on": True})
    await connector.when_ready()
    port = host.port
    await host.stop()
    await eventually(lambda: not connector.ready, what="link down")
    await sleep(0.3)  # a few refused attempts while the host is away
    assert connector.links[0].state in (LinkState.DOWN, LinkState.CONNECTING)
    restarted = harness.host(port=port)
    await connector.when_ready()
    assert restarted.requests()[0]["70"] == "001", "signs on again after reconnecting"
    assert (await connector.request(sale()))["39"] == "00"


@pytest_twisted.ensureDeferred
async def test_connect_timeout_covers_the_tls_handshake(harness, pki, logs):
    from switch.bank.tls import TlsClientOptions

    silent = harness.host()  # plain TCP: accepts, never speaks TLS
    clock = Clock()
    connector = harness.connector(
        silent.port, clock=clock, tls=TlsClientOptions(pki.ca.cert, pki.client.cert, pki.client.key),
        link={"connect_timeout": 3.0},
    )
    await eventually(lambda: silent.accepted == 1)
    assert connector.links[0].state is LinkState.CONNECTING
    clock.advance(3.0)
    await eventually(by_state(connector, LinkState.DOWN))
    assert events(logs, "link_connect_timeout")


@pytest_twisted.ensureDeferred
async def test_refused_connection_is_retried(harness, logs):
    host = harness.host()
    port = host.port
    await host.stop()
    clock = Clock()
    connector = harness.connector(port, clock=clock, rng=random.Random(3))
    await eventually(by_state(connector, LinkState.DOWN))
    assert events(logs, "link_connect_failed")
    restarted = harness.host(port=port)
    clock.advance(0.5)
    await connector.when_ready()
    assert restarted.accepted == 1


@pytest_twisted.ensureDeferred
async def test_bank_initiated_echo_and_sign_on_are_answered(harness):
    host = harness.host()
    connector = harness.connector(host.port)
    await connector.when_ready()
    await eventually(lambda: host.connections)
    host.connections[0].send({"t": "0800", "7": "0101120000", "11": "000777", "70": "301"})
    host.connections[0].send({"t": "0800", "7": "0101120000", "11": "000778", "70": "001"})
    await eventually(lambda: len(host.responses) == 2)
    assert [(r["t"], r["11"], r["39"], r["70"]) for r in host.responses] == [("0810", "000777", "00", "301"), ("0810", "000778", "00", "001")]


@pytest_twisted.ensureDeferred
async def test_bank_initiated_request_with_tpdu_gets_swapped_tpdu(harness):
    framing = Framing("2b", tpdu=True)
    host = harness.host(framing=framing)
    connector = harness.connector(host.port, framing=framing, tpdu=bytes.fromhex("6000120034"))
    await connector.when_ready()
    answer = await connector.request(sale())
    assert answer["39"] == "00"
    assert host.connections[0].tpdu == bytes.fromhex("6000120034")
    received = []
    original = host.connections[0].frameReceived
    host.connections[0].frameReceived = lambda frame: (received.append(frame.tpdu), original(frame))
    echo = ISO87_ECHO
    host.connections[0].sendFrame(harness.hosts[0].dialect.encode(echo), bytes.fromhex("6000340012"))
    await eventually(lambda: received)
    assert received == [bytes.fromhex("6000120034")], "the reply swaps destination and source"


@pytest_twisted.ensureDeferred
async def test_other_bank_requests_go_to_the_hook_and_its_answer_goes_back(harness):
    host = harness.host()
    connector = harness.connector(host.port)
    seen = []

    def advice(message):
        seen.append(message)
        return {"t": "0230", "11": message["11"], "41": message["41"], "39": "00"}

    connector.on_inbound_request = advice
    await connector.when_ready()
    host.connections[0].send({"t": "0220", "11": "000900", "41": "TERM0001", "4": "000000000500"})
    await eventually(lambda: host.responses)
    assert seen[0]["11"] == "000900"
    assert host.responses[0] == {"t": "0230", "11": "000900", "41": "TERM0001", "39": "00"}


@pytest_twisted.ensureDeferred
async def test_unhandled_bank_request_is_logged_and_not_answered(harness, logs):
    host = harness.host()
    connector = harness.connector(host.port)
    await connector.when_ready()
    host.connections[0].send({"t": "0420", "2": "4111111111111111", "11": "000901", "41": "TERM0001"})
    await eventually(lambda: events(logs, "inbound_request_unhandled"))
    await sleep(0.05)
    assert host.responses == []
    assert events(logs, "inbound_request_unhandled")[0]["fields"]["2"] == "411111******1111"


@pytest_twisted.ensureDeferred
async def test_failing_inbound_hook_is_logged_and_the_link_stays_up(harness, logs):
    host = harness.host()
    connector = harness.connector(host.port)
    connector.on_inbound_request = lambda message: 1 / 0
    await connector.when_ready()
    host.connections[0].send({"t": "0220", "11": "000902", "41": "TERM0001"})
    await eventually(lambda: events(logs, "inbound_request_failed"))
    assert (await connector.request(sale()))["39"] == "00"


@pytest_twisted.ensureDeferred
async def test_undecodable_frames_are_counted_and_the_link_stays_up(harness, registry, logs):
    host = harness.host()
    other = harness.host()
    connector = harness.connector(host.port, other.port, pool_strategy="round-robin")
    await eventually(lambda: all(link.ready for link in connector.links))
    host.connections[0].sendRaw(b"0200\xff\xff")
    host.connections[0].sendRaw(b"ABCD" + b"0" * 16)  # decodes, but the MTI is not digits
    host.connections[0].sendRaw(b"0200F2")  # bitmap cut short
    await eventually(lambda: sample(registry, "kswitch_link_bad_frames_total", connector="bank", link="link1") == 3)
    bad = events(logs, "iso_bad_frame")
    assert {e["field"] for e in bad} >= {"t", "p"}
    assert all("reason" in e and "length" in e for e in bad)
    assert all(link.ready for link in connector.links)
    assert [(await connector.request(sale()))["39"] for _ in range(2)] == ["00", "00"]
    assert sample(registry, "kswitch_link_bad_frames_total", connector="bank", link="link2") == 0


@pytest_twisted.ensureDeferred
async def test_keep_alive_frames_are_ignored(harness, registry):
    host = harness.host()
    connector = harness.connector(host.port)
    await connector.when_ready()
    host.connections[0].transport.write(b"\x00\x00")
    assert (await connector.request(sale()))["39"] == "00"
    assert sample(registry, "kswitch_link_bad_frames_total", connector="bank", link="link1") == 0


@pytest_twisted.ensureDeferred
async def test_stop_signs_off_and_does_not_reconnect(harness, logs):
    host = harness.host()
    connector = harness.connector(host.port, link={"sign_on": True, "reconnect_initial": 0.01})
    await connector.when_ready()
    await connector.stop()
    assert [m["70"] for m in host.requests("0800")] == ["001", "002"]
    assert connector.states == {"link1": LinkState.STOPPED}
    await sleep(0.1)
    assert host.accepted == 1
    assert events(logs, "link_signed_off")


@pytest_twisted.ensureDeferred
async def test_stop_without_sign_off_and_a_silent_bank_is_bounded(harness):
    host = harness.host()
    host.handler = lambda m, p: None
    clock = Clock()
    connector = harness.connector(host.port, clock=clock, link={"echo_timeout": 2.0})
    await connector.when_ready()
    done = []
    connector.stop().addCallback(done.append)
    await eventually(lambda: host.requests("0800"))
    await sleep(0.05)
    assert not done
    clock.advance(2.0)  # the sign-off goes unanswered
    await eventually(lambda: done, what="stop completes")


@pytest_twisted.ensureDeferred
async def test_framing_violation_closes_only_that_connection_and_it_comes_back(harness, logs):
    broken, healthy = harness.host(), harness.host()
    connector = harness.connector(broken.port, healthy.port, link={"reconnect_initial": 0.05})
    await eventually(lambda: all(link.ready for link in connector.links))
    broken.connections[0].transport.write(b"\xff\xff")  # announces a 65535-byte frame, over max_frame
    await eventually(lambda: events(logs, "framing_error"), what="framing error")
    await eventually(lambda: broken.accepted == 2 and connector.links[0].ready, what="reconnected")
    assert healthy.accepted == 1 and connector.links[1].ready
