"""Start listening on endpoint description strings.

Everything Twisted's ``serverFromString`` knows works (``tcp:7583:interface=127.0.0.1``,
``unix:/run/kswitch/api.sock:mode=660:lockfile=1``, ``ssl:…``, ``systemd:…``).
Twisted's ``ssl:`` cannot ask for client certificates, so one more prefix is
understood here::

    tls:7584:interface=0.0.0.0:certKey=/etc/kswitch/api.crt:privateKey=/etc/kswitch/api.key
        [:extraCertChain=/etc/kswitch/chain.pem][:caCerts=/etc/kswitch/clients-ca.pem][:backlog=50]

With ``caCerts`` every client must present a certificate signed by one of those CAs.
TLS 1.2 is the minimum either way. Colons and backslashes inside a value are
escaped with a backslash, as in Twisted (``interface=\\:\\:1``).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import structlog
from cryptography import x509
from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.python.filepath import FilePath

log = structlog.get_logger("kswitch.api")

TLS_OPTIONS = frozenset({"interface", "certKey", "privateKey", "extraCertChain", "caCerts", "backlog"})


class ListenError(Exception):
    """A listen address could not be used; ``description`` says which."""

    def __init__(self, description: str, reason: BaseException) -> None:
        super().__init__(f"cannot listen on {description!r}: {reason}")
        self.description = description
        self.reason = reason


def split_description(description: str) -> list[str]:
    """Split on colons that are not escaped by a backslash, removing the escapes."""
    parts, current, chars = [], [], iter(description)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _load_certificates(path: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(FilePath(path).getContent())


def tls_endpoint(reactor: object, description: str) -> SSL4ServerEndpoint:
    """The endpoint for a ``tls:`` description (see the module docstring)."""
    prefix, port, *options = split_description(description)
    if prefix != "tls" or not port.isdigit():
        raise ValueError("expected tls:PORT:certKey=…:privateKey=…")
    settings = dict(option.partition("=")[::2] for option in options)
    unknown = settings.keys() - TLS_OPTIONS
    if unknown:
        raise ValueError(f"unknown tls option(s) {sorted(unknown)}; expected some of {sorted(TLS_OPTIONS)}")
    if "certKey" not in settings or "privateKey" not in settings:
        raise ValueError("tls needs certKey= (certificate PEM) and privateKey= (key PEM)")
    pem = FilePath(settings["certKey"]).getContent() + b"\n" + FilePath(settings["privateKey"]).getContent()
    identity = ssl.PrivateCertificate.loadPEM(pem)
    chain = _load_certificates(settings["extraCertChain"]) if "extraCertChain" in settings else None
    client_cas = _load_certificates(settings["caCerts"]) if "caCerts" in settings else None
    # The key and certificates as cryptography's objects: pyOpenSSL deprecates being handed its own
    # (a DeprecationWarning at every start), but its certificate store still takes only its X509.
    context = ssl.CertificateOptions(
        privateKey=identity.privateKey.original.to_cryptography_key(),
        certificate=identity.original.to_cryptography(),
        extraCertChain=chain,  # type: ignore[arg-type]  # Twisted types it as X509; pyOpenSSL takes either
        verify=client_cas is not None,
        caCerts=[crypto.X509.from_cryptography(ca) for ca in client_cas] if client_cas is not None else None,
        requireCertificate=client_cas is not None,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    return SSL4ServerEndpoint(
        reactor, int(port), context, backlog=int(settings.get("backlog", 50)), interface=settings.get("interface", "")
    )


def server_endpoint(reactor: object, description: str) -> IStreamServerEndpoint:
    if description.startswith("tls:"):
        return tls_endpoint(reactor, description)
    return serverFromString(reactor, description)


@inlineCallbacks
def listen(
    reactor: object, descriptions: Sequence[str], factory: Factory
) -> Generator[Deferred[Any], Any, list[IListeningPort]]:
    """Listen on every description, or on none.

    If one address fails, the ports already opened are closed again and the
    Deferred fails with `ListenError`, so a half-started switch never runs.
    """
    ports: list[IListeningPort] = []
    for description in descriptions:
        try:
            port = yield server_endpoint(reactor, description).listen(factory)
        except Exception as e:
            for opened in ports:
                yield opened.stopListening()
            raise ListenError(description, e) from e
        log.info("api_listening", address=description, host=str(port.getHost()))
        ports.append(port)
    return ports
