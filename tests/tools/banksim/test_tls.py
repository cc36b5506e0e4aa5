"""Mutual TLS as a bank runs it: CA-issued client certificates only, TLS 1.2 or later.

The clients are Python's own `ssl` module on a thread, so the checks do not depend on
the Twisted TLS code the simulator itself uses.
"""

from __future__ import annotations

import ssl

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from switch.iso.framing import Framing
from switch.ops.devcerts import issue, make_ca, make_dev_pki
from switch.tools.banksim import TlsError, TlsFiles
from switch.tools.banksim.tls import server_tls_options
from tests.tools.banksim.wire import blocking_exchange, network

REFUSED = (ssl.SSLError, ConnectionError, EOFError, TimeoutError)


@pytest.fixture
def pki(tmp_path):
    return make_dev_pki(tmp_path / "pki")


@pytest.fixture
def server_files(pki):
    return TlsFiles(pki.server.cert, pki.server.key, pki.ca.cert)


def client_context(ca, pair=None, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca.cert)
    if pair is not None:
        context.load_cert_chain(pair.cert, pair.key)
    if version is not None:
        context.minimum_version = context.maximum_version = version
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def tls_exchange(port: int, context: ssl.SSLContext, wire: bytes) -> bytes:
    return blocking_exchange(port, Framing("2b"), wire, context).payload


def echo_wire(bank) -> bytes:
    return bank.framing.frame(bank.dialect.encode(network(1987)))


@pytest_twisted.inlineCallbacks
def test_client_with_certificate_from_the_ca_is_served(banks, pki, server_files):
    bank = yield banks(tls=server_files)
    reply = yield deferToThread(tls_exchange, bank.port, client_context(pki.ca, pki.client), echo_wire(bank))
    assert bank.dialect.decode(reply)["39"] == "00"


@pytest_twisted.inlineCallbacks
def test_tls_1_2_is_accepted(banks, pki, server_files):
    bank = yield banks(tls=server_files)
    context = client_context(pki.ca, pki.client, ssl.TLSVersion.TLSv1_2)
    reply = yield deferToThread(tls_exchange, bank.port, context, echo_wire(bank))
    assert bank.dialect.decode(reply)["39"] == "00"


@pytest_twisted.inlineCallbacks
def test_client_without_certificate_is_refused(banks, pki, server_files):
    bank = yield banks(tls=server_files)
    with pytest.raises(REFUSED):
        yield deferToThread(tls_exchange, bank.port, client_context(pki.ca), echo_wire(bank))
    assert bank.sim.received == {}


@pytest_twisted.inlineCallbacks
def test_client_certificate_from_another_ca_is_refused(banks, pki, server_files, tmp_path):
    stranger_ca = make_ca(tmp_path / "other", "someone else's CA")
    stranger = issue(stranger_ca, tmp_path / "other", "client", ["kswitch"], client=True)
    bank = yield banks(tls=server_files)
    with pytest.raises(REFUSED):
        yield deferToThread(tls_exchange, bank.port, client_context(pki.ca, stranger), echo_wire(bank))
    assert bank.sim.received == {}


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
@pytest_twisted.inlineCallbacks
def test_tls_1_1_is_refused_by_the_server(banks, pki, server_files):
    try:
        context = client_context(pki.ca, pki.client, ssl.TLSVersion.TLSv1_1)
    except (ValueError, ssl.SSLError) as e:
        pytest.skip(f"this Python's OpenSSL cannot offer TLS 1.1 at all: {e}")
    bank = yield banks(tls=server_files)
    with pytest.raises(ssl.SSLError) as refused:
        yield deferToThread(tls_exchange, bank.port, context, echo_wire(bank))
    if refused.value.reason in ("NO_PROTOCOLS_AVAILABLE", "UNSUPPORTED_PROTOCOL"):
        pytest.skip(f"this Python's OpenSSL would not send a TLS 1.1 hello: {refused.value}")
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"


def test_unusable_files_are_named(pki, tmp_path):
    with pytest.raises(TlsError, match="cannot read the private key"):
        server_tls_options(TlsFiles(pki.server.cert, tmp_path / "missing.key", pki.ca.cert))
    with pytest.raises(TlsError, match=r"client.key: not a usable PEM private key \(matching the certificate\)"):
        server_tls_options(TlsFiles(pki.server.cert, pki.client.key, pki.ca.cert))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(TlsError, match="not a usable PEM CA certificate"):
        server_tls_options(TlsFiles(pki.server.cert, pki.server.key, tmp_path / "junk.pem"))
