"""Mutual TLS for the simulated bank host, as a bank would run it.

A bank's host refuses a client without a certificate from the CA it agreed with the
acquirer, and speaks nothing older than TLS 1.2 (PCI DSS 4.2.1), so the simulator does
the same: a switch that works against it will not be surprised by the real thing.
The context is built straight from the PEM files, so every failure can name its file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from OpenSSL import SSL
from twisted.internet.ssl import ContextFactory


class TlsError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the file."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate (chain) and key, and the CA that issues client certificates."""

    cert: Path
    key: Path
    ca: Path


class MutualTlsServer(ContextFactory):
    """Server context factory for `SSL4ServerEndpoint`."""

    def __init__(self, context: SSL.Context) -> None:
        self._context = context

    def getContext(self) -> SSL.Context:
        return self._context


def _load(what: str, path: Path, load: object) -> None:
    if not Path(path).is_file():
        raise TlsError(f"{path}: cannot read the {what}: no such file")
    try:
        load(str(path))  # type: ignore[operator]
    except SSL.Error as e:
        raise TlsError(f"{path}: not a usable PEM {what} ({e})") from None


def server_tls_options(files: TlsFiles) -> MutualTlsServer:
    """Require a client certificate issued by ``files.ca``; TLS 1.2 or later only."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    _load("certificate", files.cert, context.use_certificate_chain_file)
    _load("private key (matching the certificate)", files.key, context.use_privatekey_file)
    _load("CA certificate", files.ca, lambda path: context.load_verify_locations(path))
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda _conn, _cert, _err, _depth, ok: bool(ok))
    context.set_session_id(b"kswitch-banksim")
    return MutualTlsServer(context)
