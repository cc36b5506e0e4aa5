"""TLS for bank links: mutual authentication, TLS 1.2 or newer, verified by default.

PCI DSS 4.2.1 asks for strong cryptography with trusted certificates and no fallback
to older protocol versions.  So the client side always verifies the bank's certificate
against the connector's own CA bundle (never the platform store: a bank link trusts
exactly the CAs its bank named) and the host name through service_identity, and
refuses anything below TLS 1.2.  Files are read and checked when the options are
built, so a wrong path, an unreadable key or a key that does not belong to its
certificate stops start-up with the file named instead of failing every handshake.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    trustRootFromCertificates,
)

MINIMUM_TLS = TLSVersion.TLSv1_2
EXPIRY_WARNING = timedelta(days=30)

log = structlog.get_logger("kswitch.tls")


class TlsConfigError(ValueError):
    """A certificate, key or CA file is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class TlsClientOptions:
    """How a link authenticates to its bank and verifies the bank. No defaults for files:

    - ``ca``: PEM bundle of the CA(s) that sign the bank's server certificate.
    - ``cert`` / ``key``: our client certificate (PEM; intermediates may follow the leaf)
      and its private key.  Both ``None`` means no client certificate, for the rare
      bank that authenticates the switch by other means; it is logged as a warning.
    - ``server_name``: the name the bank's certificate must carry; default ``None``
      means the link's host (use it when connecting by IP to a certificate with a DNS name).
    """

    ca: Path
    cert: Path | None
    key: Path | None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise TlsConfigError("tls: cert and key go together; set both or neither")


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise TlsConfigError(f"{path}: cannot read {what}: {e.strerror}") from None


def _certificates(path: Path, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(_read(path, what))
    except ValueError as e:
        raise TlsConfigError(f"{path}: not a PEM {what}: {e}") from None
    for cert in certs:
        _check_validity(path, cert)
    return certs


def _check_validity(path: Path, cert: x509.Certificate) -> None:
    now = datetime.now(timezone.utc)
    subject = cert.subject.rfc4514_string()
    if cert.not_valid_after_utc < now:
        log.error("tls_certificate_expired", file=str(path), subject=subject, not_after=cert.not_valid_after_utc.isoformat())
    elif cert.not_valid_after_utc - now < EXPIRY_WARNING:
        log.warning("tls_certificate_expiring", file=str(path), subject=subject, not_after=cert.not_valid_after_utc.isoformat())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _identity(cert_path: Path, key_path: Path) -> dict[str, object]:
    """Our certificate, its key and any intermediates that followed it in the file, as
    `CertificateOptions` keyword arguments."""
    leaf, *chain = _certificates(cert_path, "certificate")
    try:
        key = serialization.load_pem_private_key(_read(key_path, "private key"), None)
    except (ValueError, TypeError) as e:
        raise TlsConfigError(f"{key_path}: not an unencrypted PEM private key: {e}") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise TlsConfigError(f"{key_path}: this key does not belong to the certificate in {cert_path}")
    return {"certificate": leaf, "privateKey": key, "extraCertChain": chain}


def client_connection_creator(options: TlsClientOptions, host: str) -> IOpenSSLClientConnectionCreator:
    """TLS settings for one link: verify the bank as ``server_name`` (or ``host``)."""
    extra: dict[str, object] = {"raiseMinimumTo": MINIMUM_TLS}
    if options.cert is not None and options.key is not None:
        extra.update(_identity(options.cert, options.key))
    trusted = [Certificate.loadPEM(_pem(c)) for c in _certificates(options.ca, "CA bundle")]
    return optionsForClientTLS(
        options.server_name or host, trustRoot=trustRootFromCertificates(trusted), extraCertificateOptions=extra
    )


def server_tls_options(cert: Path, key: Path, ca: Path, require_client_cert: bool = True) -> CertificateOptions:
    """Server side (bank simulator, inbound listeners): TLS 1.2+, client certificates
    verified against ``ca`` and required unless ``require_client_cert`` is False."""
    return CertificateOptions(
        **_identity(cert, key),  # type: ignore[arg-type]
        verify=True,
        caCerts=[Certificate.loadPEM(_pem(c)).original for c in _certificates(ca, "CA bundle")],
        requireCertificate=require_client_cert,
        raiseMinimumTo=MINIMUM_TLS,
    )
