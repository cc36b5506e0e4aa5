"""Real TLS on loopback with certificates made at test time."""

from __future__ import annotations

import pytest_twisted
from twisted.internet.task import Clock

from switch.bank.connector import LinkState, TlsClientOptions
from switch.bank.tls import server_tls_options
from switch.ops.devcerts import issue, make_ca
from tests.bank.isohost import eventually, sleep
from tests.bank.support import events, sale, sample
from tests.sockets import nagle_off


def client_tls(pki, **kw):
    return TlsClientOptions(pki.ca.cert, pki.client.cert, pki.client.key, **kw)


@pytest_twisted.ensureDeferred
async def test_mutual_tls_round_trip(harness, pki, logs):
    host = harness.tls_host(pki)
    connector = harness.connector(host.port, tls=client_tls(pki), link={"sign_on": True})
    await connector.when_ready()
    assert (await connector.request(sale()))["39"] == "00"
    connected = events(logs, "link_connected")[0]
    assert connected["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert not events(logs, "link_plaintext")
    assert nagle_off(connector.links[0]._protocol.transport)  # a request never waits for the bank's late ACK


async def never_ready(connector, registry, seconds=0.5):
    await eventually(lambda: sample(registry, "kswitch_link_tls_failures_total", connector="bank", link="link1") >= 1,
                     what="a TLS failure")
    await sleep(seconds)
    assert not connector.ready


@pytest_twisted.ensureDeferred
async def test_wrong_host_name_is_refused(harness, pki, registry, logs, tmp_path):
    elsewhere = issue(pki.ca, tmp_path / "other", "bank", ["bank.example"], client=False)
    host = harness.host(tls=server_tls_options(elsewhere.cert, elsewhere.key, pki.ca.cert))
    clock = Clock()  # no reconnect during the test
    connector = harness.connector(host.port, tls=client_tls(pki), clock=clock)
    await never_ready(connector, registry)
    failure = events(logs, "link_tls_failed")[0]
    assert failure["server_name"] == "127.0.0.1"
    assert failure["log_level"] == "error"
    assert connector.links[0].state is LinkState.DOWN
    assert host.received == []


@pytest_twisted.ensureDeferred
async def test_server_name_option_verifies_a_dns_name_when_connecting_by_ip(harness, pki, tmp_path):
    named = issue(pki.ca, tmp_path / "other", "bank", ["bank.example"], client=False)
    host = harness.host(tls=server_tls_options(named.cert, named.key, pki.ca.cert))
    connector = harness.connector(host.port, tls=client_tls(pki, server_name="bank.example"))
    await connector.when_ready()
    assert (await connector.request(sale()))["39"] == "00"


@pytest_twisted.ensureDeferred
async def test_certificate_from_another_ca_is_refused(harness, pki, registry, tmp_path):
    rogue_ca = make_ca(tmp_path / "rogue")
    rogue = issue(rogue_ca, tmp_path / "rogue", "bank", ["127.0.0.1"], client=False)
    host = harness.host(tls=server_tls_options(rogue.cert, rogue.key, pki.ca.cert))
    connector = harness.connector(host.port, tls=client_tls(pki), clock=Clock())
    await never_ready(connector, registry)
    assert host.received == []


@pytest_twisted.ensureDeferred
async def test_host_requiring_client_certificate_refuses_a_link_without_one(harness, pki, registry, logs):
    host = harness.tls_host(pki, require_client_cert=True)
    connector = harness.connector(
        host.port, tls=TlsClientOptions(pki.ca.cert, None, None), clock=Clock(), link={"sign_on": True}
    )
    await never_ready(connector, registry)
    assert host.received == []
    assert "certificate" in events(logs, "link_tls_failed")[0]["reason"].lower()


@pytest_twisted.ensureDeferred
async def test_client_certificate_from_an_untrusted_ca_is_refused_by_the_host(harness, pki, registry, tmp_path):
    rogue_ca = make_ca(tmp_path / "rogue")
    rogue = issue(rogue_ca, tmp_path / "rogue", "client", ["kswitch"], client=True)
    host = harness.tls_host(pki)
    connector = harness.connector(
        host.port, tls=TlsClientOptions(pki.ca.cert, rogue.cert, rogue.key), clock=Clock(), link={"sign_on": True}
    )
    await never_ready(connector, registry)
    assert host.received == []


@pytest_twisted.ensureDeferred
async def test_plaintext_only_when_explicit_and_then_logged(harness, logs):
    host = harness.host()
    connector = harness.connector(host.port, tls=None)
    await connector.when_ready()
    (warning,) = events(logs, "link_plaintext")
    assert warning["log_level"] == "warning" and warning["link"] == "link1"
