"""Listening on endpoint descriptions: Unix sockets, TLS with client certificates, all-or-nothing start."""

from __future__ import annotations

import warnings

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import SSL4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from switch.gateway.config import ApiConfig, ClientConfig
from switch.gateway.listen import ListenError, listen, split_description, tls_endpoint
from switch.ops import devcerts
from tests.sockets import nagle_off

from .conftest import WEB1_TOKEN, WEB2_TOKEN, authorize_request, make_config

inline = pytest_twisted.inlineCallbacks


@inline
def test_unix_socket_transport(make_server, tmp_path):
    path = str(tmp_path / "api.sock")
    server = make_server(descriptions=(f"unix:{path}", "tcp:0:interface=127.0.0.1"))
    client = yield server.connect(UNIXClientEndpoint(reactor, path))
    yield client.hello()
    answer = yield client.request(authorize_request(id=1))
    assert answer["status"] == "approved"


@pytest.fixture
def pki(tmp_path):
    ca = devcerts.make_ca(tmp_path / "ca")
    return {
        "ca": ca,
        "server": devcerts.issue(ca, tmp_path, "server", ["localhost", "127.0.0.1"], client=False),
        "web-1": devcerts.issue(ca, tmp_path, "web-1", ["web-1"], client=True),
        "web-2": devcerts.issue(ca, tmp_path, "web-2", ["web-2"], client=True),
    }


def tls_client(pki, port: int, identity: str | None) -> SSL4ClientEndpoint:
    extra = {}
    if identity is not None:
        pair = pki[identity]
        extra = {"certificate": x509.load_pem_x509_certificate(pair.cert.read_bytes()),
                 "privateKey": serialization.load_pem_private_key(pair.key.read_bytes(), None)}
    options = ssl.optionsForClientTLS(
        "localhost", trustRoot=ssl.Certificate.loadPEM(pki["ca"].cert.read_bytes()), extraCertificateOptions=extra
    )
    return SSL4ClientEndpoint(reactor, "127.0.0.1", port, options)


def test_a_tls_listener_starts_without_pyopenssl_deprecation_warnings(pki):
    """Operators run with warnings shown (``python -W default``): a start must not warn that the switch hands
    pyOpenSSL objects it deprecates. Building the TLS context is what hands them over."""
    description = (
        f"tls:0:interface=127.0.0.1:certKey={pki['server'].cert}:privateKey={pki['server'].key}"
        f":caCerts={pki['ca'].cert}:extraCertChain={pki['ca'].cert}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        context = tls_endpoint(reactor, description)._sslContextFactory.getContext()
    assert context.get_cert_store() is not None


def tls_server(make_server, pki):
    base = make_config()
    config = ApiConfig(
        clients={
            "web-1": ClientConfig("web-1", WEB1_TOKEN, frozenset({"m1"}), certificate_cn="web-1"),
            "web-2": base.clients["web-2"],
        },
        merchants=base.merchants,
    )
    description = (
        f"tls:0:interface=127.0.0.1:certKey={pki['server'].cert}:privateKey={pki['server'].key}"
        f":caCerts={pki['ca'].cert}"
    )
    return make_server(descriptions=(description,), config=config)


@inline
def test_tls_with_client_certificates_binds_a_certificate_to_its_client(make_server, pki):
    server = tls_server(make_server, pki)
    right = yield server.connect(tls_client(pki, server.port, "web-1"))
    answer = yield right.hello()
    assert answer["ok"] is True
    sale = yield right.request(authorize_request(id=1))
    assert sale["status"] == "approved"
    wrong = yield server.connect(tls_client(pki, server.port, "web-2"))
    refused = yield wrong.hello()
    assert refused["error"]["code"] == "unauthenticated"
    unbound = yield wrong.hello("web-2", WEB2_TOKEN)
    assert unbound["ok"] is True


@pytest.mark.parametrize("kind", ["tcp", "tls"])
@inline
def test_an_accepted_connection_does_not_hold_answers_for_nagle(make_server, pki, kind):
    """A client that waits on a burst of its payments sends nothing back, so it acknowledges late (Linux's
    delayed ACK, 40 ms): with Nagle's algorithm on, each answer after the first would wait for that."""
    server = tls_server(make_server, pki) if kind == "tls" else make_server()
    client = yield server.connect(tls_client(pki, server.port, "web-1") if kind == "tls" else None)
    answer = yield client.hello()
    assert answer["ok"] is True
    (accepted,) = server.factory.connections
    assert nagle_off(accepted.transport)


@inline
def test_tls_refuses_clients_without_a_certificate(make_server, pki):
    server = tls_server(make_server, pki)
    client = yield server.connect(tls_client(pki, server.port, None))
    client.send({"id": 1, "op": "ping"})
    yield client.wait_closed()
    assert client.answers == []


@inline
def test_listening_is_all_or_nothing():
    taken = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    factory = Factory.forProtocol(Protocol)
    busy = f"tcp:{taken.getHost().port}:interface=127.0.0.1"
    try:
        with pytest.raises(ListenError) as failed:
            yield listen(reactor, ["tcp:0:interface=127.0.0.1", busy], factory)
        assert failed.value.description == busy
        assert factory.numPorts == 0
    finally:
        yield taken.stopListening()


@pytest.mark.parametrize(
    "description, complaint",
    [
        ("tls:0:certKey=/nonexistent.pem:privateKey=/nonexistent.key", "nonexistent"),
        ("tls:0:privateKey=/x.key", "certKey"),
        ("tls:0:certKey=/x:privateKey=/y:verify=no", "unknown tls option"),
        ("tls:http:certKey=/x:privateKey=/y", "tls:PORT"),
        ("nonsense:1", "nonsense"),
    ],
)
@inline
def test_a_bad_description_fails_with_its_reason(description, complaint):
    with pytest.raises(ListenError) as failed:
        yield listen(reactor, [description], Factory.forProtocol(Protocol))
    assert complaint in str(failed.value)


def test_descriptions_split_on_unescaped_colons():
    assert split_description(r"tls:7584:interface=\:\:1:certKey=C\:\\certs\\a.pem") == [
        "tls",
        "7584",
        "interface=::1",
        r"certKey=C:\certs\a.pem",
    ]
