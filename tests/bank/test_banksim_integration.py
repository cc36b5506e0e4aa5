"""Links against the real bank simulator (`switch.tools.banksim`): mutual TLS, sign-on, the
issuer's decisions, and its fault injection seen from the acquirer's side."""

from __future__ import annotations

import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.task import Clock

from switch.bank.connector import Connector, ConnectorOptions, LinkLost, LinkOptions, RequestTimeout, TlsClientOptions
from switch.iso.dialect import load_dialect
from switch.iso.framing import Framing
from switch.tools.banksim import BankSim, BankSimOptions, Faults, TlsFiles, load_accounts
from switch.tools.banksim.accounts import DEFAULT_ACCOUNTS
from tests.bank.isohost import eventually
from tests.bank.support import events, sample

PAN = "4111111111111111"  # approved test card in the default accounts, USD
ISO87B = load_dialect("iso87binary")
ISO93A = load_dialect("iso93ascii")
FRAMING = Framing("2b")


def purchase(amount: str = "000000001000", pan: str = PAN, terminal: str = "TERM0001", mti: str = "0200") -> dict[str, str]:
    return {"t": mti, "2": pan, "3": "000000", "4": amount, "7": "1123120000", "41": terminal, "49": "840",
            "37": "633012000001"}


class Bank:
    """A BankSim on loopback with mutual TLS and the connector that talks to it."""

    def __init__(self, pki, dialect=ISO87B, faults: Faults | None = None) -> None:
        self.pki = pki
        self.sim = BankSim(reactor, dialect, FRAMING, load_accounts(DEFAULT_ACCOUNTS),
                           BankSimOptions(faults=faults or Faults()))
        self.dialect = dialect
        self.connectors: list[Connector] = []
        self.port = 0

    async def listen(self) -> None:
        listening = await self.sim.listen(0, TlsFiles(self.pki.server.cert, self.pki.server.key, self.pki.ca.cert))
        self.port = listening.getHost().port

    def connector(self, registry, clock=None, **link) -> Connector:
        tls = TlsClientOptions(self.pki.ca.cert, self.pki.client.cert, self.pki.client.key)
        options = ConnectorOptions("bank", self.dialect, FRAMING, None,
                                   (LinkOptions("link1", "127.0.0.1", self.port, tls, sign_on=True, **link),))
        connector = Connector(options, clock=clock, registry=registry)
        self.connectors.append(connector)
        connector.start()
        return connector

    async def close(self) -> None:
        await self.sim.close()
        for connector in self.connectors:
            for link in connector.links:
                stopping = link.stop()
                if link._protocol is not None:
                    link._protocol.transport.abortConnection()
                await stopping


@pytest_twisted.async_yield_fixture
async def bank(pki):
    b = Bank(pki)
    await b.listen()
    yield b
    await b.close()


async def failure_of(deferred):
    try:
        result = await deferred
    except Exception as e:  # noqa: BLE001 - the test inspects it
        return e
    raise AssertionError(f"expected a failure, got {result!r}")


@pytest_twisted.ensureDeferred
async def test_signed_on_mutual_tls_purchase_moves_the_ledger(bank, registry):
    before = bank.sim.balance(PAN)
    connector = bank.connector(registry)
    await connector.when_ready()
    answer = await connector.request(purchase())
    assert (answer["t"], answer["39"]) == ("0210", "00")
    assert bank.sim.balance(PAN) == before - 1000
    assert bank.sim.received["0800"] == 1
    assert sample(registry, "kswitch_link_up", connector="bank", link="link1") == 1


@pytest_twisted.ensureDeferred
async def test_issuer_declines_come_back_as_answers(bank, registry):
    connector = bank.connector(registry)
    await connector.when_ready()
    assert (await connector.request(purchase(pan="4000000000000002")))["39"] != "00"
    assert (await connector.request(purchase(amount="999999999999", terminal="TERM0002")))["39"] == "51"


@pytest_twisted.ensureDeferred
async def test_dropped_answer_is_a_timeout_although_the_bank_acted(bank, registry):
    clock = Clock()
    connector = bank.connector(registry, clock=clock)
    await connector.when_ready()
    bank.sim.set_faults(drop_ratio=1.0)
    before = bank.sim.balance(PAN)
    pending = connector.request(purchase())
    await eventually(lambda: bank.sim.received["0200"] == 1)
    clock.advance(30.0)
    error = await failure_of(pending)
    assert isinstance(error, RequestTimeout) and error.written
    assert bank.sim.balance(PAN) == before - 1000, "exactly why a timeout must be reversed"


@pytest_twisted.ensureDeferred
async def test_bank_disconnect_fails_the_request_at_once_and_the_link_returns(bank, registry):
    clock = Clock()
    connector = bank.connector(registry, clock=clock)
    await connector.when_ready()
    bank.sim.set_faults(disconnect_after=2)  # the sign-on was message 1 on this connection
    error = await failure_of(connector.request(purchase()))
    assert isinstance(error, LinkLost) and error.written
    bank.sim.set_faults(disconnect_after=None)
    clock.advance(0.5)
    await eventually(lambda: connector.ready, what="reconnected and signed on")
    assert (await connector.request(purchase(terminal="TERM0002")))["39"] == "00"


@pytest_twisted.ensureDeferred
async def test_garbage_answer_is_counted_and_the_link_stays_up(bank, registry, logs):
    clock = Clock()
    connector = bank.connector(registry, clock=clock)
    await connector.when_ready()
    bank.sim.set_faults(garbage_every=2)  # answer 1 was the sign-on; answer 2 is garbage
    pending = connector.request(purchase())
    await eventually(lambda: sample(registry, "kswitch_link_bad_frames_total", connector="bank", link="link1") == 1)
    assert events(logs, "iso_bad_frame")
    assert connector.ready
    bank.sim.set_faults(garbage_every=None)
    clock.advance(30.0)
    assert isinstance(await failure_of(pending), RequestTimeout)
    assert (await connector.request(purchase(terminal="TERM0002")))["39"] == "00"


@pytest_twisted.ensureDeferred
async def test_slow_bank_answer_arrives_late_and_reaches_the_hook(bank, registry):
    connector = bank.connector(registry)
    late = []
    connector.mux.on_late_response = late.append
    await connector.when_ready()
    bank.sim.set_faults(delay=0.3)
    error = await failure_of(connector.request(purchase(), timeout=0.1))
    assert isinstance(error, RequestTimeout)
    await eventually(lambda: late, what="late approval")
    assert late[0]["11"] == error.stan and late[0]["39"] == "00"
    assert sample(registry, "kswitch_mux_late_responses_total", connector="bank") == 1


@pytest_twisted.ensureDeferred
async def test_1993_sign_on_echo_and_purchase(pki):
    bank = Bank(pki, dialect=ISO93A)
    await bank.listen()
    registry = CollectorRegistry()
    clock = Clock()
    try:
        connector = bank.connector(registry, clock=clock)
        await connector.when_ready()
        answer = await connector.request(purchase(mti="1200"))
        assert (answer["t"], answer["39"]) == ("1210", "000")
        clock.advance(30.0)
        await eventually(lambda: bank.sim.received["1804"] == 2, what="echo")
        await eventually(lambda: sample(registry, "kswitch_link_messages_total", connector="bank", link="link1",
                                        direction="in", mti="1814") == 2)
        assert connector.ready
        assert sample(registry, "kswitch_link_echo_failures_total", connector="bank", link="link1") == 0
    finally:
        await bank.close()
