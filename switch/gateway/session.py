"""Per-connection authentication state, shared by the protocol and the op handlers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IAddress


@dataclass
class Session:
    """Who is on the other end of one connection.

    ``certificate_cn`` is a callable because a TLS client certificate is only
    known once the handshake has finished, after the connection was made.
    """

    peer: str
    certificate_cn: Callable[[], str | None]
    client_name: str | None = None
    failed_hellos: int = 0
    close_requested: bool = False

    def hello_failed(self, max_failed_hellos: int) -> None:
        """Count a failed hello; past the limit the connection is closed to slow down guessing."""
        self.failed_hellos += 1
        if self.failed_hellos >= max_failed_hellos:
            self.close_requested = True


def describe_address(address: IAddress | None) -> str:
    """``host:port``, ``[v6]:port`` or ``unix`` for logs; never raises on an unknown address type."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return "unix" if address is not None else "unknown"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
