"""What the socket API needs to know about its clients and limits, as plain dataclasses.

Merchants and stores are domain objects (`switch.domain.merchant`).

The switch fills these from its TOML configuration; the API never reads files itself,
which keeps it testable and lets a reload swap the whole `ApiConfig` at once.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from switch.domain.merchant import MerchantConfig


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """A web-tier client allowed to connect.

    ``certificate_cn``, when set, additionally requires the connection to come over
    TLS with a client certificate whose subject common name equals it.
    """

    name: str
    token: str = field(repr=False)
    merchant_ids: frozenset[str]
    certificate_cn: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.token:
            raise ValueError("a client needs a non-empty name and token")
        object.__setattr__(self, "merchant_ids", frozenset(self.merchant_ids))


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """Per-connection and per-listener limits; defaults suit a web tier with connection pools.

    Timeouts are in seconds and 0 disables them; together they keep a connection slot
    from being held by someone who sends nothing useful:

    * ``hello_timeout`` bounds how long a connection may stay unauthenticated;
    * ``line_timeout`` bounds how long a request line may take from its first byte to
      its newline (a client sending one byte a second);
    * ``idle_timeout`` bounds how long an authenticated connection may go without a
      line (``ping`` or a blank line keep it open) while no request is in flight.
    """

    max_line_bytes: int = 64 * 1024
    max_in_flight: int = 256
    max_connections: int = 1024
    hello_timeout: float = 30.0
    max_failed_hellos: int = 3
    line_timeout: float = 30.0
    idle_timeout: float = 300.0

    def __post_init__(self) -> None:
        for name in ("max_line_bytes", "max_in_flight", "max_connections", "max_failed_hellos"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("hello_timeout", "line_timeout", "idle_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


_NO_SUCH_CLIENT = hashlib.sha256(b"kswitch: no such client").digest()


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """Clients and merchants keyed by name and id; consistency is checked once, at construction."""

    clients: Mapping[str, ClientConfig]
    merchants: Mapping[str, MerchantConfig]
    limits: ApiLimits = ApiLimits()

    def __post_init__(self) -> None:
        problems = [f"client key {k!r} holds client {c.name!r}" for k, c in self.clients.items() if k != c.name]
        problems += [f"merchant key {k!r} holds merchant {m.id!r}" for k, m in self.merchants.items() if k != m.id]
        for client in self.clients.values():
            problems += [
                f"client {client.name!r} is allowed unknown merchant {merchant_id!r}"
                for merchant_id in sorted(client.merchant_ids - self.merchants.keys())
            ]
        if problems:
            raise ValueError("inconsistent API configuration: " + "; ".join(problems))

    @classmethod
    def build(
        cls,
        clients: Iterable[ClientConfig],
        merchants: Iterable[MerchantConfig],
        limits: ApiLimits = ApiLimits(),
    ) -> ApiConfig:
        """Key lists of clients and merchants, refusing duplicates."""
        return cls(_unique(clients, "client", "name"), _unique(merchants, "merchant", "id"), limits)

    def authenticate(self, name: str, token: str) -> ClientConfig | None:
        """The client whose name and token match, comparing in constant time.

        Both sides are hashed first so neither the token's length nor whether the
        client name exists shows in the timing.
        """
        client = self.clients.get(name)
        expected = hashlib.sha256(client.token.encode()).digest() if client else _NO_SUCH_CLIENT
        offered = hashlib.sha256(token.encode()).digest()
        if hmac.compare_digest(expected, offered) and client is not None:
            return client
        return None


def _unique(items: Iterable, kind: str, key: str) -> dict:
    keyed: dict = {}
    for item in items:
        name = getattr(item, key)
        if name in keyed:
            raise ValueError(f"{kind} {name!r} is configured twice")
        keyed[name] = item
    return keyed
