"""What tests read of a connection's socket on the switch's side."""

from __future__ import annotations

import socket
from typing import Any


def nagle_off(transport: Any) -> bool:
    """TCP_NODELAY of the socket under ``transport`` (a TLS transport's is the TCP transport it wraps)."""
    while not isinstance(transport.getHandle(), socket.socket):
        transport = transport.transport
    return transport.getHandle().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
