"""Mutual TLS for the simulated bank host, as a bank would run it.

A bank's host refuses a client without a certificate from the CA it agreed with the
acquirer, and speaks nothing older than TLS 1.2 (PCI DSS 4.2.1), so the simulator does
the same: a switch that works against it will not be surprised by the real thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from OpenSSL import SSL, crypto
from twisted.internet import ssl


class TlsError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the file."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate and key, and the CA that issues client certificates."""

    cert: Path
    key: Path
    ca: Path


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise TlsError(f"{path}: cannot read the {what}: {e.strerror}") from None


def server_tls_options(files: TlsFiles) -> ssl.CertificateOptions:
    """Server options requiring a client certificate issued by ``files.ca``, TLS 1.2 or later."""
    cert, key, ca = _read(files.cert, "certificate"), _read(files.key, "private key"), _read(files.ca, "CA certificate")
    try:
        identity = ssl.PrivateCertificate.loadPEM(cert + b"\n" + key)
    except (crypto.Error, SSL.Error, ValueError) as e:
        raise TlsError(f"{files.cert} / {files.key}: not a PEM certificate and its private key ({e})") from None
    try:
        authority = ssl.Certificate.loadPEM(ca)
    except (crypto.Error, ValueError) as e:
        raise TlsError(f"{files.ca}: not a PEM CA certificate ({e})") from None
    options = ssl.CertificateOptions(
        privateKey=identity.privateKey.original,
        certificate=identity.original,
        verify=True,
        caCerts=[authority.original],
        requireCertificate=True,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    try:
        options.getContext()
    except SSL.Error as e:
        raise TlsError(f"{files.cert} / {files.key}: the key does not match the certificate ({e})") from None
    return options
